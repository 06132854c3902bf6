"""Typed ActivityStreams values. Raw JSON from the network stops here.

`parse_activity` takes a normalised document (federation/jsonld.py) and returns an `Activity`
whose fields are plain strings and lists; an embedded object stays a dict only until
`parse_object` turns it into a `Post` or `ActorDoc`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from federation.multikey import MultikeyError, ed25519_pem

MAX_ID_LENGTH = 2048
# The most addresses (to, cc, bto, bcc, audience) an activity may carry, with those of the
# objects it embeds: far above what a post of any peer names (the public collection, a
# followers collection, a group, the people it mentions), far below what could hold the
# inbox worker. Refused beyond it, at the inbox and when processing. docs/POLICY.md.
MAX_RECIPIENTS = 500
ADDRESS_FIELDS = ("to", "cc", "bto", "bcc", "audience")


class VocabError(Exception):
    """The document lacks what an activity or object needs; answered with 400."""


# Controls, spaces and surrogates (RFC 3987 allows none of them unescaped).
_NOT_IN_IRIS = re.compile("[\x00-\x20\x7f-\x9f\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _iri(value: Any, what: str, required: bool = True) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise VocabError(f"{what} must be an IRI")
    if _NOT_IN_IRIS.search(value):
        raise VocabError(f"{what} holds a character no IRI may hold")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise VocabError(f"{what} is not a valid IRI") from None
    if parts.scheme not in ("https", "http") or not parts.netloc or len(value) > MAX_ID_LENGTH:
        raise VocabError(f"{what} must be an http(s) IRI")
    if "@" in parts.netloc:
        # http://a@b/x is b's, not a@b's; and a fetch of it would send "a" as credentials.
        raise VocabError(f"{what} must not carry user information")
    return value


def iri_list(value: Any) -> list[str]:
    """Addresses as a list of strings, whatever shape they came in."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    result = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("id")
        if isinstance(item, str) and item:
            result.append(item)
    return result


def _check_recipients(document: dict[str, Any]) -> None:
    """Refuse a document addressed to more than MAX_RECIPIENTS, counting the objects it
    embeds (an Announce of a Create of a Note), before any address is looked at."""
    count, node, depth = 0, document, 0
    while isinstance(node, dict) and depth < 3:
        for name in ADDRESS_FIELDS:
            value = node.get(name)
            count += len(value) if isinstance(value, list) else value is not None
        node, depth = node.get("object"), depth + 1
    if count > MAX_RECIPIENTS:
        raise VocabError(f"addressed to {count} recipients; at most {MAX_RECIPIENTS} are taken")


def origin(iri: str) -> str:
    try:
        parts = urlsplit(iri)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc.lower()}"


def same_origin(first: str, second: str) -> bool:
    mine = origin(first)
    return bool(mine) and mine == origin(second)


def _text(value: Any, limit: int) -> str:
    if isinstance(value, dict):  # a language map: take any one value
        value = next((v for v in value.values() if isinstance(v, str)), "")
    if not isinstance(value, str):
        return ""
    # PostgreSQL cannot store NUL in text; no encoder accepts a lone surrogate.
    return _SURROGATES.sub("\ufffd", value[:limit].replace("\x00", ""))


def _first_type(value: Any) -> str:
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, str)), None)
    if not isinstance(value, str) or not value:
        raise VocabError("type must be a string")
    return value


@dataclass(frozen=True)
class Activity:
    id: str
    type: str
    actor: str
    object: Any
    object_id: str | None
    target: str | None
    to: list[str]
    cc: list[str]
    audience: list[str]
    raw: dict[str, Any] = field(repr=False)

    @property
    def embedded_object(self) -> dict[str, Any] | None:
        return self.object if isinstance(self.object, dict) else None


def parse_activity(document: Any) -> Activity:
    if not isinstance(document, dict):
        raise VocabError("an activity must be a JSON object")
    _check_recipients(document)
    activity_id = _iri(document.get("id"), "id")
    activity_type = _first_type(document.get("type"))
    actor = _iri(document.get("actor"), "actor")
    assert activity_id is not None and actor is not None
    value = document.get("object")
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    object_id = None
    if isinstance(value, str | dict):
        object_id = _iri(value, "object", required=False)
    return Activity(
        id=activity_id,
        type=activity_type,
        actor=actor,
        object=value,
        object_id=object_id,
        target=_iri(document.get("target"), "target", required=False),
        to=iri_list(document.get("to")),
        cc=iri_list(document.get("cc")),
        audience=iri_list(document.get("audience")),
        raw=document,
    )


@dataclass(frozen=True)
class PollDoc:
    """A `Question`'s poll (Mastodon, PieFed): its choices with their counts, in order."""

    choices: tuple[tuple[str, int], ...]
    multiple: bool  # `anyOf` rather than `oneOf`
    end_time: datetime
    voters: int


@dataclass(frozen=True)
class PostDoc:
    """A Page (thread) or Note (reply) as another server describes it."""

    id: str
    type: str
    attributed_to: str
    name: str
    content_html: str
    source_markdown: str | None
    summary: str
    sensitive: bool
    in_reply_to: str | None
    audience: list[str]
    context: str | None
    to: list[str]
    cc: list[str]
    # What a link post (Lemmy, Mbin, PieFed) points at: its first Link, Image or Document.
    link: str | None = None
    # An expert Q&A's window (our Pages carry it; docs/FEDERATION.md), when both are valid.
    start_time: datetime | None = None
    end_time: datetime | None = None
    # A `Question`'s poll.
    poll: PollDoc | None = None
    # The actors its `Mention` tags name (Mastodon's shape: `{"type": "Mention", "href"}`).
    mentions: tuple[str, ...] = ()


POST_TYPES = ("Page", "Note", "Article", "Question")
LINKED_TYPES = ("Link", "Image", "Document", "Video", "Audio")


def _author(value: Any) -> str | None:
    """attributedTo is one actor, or (PeerTube) a list naming the person and the channel:
    the first Person in the list, else its first entry."""
    if isinstance(value, list):
        people = [item for item in value if isinstance(item, dict) and item.get("type") == "Person"]
        value = people[0] if people else (value[0] if value else None)
    return _iri(value, "attributedTo")


def _reply_target(value: Any) -> Any:
    """inReplyTo as an IRI, an object, a Link (its href) or a one-entry list of those."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and value.get("type") == "Link" and "id" not in value:
        return value.get("href")
    return value


def _first_link(value: Any) -> str | None:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and item.get("type") in LINKED_TYPES:
            target = item.get("href") or item.get("url")
            if isinstance(target, dict | list):
                target = None
            try:
                link = _iri(target, "attachment", required=False)
            except VocabError:
                continue
            if link:
                return link
    return None


def parse_post(document: Any) -> PostDoc:
    if not isinstance(document, dict):
        raise VocabError("the object must be a JSON object")
    _check_recipients(document)
    object_type = _first_type(document.get("type"))
    if object_type not in POST_TYPES:
        raise VocabError(f"unsupported object type {object_type}")
    object_id = _iri(document.get("id"), "object id")
    author = _author(document.get("attributedTo"))
    assert object_id is not None and author is not None
    source = document.get("source")
    markdown = None
    if isinstance(source, dict) and source.get("mediaType") == "text/markdown":
        markdown = _text(source.get("content"), 100_000)
    return PostDoc(
        id=object_id,
        type=object_type,
        attributed_to=author,
        # Pleroma and Akkoma tag text with a language, which compaction turns into maps.
        name=_text(document.get("name") or document.get("nameMap"), 1000),
        content_html=_text(document.get("content") or document.get("contentMap"), 200_000),
        source_markdown=markdown,
        summary=_text(document.get("summary") or document.get("summaryMap"), 1000),
        sensitive=document.get("sensitive") is True,
        in_reply_to=_iri(_reply_target(document.get("inReplyTo")), "inReplyTo", required=False),
        audience=iri_list(document.get("audience")),
        context=_iri(document.get("context"), "context", required=False)
        if isinstance(document.get("context"), str | dict)
        else None,
        to=iri_list(document.get("to")),
        cc=iri_list(document.get("cc")),
        link=_first_link(document.get("attachment")),
        **_window(document.get("startTime"), document.get("endTime")),
        poll=_poll(document) if object_type == "Question" else None,
        mentions=_mentions(document.get("tag")),
    )


MAX_MENTIONS = 50


def _mentions(value: Any) -> tuple[str, ...]:
    """The hrefs of `Mention` tags (at most MAX_MENTIONS); anything else in `tag` is ignored."""
    found: dict[str, None] = {}
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and _first_type(item.get("type")) == "Mention":
            try:
                href = _iri(item.get("href"), "Mention href", required=False)
            except VocabError:
                continue
            if href:
                found[href] = None
    return tuple(found)[:MAX_MENTIONS]


MAX_CHOICES = 20


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, min(value, 10**9))


def _poll(document: dict[str, Any]) -> PollDoc | None:
    """The poll of a Question: `oneOf` (single choice) or `anyOf` (multiple) Notes with a
    `name` and `replies.totalItems`, `endTime` (or `closed`) and `votersCount`. A Question
    without choices or an end is taken as a post without a poll."""
    multiple = isinstance(document.get("anyOf"), list) and bool(document.get("anyOf"))
    raw = document.get("anyOf") if multiple else document.get("oneOf")
    if not isinstance(raw, list):
        return None
    choices: list[tuple[str, int]] = []
    for item in raw[:MAX_CHOICES]:
        if not isinstance(item, dict):
            continue
        name = _text(item.get("name") or item.get("nameMap"), 200).strip()
        replies = item.get("replies")
        count = _count(replies.get("totalItems")) if isinstance(replies, dict) else 0
        if name:
            choices.append((name, count))
    end = _moment(document.get("endTime")) or _moment(document.get("closed"))
    if len(choices) < 2 or end is None:
        return None
    voters = document.get("votersCount")
    total = _count(voters) if voters is not None else sum(count for _, count in choices)
    return PollDoc(tuple(choices), multiple, end, total)


def _moment(value: Any) -> datetime | None:
    """An xsd:dateTime with a zone, or None for anything else (an absent or odd value only
    means the post is not shown as a Q&A, or carries no poll)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _window(start: Any, end: Any) -> dict[str, datetime]:
    starts, ends = _moment(start), _moment(end)
    if starts is None or ends is None or ends <= starts:
        return {}
    return {"start_time": starts.astimezone(UTC), "end_time": ends.astimezone(UTC)}


@dataclass(frozen=True)
class AssertionKey:
    """An FEP-521a key: a Multikey in the actor's assertionMethod, controlled by the actor."""

    key_id: str
    public_key_pem: str  # SPKI PEM (Ed25519), as the remote key cache stores every key
    expires: datetime | None = None


@dataclass(frozen=True)
class ClaimedVerification:
    """What an actor's `verifiedProfessional` term says (our extension, docs/FEDERATION.md).
    Only what it says: node/professionals.py decides whether and how it is shown."""

    title: str
    verifier: str
    verified_at: datetime | None
    expires_at: datetime | None


def _verification(value: Any) -> ClaimedVerification | None:
    """The `verifiedProfessional` term, or None when it is absent or unreadable (a broken
    claim is no claim; the actor stays usable). An attachment PropertyValue alone, which
    anyone can write, is never read as a verification."""
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict)), None)
    if not isinstance(value, dict):
        return None
    title = _text(value.get("title"), 200).strip()
    verifier = value.get("verifier")
    if not title or not isinstance(verifier, str) or not verifier.strip():
        return None
    return ClaimedVerification(
        title=title,
        verifier=verifier.strip()[:253],
        verified_at=_moment_or_none(value.get("verifiedAt")),
        expires_at=_moment_or_none(value.get("endTime")),
    )


def _moment_or_none(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True)
class ActorDoc:
    id: str
    type: str
    preferred_username: str
    name: str
    summary: str
    inbox: str
    shared_inbox: str | None
    outbox: str | None
    followers: str | None
    url: str | None
    key_id: str
    public_key_pem: str
    assertion_keys: tuple[AssertionKey, ...] = ()
    # A Group's Lemmy `postingRestrictedToMods`: only its moderators start threads.
    posting_restricted_to_mods: bool = False
    # A Person's `verifiedProfessional` claim (ours), as it is written.
    verification: ClaimedVerification | None = None
    # `discoverable: false` (toot:discoverable): for a Group, a followers-only group (a
    # healthnode partner group), whose copy here only its followers here may see.
    discoverable: bool = True

    def published_keys(self, usable_until: datetime) -> dict[str, str]:
        """Key id -> PEM of every key the actor publishes for signatures: `publicKey`, and the
        FEP-521a keys that will not have expired by `usable_until` (a key is cached and used
        without a refetch until then)."""
        keys = {self.key_id: self.public_key_pem}
        for key in self.assertion_keys:
            if key.expires is None or key.expires > usable_until:
                keys.setdefault(key.key_id, key.public_key_pem)
        return keys


ACTOR_TYPES = ("Person", "Group", "Application", "Service", "Organization")


def parse_actor(document: Any) -> ActorDoc:
    if not isinstance(document, dict):
        raise VocabError("an actor must be a JSON object")
    actor_type = _first_type(document.get("type"))
    if actor_type not in ACTOR_TYPES:
        raise VocabError(f"{actor_type} is not an actor type")
    actor_id = _iri(document.get("id"), "actor id")
    inbox = _iri(document.get("inbox"), "inbox")
    assert actor_id is not None and inbox is not None
    key = document.get("publicKey")
    if isinstance(key, list):
        key = next((item for item in key if isinstance(item, dict)), None)
    if not isinstance(key, dict):
        raise VocabError("the actor has no publicKey")
    key_id = _iri(key.get("id"), "publicKey.id")
    pem = key.get("publicKeyPem")
    owner = _iri(key.get("owner"), "publicKey.owner", required=False)
    if not isinstance(pem, str) or "PUBLIC KEY" not in pem or len(pem) > 10_000:
        raise VocabError("the actor's publicKeyPem is not a PEM public key")
    if owner is not None and owner != actor_id:
        raise VocabError("the actor's key belongs to someone else")
    assert key_id is not None
    if not same_origin(key_id, actor_id) or not same_origin(inbox, actor_id):
        raise VocabError("the actor's key and inbox must be on the actor's own server")
    endpoints = document.get("endpoints")
    shared = endpoints.get("sharedInbox") if isinstance(endpoints, dict) else None
    shared_inbox = _iri(shared, "sharedInbox", required=False) if shared else None
    if shared_inbox is not None and not same_origin(shared_inbox, actor_id):
        # What is delivered there is signed by our groups: only the actor's own server may
        # receive it. The actor stays usable, reached at its own inbox.
        shared_inbox = None
    username = (
        _text(document.get("preferredUsername"), 100)
        or urlsplit(actor_id).path.rsplit("/", 1)[-1][:100]
    )
    return ActorDoc(
        id=actor_id,
        type=actor_type,
        preferred_username=username,
        name=_text(document.get("name"), 200) or username,
        summary=_text(document.get("summary"), 5000),
        inbox=inbox,
        shared_inbox=shared_inbox,
        outbox=_iri(document.get("outbox"), "outbox", required=False),
        followers=_iri(document.get("followers"), "followers", required=False),
        url=_iri(document.get("url"), "url", required=False)
        if isinstance(document.get("url"), str)
        else None,
        key_id=key_id,
        public_key_pem=pem,
        assertion_keys=_assertion_keys(document.get("assertionMethod"), actor_id),
        posting_restricted_to_mods=document.get("postingRestrictedToMods") is True,
        verification=_verification(document.get("verifiedProfessional")),
        discoverable=document.get("discoverable") is not False,
    )


MAX_ASSERTION_KEYS = 8  # keys read from one actor; at most 4 times as many entries looked at


def _assertion_keys(value: Any, actor_id: str) -> tuple[AssertionKey, ...]:
    """FEP-521a: the Ed25519 Multikeys in assertionMethod whose controller is the actor and
    whose id is on the actor's origin. Anything else there (keys given by reference, other key
    types, revoked keys, someone else's keys) is skipped, as the FEP asks of invalid items;
    the actor stays usable through its publicKey."""
    items = value if isinstance(value, list) else [value] if value is not None else []
    keys: list[AssertionKey] = []
    for item in items[: 4 * MAX_ASSERTION_KEYS]:
        if len(keys) == MAX_ASSERTION_KEYS:
            break
        if not isinstance(item, dict):
            continue
        types = item.get("type")
        if "Multikey" not in (types if isinstance(types, list) else [types]):
            continue
        if "revoked" in item:
            continue
        try:
            key_id = _iri(item.get("id"), "assertionMethod id")
            controller = _iri(item.get("controller"), "assertionMethod controller")
            pem = ed25519_pem(item.get("publicKeyMultibase"))
            expires = _expiry(item.get("expiration", item.get("expires")))
        except (VocabError, MultikeyError):
            continue
        assert key_id is not None
        if controller != actor_id or not same_origin(key_id, actor_id):
            continue
        keys.append(AssertionKey(key_id, pem, expires))
    return tuple(keys)


def _expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise VocabError("a key's expiry must be a date-time with a time zone")
    return moment
