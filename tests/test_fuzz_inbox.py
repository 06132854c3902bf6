"""Property-based fuzzing (hypothesis) of the AS2 parser and of the inbox over real HTTP.

The first half calls the parsing functions directly (federation/jsonld.py `normalise`,
federation/vocab.py `parse_activity`, `parse_post`, `parse_actor`) with random JSON and with
mutations of valid activities: wrong types in every field, @context tricks, odd IRIs, unicode
oddities, huge strings, deep nesting. Only the documented refusals (InvalidDocument, VocabError)
may escape, and what is accepted must be typed, bounded, and mean what JSON-LD says it means.
(federation/convert.py only writes documents; what reads remote ones is vocab.py and actors.py,
so the remote actor documents are fuzzed over HTTP below.)

The second half posts to a real node ("hospital", real SQLite file, real loopback HTTP). The
bodies are signed by mallory's published key, by hand (tests/peers.py), so a fuzzed body passes
authentication and reaches parsing and processing; unsigned and badly signed variants are sent
too. Invariants: no 5xx, only documented statuses; a 4xx keeps nothing; whatever is kept is
mallory's and of a handled type; each kept item ends done or failed (or visibly scheduled for a
retry, then failed once its three days are over); the group page is still served; and no
ERROR-level log record (an unhandled exception) was written.

pytest-aiohttp runs the node on the test's event loop, so hypothesis runs in a worker thread
(`drive`) and hands each example to that loop; it still shrinks a failure to a minimal body.
The crashes this fuzzing found (lone surrogates, nesting deeper than about 900, one unstorable
activity failing a whole group-commit batch) have tests of their own at the end.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyld import jsonld
from sqlalchemy import func, or_, select

from federation.jsonld import InvalidDocument, load_document, normalise
from federation.vocab import VocabError, parse_activity, parse_actor, parse_post
from node.storage.models import InboxItem, Membership, Post, Reaction, Thread
from tests.federation_harness import eventually, free_port
from tests.peers import (
    AS2,
    AS2_JSON,
    PUBLIC,
    SECURITY_V1,
    FakeRemote,
    Hospital,
    cavage_headers,
    count,
    encode,
    join,
    post,
    processed,
)

T = TypeVar("T")
Document = dict[str, Any]

# docs/FEDERATION.md, "Activities we accept": only these types are stored.
HANDLED_TYPES = frozenset(
    {"Follow", "Undo", "Accept", "Reject", "Create", "Update", "Delete", "Like", "Announce",
     "Block"}
)  # fmt: skip
# docs/FEDERATION.md, the status table of "HTTP signatures".
DOCUMENTED_STATUSES = frozenset({202, 400, 401, 403, 404, 413})
# docs/FEDERATION.md, "Security limits": received ids and texts are bounded.
MAX_ID_LENGTH = 2048
LIMITS = {"name": 1000, "content_html": 200_000, "summary": 1000}
# Processing retries an item for three days (docs/FEDERATION.md, "Activities we accept").
PAST_THE_RETRY_WINDOW = timedelta(days=3, hours=1)

SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}

# pyld warns (SyntaxWarning) about the reserved "@..." terms the fuzzer feeds it on purpose, and
# hypothesis about the size of the strategies' repr (they hold 3000-character IRIs).
pytestmark = [
    pytest.mark.filterwarnings("ignore::SyntaxWarning"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

# A fixed remote origin for the tests that need no server.
ORIGIN = "https://remote.example"
MALLORY = ORIGIN + "/users/mallory"
GROUP = "https://hospital.example/g/t1d"
KNOWN_POST = MALLORY + "/notes/seed-page"


# ---------------------------------------------------------------- building blocks


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    """`depth` levels of lists or objects, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


UNICODE_ODDITIES = [
    "\x00",  # NUL: PostgreSQL cannot store it in text
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\ufeff",  # byte order mark
    "\uffff",  # a noncharacter
    "\U0010ffff",  # the last code point
    "e\u0301",  # a combining accent
    "\U0001f600",
    "\r\n\t",
    '"\\',
    "</script><p onclick=x>",
    "&amp;&#0;&#x110000;",
]
LONE_SURROGATES = ["\ud800", "\udfff", "x\udc00y"]


def odd_text(surrogates: bool) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(UNICODE_ODDITIES + (LONE_SURROGATES if surrogates else []))
    return st.one_of(
        st.text(max_size=30),
        st.lists(pieces | st.text(max_size=5), min_size=1, max_size=5).map("".join),
    )


# Huge, but bounded: the 1 MiB body cap has its own tests; 210 000 is over the content limit.
huge_strings = st.builds(
    lambda unit, length: unit * length,
    st.sampled_from(["x", "é", "\u202e", "<p>"]),
    st.sampled_from([5_000, 70_000, 210_000]),
)


def odd_iris(origin: str) -> st.SearchStrategy[str]:
    """IRIs with odd schemes and shapes, some on the sender's own origin."""
    host = urlsplit(origin).netloc
    return st.sampled_from(
        [
            "javascript:alert(1)",
            "data:text/plain,hello",
            f"mailto:mallory@{host}",
            "urn:uuid:7f6c1c56-4a5e-4f71-9f1a-2b1c3d4e5f60",
            "file:///etc/passwd",
            f"ftp://{host}/x",
            f"ws://{host}/x",
            f"HTTP://{host.upper()}/X",
            f"http:/{host}/x",
            f"//{host}/x",
            f"http://user:secret@{host}/x",
            "http://[::1]/x",
            "http://[::1/x",
            f"{origin}:99999/x",
            "http://127.0.0.1:0/x",
            "https://",
            "http://",
            "http:",
            "http://xn--n3h.invalid/x",
            "http://ünïcode.invalid/x",
            f"{origin}/\u202eevil",
            f"{origin}/a b",
            f"{origin}/" + "x" * 3000,
            f"{origin}/../../etc/passwd",
            f"{origin}/#fragment",
            f"{origin}?q=1",
            "_:b0",
            "as:Public",
            "Public",
            PUBLIC,
            "",
            " ",
            origin,
        ]
    )


TYPES = st.sampled_from(
    [*sorted(HANDLED_TYPES), "Note", "Page", "Article", "Question", "Tombstone", "Person",
     "Group", "Add", "Remove", "Flag", "Dislike", "EmojiReact", "Move", "as:Create",
     AS2 + "#Create", "create", ""]
)  # fmt: skip
KEY_POOL = [
    "@context", "@id", "@type", "@graph", "@value", "@list", "id", "type", "actor", "object",
    "target", "to", "cc", "bto", "bcc", "audience", "attributedTo", "inReplyTo", "content",
    "contentMap", "name", "nameMap", "summary", "source", "mediaType", "sensitive", "context",
    "published", "tag", "url", "signature", "proof", "instrument", "origin", "result",
]  # fmt: skip

# What an inline @context may redefine a term to.
TRICK_DEFINITIONS: list[Any] = [
    "@id", "@type", "as:actor", "as:object", "as:Delete", "as:Follow", "as:Create",
    "as:attributedTo", {"@id": "as:object", "@type": "@id"}, {"@id": "as:actor", "@type": "@id"},
    {"@reverse": "as:actor"}, {"@type": "@id"}, {"@id": "@type"}, None, {"@id": None},
    "http://evil.invalid/ns#x", {"@id": "as:actor", "@container": "@list"},
    {"@id": "as:content", "@type": "@json"}, {"@id": "as:content", "@container": "@language"},
]  # fmt: skip
TRICK_TERMS = st.sampled_from(
    ["id", "type", "actor", "object", "to", "content", "attributedTo", "Follow", "Create",
     "Delete", "Note", "ident", "kind", "who", "as:actor", AS2 + "#actor", "@id", "@type"]
)  # fmt: skip
CONTEXT_URLS = [
    AS2, AS2 + "#", "http://www.w3.org/ns/activitystreams", AS2 + "/", SECURITY_V1,
    "https://w3id.org/security/data-integrity/v1", "http://joinmastodon.org/ns",
    "https://join-lemmy.org/context.json", "https://pleroma.invalid/schemas/litepub-0.1.jsonld",
    "https://mbin.invalid/contexts", "https://unknown.invalid/context.jsonld",
    "data:application/ld+json,{}", "file:///etc/passwd", "", "#", "relative/context",
]  # fmt: skip
KEYWORD_ENTRIES: list[Any] = [
    {"@vocab": "http://evil.invalid/"}, {"@vocab": "_:"}, {"@base": "http://evil.invalid/"},
    {"@language": "ar"}, {"@direction": "rtl"}, {"@version": 1.1}, {"@version": 2},
    {"@protected": True}, {"@propagate": False}, {"@import": AS2},
    {"@import": "https://unknown.invalid/x"},
]  # fmt: skip


def fresh(choices: list[Any]) -> st.SearchStrategy[Any]:
    """One of `choices`, copied: the mutations edit what they draw, and must never edit the
    strategy's own constants (hypothesis would see its data generation change)."""
    return st.sampled_from(choices).map(copy.deepcopy)


term_maps = st.dictionaries(TRICK_TERMS, fresh(TRICK_DEFINITIONS), min_size=1, max_size=3)
contexts: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(CONTEXT_URLS),
    st.lists(
        st.sampled_from(CONTEXT_URLS)
        | fresh(KEYWORD_ENTRIES)
        | term_maps
        | st.none()
        | st.integers(),
        max_size=4,
    ),
    term_maps.map(lambda terms: [AS2, terms]),
    fresh([None, 0, [], {}, [[AS2]], {"@context": AS2}]),
)


def wrong_values(origin: str, surrogates: bool) -> st.SearchStrategy[Any]:
    """A value of any shape for any field: what a careless or hostile peer might put there."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        odd_text(surrogates),
        odd_iris(origin),
        TYPES,
    )
    shapes = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(KEY_POOL) | odd_text(surrogates), inner, max_size=4),
        ),
        max_leaves=10,
    )
    # Nesting stays under the depth (about 900) at which the known RecursionError starts.
    deep = st.builds(nested, st.integers(50, 600), scalars, st.sampled_from(["list", "dict"]))
    return st.one_of(shapes, huge_strings, deep, contexts)


def bare(document: Document) -> Document:
    """An activity as embedded in another: without its own @context."""
    return {key: value for key, value in document.items() if key != "@context"}


def page_create(activities: list[Document]) -> Document:
    return copy.deepcopy(
        next(a for a in activities if a["type"] == "Create" and a["object"]["type"] == "Page")
    )


def valid_activities(actor: str, group: str, known_post: str) -> list[Document]:
    """One valid example of each activity a member sends into a group; "fuzz" ids are made
    unique before sending (`freshen`)."""
    note: Document = {
        "id": f"{actor}/notes/fuzz",
        "type": "Note",
        "attributedTo": actor,
        "content": "<p>Pacing helps.</p>",
        "mediaType": "text/html",
        "source": {"content": "Pacing helps.", "mediaType": "text/markdown"},
        "inReplyTo": known_post,
        "context": known_post,
        "to": [PUBLIC],
        "cc": [group, actor],
        "audience": group,
    }
    page: Document = {
        **note,
        "type": "Page",
        "name": "A fuzzed thread",
        "to": [group, PUBLIC],
        "cc": [],
    }
    del page["inReplyTo"], page["context"]
    envelope: Document = {
        "@context": [AS2, SECURITY_V1],
        "id": f"{actor}/activities/fuzz",
        "actor": actor,
        "to": [PUBLIC],
        "cc": [group],
        "audience": group,
    }
    follow: Document = {"@context": AS2, "id": f"{actor}/activities/fuzz", "type": "Follow",
                        "actor": actor, "object": group}  # fmt: skip
    like: Document = {**envelope, "type": "Like", "object": known_post, "to": [group]}
    return [
        follow,
        {**envelope, "type": "Create", "object": note},
        {**envelope, "type": "Create", "object": page},
        like,
        {**envelope, "type": "Announce", "object": known_post},
        {**envelope, "type": "Undo", "object": bare(like)},
        {**envelope, "type": "Undo", "object": bare(follow)},
        {**envelope, "type": "Delete", "object": {"id": known_post, "type": "Tombstone"}},
        {**envelope, "type": "Update", "object": {**page, "id": known_post, "content": "<p>x</p>"}},
    ]


def dict_nodes(value: Any, depth: int = 0) -> Iterator[Document]:
    """The activity and the objects embedded in it, a few levels down."""
    if isinstance(value, dict):
        yield value
        if depth < 3:
            for item in value.values():
                yield from dict_nodes(item, depth + 1)
    elif isinstance(value, list) and depth < 3:
        for item in value:
            yield from dict_nodes(item, depth + 1)


KEYS = st.sampled_from(KEY_POOL)
MUTATIONS = ["replace", "replace", "delete", "wrap", "as_object", "context", "swap"]


@st.composite
def mutated(draw: st.DrawFn, bases: list[Document], values: st.SearchStrategy[Any]) -> Document:
    """A valid document with one to four fields broken: replaced by a value of another type,
    deleted, wrapped in a list, turned into an object, moved to another key, or its @context
    swapped for a trick."""
    document = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        holder = draw(st.sampled_from(list(dict_nodes(document))))
        present = sorted(holder)
        key = draw(st.sampled_from(present) | KEYS if present else KEYS)
        mutation = draw(st.sampled_from(MUTATIONS))
        if mutation == "replace":
            holder[key] = draw(values)
        elif mutation == "delete":
            holder.pop(key, None)
        elif mutation == "wrap":
            holder[key] = [holder.get(key), *draw(st.lists(values, max_size=2))]
        elif mutation == "as_object":
            holder[key] = {"id": holder.get(key), "type": draw(TYPES)}
        elif mutation == "context":
            holder["@context"] = draw(contexts)
        else:  # the same value under another key: actor as object, id as actor...
            holder[draw(st.sampled_from(KEY_POOL))] = holder.get(key)
    return document


# ---------------------------------------------------------------- part 1: the parser itself


def iri_ok(value: Any) -> bool:
    """An http(s) IRI with a host, no longer than the documented limit (checked independently)."""
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def origin_of(iri: str) -> tuple[str, str]:
    parts = urlsplit(iri)
    return parts.scheme, parts.netloc.lower()


random_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | odd_text(surrogates=True)
    | st.sampled_from([AS2, MALLORY, GROUP, "Follow", "Create", "_:b0"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(TRICK_TERMS | st.sampled_from(KEY_POOL) | st.text(max_size=4), inner,
                      max_size=5),
    max_leaves=25,
)  # fmt: skip
activity_mutations = mutated(
    valid_activities(MALLORY, GROUP, KNOWN_POST), wrong_values(ORIGIN, surrogates=True)
)


@settings(max_examples=250, **SETTINGS)
@given(st.one_of(random_json, contexts.map(lambda c: {"@context": c}), activity_mutations))
def test_normalise_refuses_with_invalid_document_or_gives_its_own_fixpoint(document: Any) -> None:
    # Given any JSON value (random, a bare trick @context, or a broken activity)
    # When it is normalised
    try:
        result = normalise(document)
    except InvalidDocument:
        return  # the documented refusal (answered 400 at the inbox)
    # Then the result is an object already in our canonical shape: normalising it again
    # changes nothing (the stored body is read again by processing, and must read the same)
    assert isinstance(result, dict)
    assert normalise(result) == result


@settings(max_examples=300, **SETTINGS)
@given(activity_mutations)
def test_a_broken_activity_is_refused_with_a_documented_error_or_read_typed(
    document: Document,
) -> None:
    # Given a valid activity with some fields broken
    # When it is read as the inbox reads it
    try:
        activity = parse_activity(normalise(document))
    except (InvalidDocument, VocabError):
        return  # the documented refusals, answered 400
    # Then every field has the type and bounds the rest of federation/ relies on
    assert iri_ok(activity.id) and iri_ok(activity.actor), activity
    assert isinstance(activity.type, str) and activity.type
    assert activity.object_id is None or iri_ok(activity.object_id)
    assert activity.target is None or iri_ok(activity.target)
    for addresses in (activity.to, activity.cc, activity.audience):
        assert isinstance(addresses, list)
        assert all(isinstance(address, str) and address for address in addresses)
    embedded = activity.embedded_object
    if embedded is not None:
        # And an embedded object is either refused with VocabError or read as a post
        try:
            parse_post(embedded)
        except VocabError:
            pass


def expanded_ids(node: Document, prop: str) -> list[Any]:
    return [value.get("@id") for value in node.get(prop, []) if isinstance(value, dict)]


@settings(max_examples=300, **SETTINGS)
@given(
    term_maps.map(lambda terms: [AS2, terms])
    | st.lists(term_maps, min_size=1, max_size=2).map(lambda maps: [AS2, *maps]),
    st.dictionaries(
        TRICK_TERMS,
        fresh(
            [
                MALLORY,
                MALLORY + "/activities/2",
                ORIGIN + "/users/trent",
                "Follow",
                "Delete",
                ["Follow", "Delete"],
                {"id": MALLORY},
                [MALLORY, ORIGIN + "/users/trent"],
            ]
        ),
        max_size=4,
    ),
)
def test_what_is_read_is_what_json_ld_says_despite_context_tricks(
    context: list[Any], extra: Document
) -> None:
    # Given a Follow whose inline @context redefines or aliases terms, and extra keys using them
    document: Document = {
        "@context": context,
        "id": MALLORY + "/activities/1",
        "type": "Follow",
        "actor": MALLORY,
        "object": GROUP,
        **extra,
    }
    # When it is read as the inbox reads it
    try:
        activity = parse_activity(normalise(document))
    except (InvalidDocument, VocabError):
        return  # refusing is always allowed
    # Then, checked against pyld's own expansion (with the same offline contexts), the id,
    # the actor, a handled type and the object are what the JSON-LD document says they are.
    # The fast path reads documents "as received": this is what makes that safe.
    try:
        expanded = jsonld.expand(document, {"documentLoader": load_document})
    except jsonld.JsonLdError:
        return  # invalid JSON-LD accepted leniently by the fast path; read as plain JSON
    assert len(expanded) == 1, expanded
    node = expanded[0]
    assert node.get("@id") == activity.id, (node, activity)
    assert activity.actor in expanded_ids(node, AS2 + "#actor"), (node, activity)
    if activity.type in HANDLED_TYPES:
        assert AS2 + "#" + activity.type in node.get("@type", []), (node, activity)
    if activity.object_id is not None:
        assert activity.object_id in expanded_ids(node, AS2 + "#object"), (node, activity)


posts_to_break = [
    activity["object"]
    for activity in valid_activities(MALLORY, GROUP, KNOWN_POST)
    if activity["type"] == "Create"
]


@settings(max_examples=300, **SETTINGS)
@given(mutated(posts_to_break, wrong_values(ORIGIN, surrogates=False)))
def test_a_broken_post_is_refused_or_read_within_the_documented_limits(document: Document) -> None:
    # Given a Note or Page with some fields broken
    # When it is read as a post
    try:
        doc = parse_post(document)
    except VocabError:
        return
    # Then its ids are http(s) IRIs, its texts are strings within the documented limits and
    # without NUL (PostgreSQL refuses it), and `sensitive` is a real boolean
    assert iri_ok(doc.id) and iri_ok(doc.attributed_to)
    assert doc.in_reply_to is None or iri_ok(doc.in_reply_to)
    assert doc.context is None or iri_ok(doc.context)
    for name, limit in LIMITS.items():
        text = getattr(doc, name)
        assert isinstance(text, str) and len(text) <= limit, name
        assert "\x00" not in text, name
    assert doc.source_markdown is None or "\x00" not in doc.source_markdown
    assert isinstance(doc.sensitive, bool)
    assert doc.type in ("Page", "Note", "Article", "Question")


def actor_document(iri: str) -> Document:
    return {
        "@context": [AS2, SECURITY_V1],
        "id": iri,
        "type": "Person",
        "preferredUsername": "mallory",
        "name": "Mallory",
        "summary": "<p>Hello</p>",
        "inbox": iri + "/inbox",
        "outbox": iri + "/outbox",
        "followers": iri + "/followers",
        "url": iri,
        "endpoints": {"sharedInbox": iri.split("/users/", 1)[0] + "/inbox"},
        "publicKey": {
            "id": iri + "#main-key",
            "owner": iri,
            "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
        },
    }


@settings(max_examples=300, **SETTINGS)
@given(mutated([actor_document(MALLORY)], wrong_values(ORIGIN, surrogates=False)))
def test_a_broken_actor_is_refused_or_read_with_its_key_on_its_own_server(
    document: Document,
) -> None:
    # Given an actor document with some fields broken
    # When it is read as an actor (after normalising, as the key fetch does)
    try:
        actor = parse_actor(normalise(document))
    except (InvalidDocument, VocabError):
        return
    # Then its id, inbox and key id are http(s) IRIs, the key and the inbox are on the actor's
    # own origin (FEP-fe34), and the texts are strings without NUL
    assert iri_ok(actor.id) and iri_ok(actor.inbox) and iri_ok(actor.key_id)
    assert origin_of(actor.key_id) == origin_of(actor.id)
    assert origin_of(actor.inbox) == origin_of(actor.id)
    assert actor.shared_inbox is None or iri_ok(actor.shared_inbox)
    assert "PUBLIC KEY" in actor.public_key_pem
    for text in (actor.preferred_username, actor.name, actor.summary):
        assert isinstance(text, str) and "\x00" not in text
    assert actor.preferred_username, "an actor is always given a username"


# ---------------------------------------------------------------- part 2: the inbox over HTTP


def drive(
    examples: st.SearchStrategy[T], check: Callable[[T], Awaitable[None]], max_examples: int
) -> Awaitable[None]:
    """Run hypothesis in a worker thread, each example checked on the node's event loop.

    The node and the fake remote serve on this loop, so it must stay free while hypothesis
    (synchronous) generates, runs and shrinks examples."""
    loop = asyncio.get_running_loop()

    @settings(max_examples=max_examples, **SETTINGS)
    @given(examples)
    def run(example: T) -> None:
        asyncio.run_coroutine_threadsafe(check(example), loop).result(timeout=60)

    return asyncio.to_thread(run)


@dataclass(frozen=True)
class Kept:
    inbox_items: int
    posts: int
    threads: int
    memberships: int
    reactions: int


async def kept(hospital: Hospital) -> Kept:
    async def rows(model: Any) -> int:
        return await count(hospital, select(func.count()).select_from(model))

    return Kept(
        await rows(InboxItem), await rows(Post), await rows(Thread), await rows(Membership),
        await rows(Reaction),
    )  # fmt: skip


async def nothing_pending(hospital: Hospital) -> bool:
    """Every kept item is done or failed, or waits for a retry with its error recorded; none
    is due and untouched."""
    pending = (
        select(func.count())
        .select_from(InboxItem)
        .where(
            InboxItem.state == "queued",
            or_(InboxItem.attempts == 0, InboxItem.next_attempt_at <= hospital.now()),
        )
    )
    return await count(hospital, pending) == 0


async def kept_bodies(hospital: Hospital) -> list[tuple[str, Document]]:
    async with hospital.running.node.transaction() as session:
        rows = await session.execute(select(InboxItem.actor_iri, InboxItem.body))
        return [(actor, json.loads(body)) for actor, body in rows]


async def item_states(hospital: Hospital) -> set[str]:
    async with hospital.running.node.transaction() as session:
        return set((await session.execute(select(InboxItem.state).distinct())).scalars())


def first_type(value: Any) -> Any:
    if isinstance(value, list):
        return next((item for item in value if isinstance(item, str)), None)
    return value


def id_of(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


class Inbox:
    """Posts to the node and checks the invariants every answer must keep."""

    def __init__(self, hospital: Hospital, remote: FakeRemote) -> None:
        self.hospital = hospital
        self.remote = remote
        self.mallory = remote.actor("mallory")
        self.sent = 0
        base = hospital.base_url
        self.inboxes = [hospital.group_inbox, base + "/inbox", base + "/actor/inbox",
                        base + "/u/nurse/inbox"]  # fmt: skip

    def signed_by_mallory(self, url: str, body: bytes) -> dict[str, str]:
        return cavage_headers(
            url=url, body=body, key=self.remote.keys["mallory"],
            key_id=self.remote.key_id("mallory"), now=self.hospital.now(),
        )  # fmt: skip

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST and check: a documented status; a refusal keeps nothing; whatever is kept
        comes from the signer and is of a handled type, and is processed to a visible end."""
        before = await kept(self.hospital)
        answer = await post(url, body, headers)
        self.sent += 1
        assert answer.status < 500, answer
        assert answer.status in DOCUMENTED_STATUSES, answer
        if answer.status != 202:
            assert await kept(self.hospital) == before, f"{answer} but something was kept"
            return answer.status
        await eventually(lambda: nothing_pending(self.hospital), "the inbox to settle", 15)
        for actor, document in await kept_bodies(self.hospital):
            assert actor == self.mallory == id_of(document.get("actor")), document
            assert first_type(document.get("type")) in HANDLED_TYPES, document
        return answer.status

    async def send_signed(self, url: str, body: bytes) -> int:
        return await self.send(url, body, self.signed_by_mallory(url, body))

    async def finish(self, caplog: pytest.LogCaptureFixture) -> None:
        """Past the retry window every kept item has ended; the node still serves its pages;
        and nothing logged an unhandled exception."""
        self.hospital.running.node.clock.advance(PAST_THE_RETRY_WINDOW)
        self.hospital.running.federation.inbox_worker.wake()

        async def all_ended() -> bool:
            queued = select(func.count()).select_from(InboxItem)
            return await count(self.hospital, queued.where(InboxItem.state == "queued")) == 0

        await eventually(all_ended, "every kept item to end done or failed", 20)
        async with aiohttp.ClientSession() as session:
            for accept in ("text/html", AS2_JSON):
                headers = {"Accept": accept}
                async with session.get(self.hospital.group_iri, headers=headers) as response:
                    assert response.status == 200, (accept, response.status)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [(r.name, r.getMessage(), r.exc_text) for r in errors]


def freshen(value: Any, serial: str) -> Any:
    """The template ids ("…/fuzz") made unique, so no example is dropped as a redelivery."""
    if isinstance(value, dict):
        return {key: freshen(item, serial) for key, item in value.items()}
    if isinstance(value, list):
        return [freshen(item, serial) for item in value]
    if isinstance(value, str) and value.endswith("/fuzz"):
        return value + "-" + serial
    return value


@dataclass
class Stage:
    """mallory, a member of the group, with a thread of hers there to aim activities at."""

    inbox: Inbox
    page: str
    activities: list[Document]


async def stage(hospital: Hospital, remote: FakeRemote) -> Stage:
    await join(hospital, remote)
    inbox = Inbox(hospital, remote)
    mallory = inbox.mallory
    page = f"{mallory}/notes/seed-page"
    activities = valid_activities(mallory, hospital.group_iri, page)
    seed = page_create(activities)
    seed["id"], seed["object"]["id"] = f"{mallory}/activities/seed", page
    assert await inbox.send_signed(hospital.group_inbox, encode(seed)) == 202
    assert await processed(hospital, seed["id"]) == "done", "the seed thread was not created"
    # Every valid template is applied as it stands (but for Delete and Undo{Follow}, which
    # would end the thread and the membership): the fuzz starts from activities that work.
    for template in activities:
        inner = template["object"]
        if template["type"] == "Delete" or (
            template["type"] == "Undo" and inner["type"] == "Follow"
        ):
            continue
        valid = freshen(template, "valid")
        assert await inbox.send_signed(hospital.group_inbox, encode(valid)) == 202, valid
        assert await processed(hospital, valid["id"]) == "done", valid
    return Stage(inbox, page, activities)


async def test_broken_activities_signed_by_a_member_never_crash_and_always_settle(
    hospital: Hospital, remote: FakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    # Given mallory, a member of the group with a thread there, and a valid example of each
    # activity she may send (Follow, Create{Note}, Create{Page}, Like, Announce, Undo, Delete,
    # Update)
    staged = await stage(hospital, remote)
    inbox = staged.inbox
    examples = st.tuples(
        mutated(staged.activities, wrong_values(remote.base_url, surrogates=False)),
        st.sampled_from(inbox.inboxes),
    )
    answers: list[int] = []

    async def check(example: tuple[Document, str]) -> None:
        document, url = example
        body = encode(freshen(document, str(inbox.sent)))
        answers.append(await inbox.send_signed(url, body))

    # When broken copies of them, signed with her key, are posted to every kind of inbox
    await drive(examples, check, max_examples=120)
    # Then (checked for each one) no 5xx, refusals keep nothing, kept items settle; and at
    # the end every item has ended, the node serves its pages and nothing logged an error
    await inbox.finish(caplog)
    # And the fuzz reached the refusals at the edge, and processing, both to success and to
    # refusals there
    assert 202 in answers and 400 in answers, answers
    assert {"done", "failed"} <= await item_states(hospital)


def duplicate_keys(document: Document, key: str, decoy: Any, decoy_first: bool) -> bytes:
    """The JSON text with `key` twice: the decoy value before or after the real one."""
    text = encode(document)
    member = (json.dumps(key) + ":" + json.dumps(decoy)).encode()
    return b"{" + member + b"," + text[1:] if decoy_first else text[:-1] + b"," + member + b"}"


@st.composite
def raw_bodies(draw: st.DrawFn, activities: list[Document], serial: Callable[[], str]) -> bytes:
    """Bodies that are not clean JSON objects, or are JSON in a surprising encoding."""
    document = freshen(draw(st.sampled_from(activities)), serial())
    text = encode(document)
    kind = draw(
        st.sampled_from(
            ["binary", "text", "truncated", "invalid_utf8", "utf16", "bom", "duplicate",
             "scalar", "nested", "big_number"]
        )
    )  # fmt: skip
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(odd_text(surrogates=False)).encode()
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "invalid_utf8":
        at = draw(st.integers(0, len(text)))
        # (b"\xed\xa0\x80", an encoded surrogate, is left to the xfail on lone surrogates.)
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xf4\x90\x80\x80"]))
        return text[:at] + bad + text[at:]
    if kind == "utf16":
        return text.decode().encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    if kind == "duplicate":
        key = draw(st.sampled_from(["id", "type", "actor", "object", "@context"]))
        decoy = draw(st.sampled_from([ORIGIN + "/users/trent", "Delete", None, [], {"id": 1}]))
        return duplicate_keys(document, key, decoy, draw(st.booleans()))
    if kind == "scalar":
        return draw(st.sampled_from([b"null", b"[]", b"{}", b"1e999", b"NaN", b'"x"', b"[{}]",
                                     b"", b" ", b"\x00"]))  # fmt: skip
    if kind == "nested":
        depth = draw(st.integers(1, 600))
        return draw(st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" +
                                     b"}" * depth]))  # fmt: skip
    return b'{"id": 1' + b"0" * draw(st.sampled_from([20, 400, 5000])) + b"}"


async def test_bodies_that_are_not_clean_json_never_crash_the_inbox(
    hospital: Hospital, remote: FakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    # Given mallory, a member, and raw bodies: bytes, text, truncated or non-UTF-8 JSON, other
    # encodings, duplicate keys (a decoy before or after), scalars, nesting, too-long numbers
    staged = await stage(hospital, remote)
    inbox = staged.inbox
    examples = st.tuples(
        raw_bodies(staged.activities, lambda: f"raw-{uuid.uuid4().hex}"),
        st.sampled_from(inbox.inboxes),
    )
    answers: list[int] = []

    async def check(example: tuple[bytes, str]) -> None:
        body, url = example
        answers.append(await inbox.send_signed(url, body))

    # When each is posted, validly signed over its exact bytes
    await drive(examples, check, max_examples=80)
    # Then the same invariants hold (a duplicate key never lets the decoy actor be kept)
    await inbox.finish(caplog)
    assert 400 in answers, answers


@st.composite
def forged_requests(
    draw: st.DrawFn, inbox: Inbox, keys: dict[str, rsa.RSAPrivateKey], activities: list[Document]
) -> tuple[str, bytes, dict[str, str]]:
    """A request that must not authenticate: unsigned, signed wrongly, or tampered with."""
    url = draw(st.sampled_from(inbox.inboxes))
    document = freshen(draw(st.sampled_from(activities)), f"forged-{uuid.uuid4().hex}")
    if draw(st.booleans()):
        document = draw(mutated([document], wrong_values(inbox.remote.base_url, False)))
    body = encode(document)
    now = inbox.hospital.now()
    headers = inbox.signed_by_mallory(url, body)
    flaw = draw(
        st.sampled_from(
            ["unsigned", "garbage", "impostor_key", "trent_key", "tampered", "no_digest",
             "stale", "other_host", "uncovered"]
        )
    )  # fmt: skip
    if flaw == "unsigned":
        del headers["Signature"]
    elif flaw == "garbage":
        headers["Signature"] = draw(
            st.text(st.characters(codec="latin-1", categories=["L", "N", "P", "S"]), max_size=200)
        )
    elif flaw in ("impostor_key", "trent_key"):
        key = keys["impostor"] if flaw == "impostor_key" else keys["trent"]
        headers = cavage_headers(
            url=url, body=body, key=key, key_id=inbox.remote.key_id("mallory"), now=now
        )
    elif flaw == "tampered":
        extra = draw(st.sampled_from([b" ", b"\n", b"{}"]))
        body = body + extra
    elif flaw == "no_digest":
        del headers["Digest"]
    elif flaw == "stale":
        hours = draw(st.sampled_from([-1000, -2, 2, 1000]))
        headers = cavage_headers(
            url=url, body=body, key=keys["mallory"], key_id=inbox.remote.key_id("mallory"),
            now=now + timedelta(hours=hours, seconds=draw(st.integers(0, 3599))),
        )  # fmt: skip
    elif flaw == "other_host":
        other = url.replace(inbox.hospital.running.domain, "hospital.invalid")
        headers = cavage_headers(
            url=other, body=body, key=keys["mallory"], key_id=inbox.remote.key_id("mallory"),
            now=now,
        )  # fmt: skip
    else:
        headers = cavage_headers(
            url=url, body=body, key=keys["mallory"], key_id=inbox.remote.key_id("mallory"),
            now=now, covered=("(request-target)", "host", "date"),
        )  # fmt: skip
    return url, body, headers


async def test_unsigned_or_wrongly_signed_fuzz_is_always_refused(
    hospital: Hospital,
    remote: FakeRemote,
    keys: dict[str, rsa.RSAPrivateKey],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given mallory, a member, and requests that fail authentication in one way or another
    staged = await stage(hospital, remote)
    inbox = staged.inbox
    before = await kept(hospital)

    async def check(example: tuple[str, bytes, dict[str, str]]) -> None:
        url, body, headers = example
        status = await inbox.send(url, body, headers)
        # Then each is refused, never accepted: an accepted one would be a forgery
        assert 400 <= status < 500, (status, headers)

    # When each is posted
    await drive(forged_requests(inbox, keys, staged.activities), check, max_examples=60)
    # Then nothing at all was kept, the node still serves, nothing logged an error
    assert await kept(hospital) == before
    await inbox.finish(caplog)


async def test_broken_remote_actor_documents_never_crash_the_inbox(
    hospital: Hospital, remote: FakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    # Given actors on the fake remote server whose documents are broken copies of a valid one
    # (mallory's key, published under each actor's own id)
    inbox = Inbox(hospital, remote)
    mallory_document = remote.actor_document("mallory")
    template = actor_document(remote.base_url + "/users/fuzz")
    template["publicKey"]["publicKeyPem"] = mallory_document["publicKey"]["publicKeyPem"]
    answers: list[int] = []

    async def check(document: Document) -> None:
        name = f"actor{inbox.sent}"
        iri = f"{remote.base_url}/actors/{name}"
        served = json.loads(json.dumps(document).replace(remote.base_url + "/users/fuzz", iri))
        remote.documents[f"/actors/{name}"] = served
        follow = {"@context": AS2, "id": f"{iri}/follows/1", "type": "Follow", "actor": iri,
                  "object": hospital.group_iri}  # fmt: skip
        body = encode(follow)
        headers = cavage_headers(
            url=hospital.group_inbox, body=body, key=remote.keys["mallory"],
            key_id=iri + "#main-key", now=hospital.now(),
        )  # fmt: skip
        before = await kept(hospital)
        answer = await post(hospital.group_inbox, body, headers)
        inbox.sent += 1
        answers.append(answer.status)
        # When a Follow signed by that actor arrives (its key is fetched from the document)
        # Then it is accepted (the document was usable) or refused as unauthenticated
        assert answer.status in (202, 401), (answer, served)
        if answer.status == 401:
            assert await kept(hospital) == before
        else:
            await eventually(lambda: nothing_pending(hospital), "the Follow to settle", 15)

    await drive(
        mutated([template], wrong_values(remote.base_url, surrogates=False)),
        check,
        max_examples=40,
    )
    # And at the end every item has ended, pages are served, and no error was logged
    await inbox.finish(caplog)
    assert 202 in answers and 401 in answers, answers


# ---------------------------------------------------------------- crashes found by fuzzing, fixed


async def test_deeply_nested_json_is_a_bad_request_not_a_server_error(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a body of 5000 nested arrays (10 kB, far under the 1 MiB cap), validly signed
    inbox = Inbox(hospital, remote)
    body = b"[" * 5000 + b"]" * 5000
    # When it is posted
    answer = await post(hospital.group_inbox, body, inbox.signed_by_mallory(inbox.inboxes[0], body))
    # Then it is refused as not readable JSON, like any other body that is not JSON
    assert answer.status == 400, answer


def with_lone_surrogate(document: Document) -> bytes:
    r"""JSON text where the marker "LONE" becomes the escape \ud800: valid JSON syntax (RFC 8259
    allows any \u escape), which Python decodes to a string no UTF-8 store can hold."""
    return encode(document).replace(b"LONE", b"\\ud800")


def with_encoded_surrogate(document: Document) -> bytes:
    """The same through raw bytes: ED A0 80 is U+D800 encoded as UTF-8 (CESU-8), which is not
    UTF-8, but json.loads decodes a bytes body with "surrogatepass" and lets it through."""
    return encode(document).replace(b"LONE", b"\xed\xa0\x80")


@pytest.mark.parametrize("spelling", [with_lone_surrogate, with_encoded_surrogate],
                         ids=["json-escape", "raw-bytes"])  # fmt: skip
async def test_an_id_with_a_lone_surrogate_is_refused_not_a_server_error(
    hospital: Hospital,
    remote: FakeRemote,
    caplog: pytest.LogCaptureFixture,
    spelling: Callable[[Document], bytes],
) -> None:
    # Given a Follow by mallory whose id (on her own server) holds a lone surrogate
    inbox = Inbox(hospital, remote)
    follow = {"@context": AS2, "id": inbox.mallory + "/follows/LONE", "type": "Follow",
              "actor": inbox.mallory, "object": hospital.group_iri}  # fmt: skip
    # When it is posted, validly signed
    status = await inbox.send_signed(hospital.group_inbox, spelling(follow))
    # Then it is refused as unreadable, for good (`send` asserts no 5xx), and nothing logged
    assert status == 400
    await inbox.finish(caplog)


async def test_one_unstorable_activity_does_not_fail_the_others_arriving_with_it(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given 30 valid Likes by mallory, and one whose id holds a lone surrogate among them
    inbox = Inbox(hospital, remote)
    await join(hospital, remote)

    def like(suffix: str) -> Document:
        return {"@context": AS2, "id": f"{inbox.mallory}/likes/{suffix}", "type": "Like",
                "actor": inbox.mallory, "object": hospital.group_iri}  # fmt: skip

    bodies = [encode(like(str(number))) for number in range(30)]
    bodies.insert(15, with_lone_surrogate(like("poisonLONE")))
    # When they all arrive at once, each validly signed
    answers = await asyncio.gather(
        *(post(hospital.group_inbox, body, inbox.signed_by_mallory(hospital.group_inbox, body))
          for body in bodies)
    )  # fmt: skip
    # Then every valid one is kept: what one sender sends cannot refuse another's activities
    statuses = [answer.status for position, answer in enumerate(answers) if position != 15]
    assert statuses == [202] * 30, statuses


async def test_a_note_with_a_lone_surrogate_is_refused_at_the_edge_without_an_error(
    hospital: Hospital, remote: FakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    # Given mallory, a member, and a new thread whose text holds an escaped lone surrogate
    staged = await stage(hospital, remote)
    create = freshen(page_create(staged.activities), "surrogate")
    create["object"]["content"] = "<p>before LONE after</p>"
    del create["object"]["source"]
    # When it is posted, validly signed, it is refused whole (no database or HTML library
    # takes a lone surrogate), before anything is kept, and nothing is logged as an error
    assert await staged.inbox.send_signed(hospital.group_inbox, with_lone_surrogate(create)) == 400
    assert await processed(hospital, create["id"]) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@settings(max_examples=30, **SETTINGS)
@given(
    st.sampled_from(["id", "actor", "object"]),
    st.sampled_from(["\x00", *LONE_SURROGATES]),
)
def test_parsed_ids_and_texts_hold_only_storable_characters(field_name: str, bad: str) -> None:
    # Given a Create whose id, actor or object id holds a NUL or a lone surrogate
    create = copy.deepcopy(valid_activities(MALLORY, GROUP, KNOWN_POST)[1])
    if field_name == "object":
        create["object"]["id"] += bad
        create["object"]["content"] = f"<p>{bad}</p>"
    else:
        create[field_name] += bad
    # When it is read
    try:
        activity = parse_activity(normalise(create))
        post_doc = parse_post(activity.embedded_object)
    except (InvalidDocument, VocabError):
        return
    # Then what was accepted can be stored: no NUL, valid UTF-8
    for value in (activity.id, activity.actor, post_doc.id, post_doc.content_html):
        assert "\x00" not in value
        value.encode("utf-8")


class RawRemote(FakeRemote):
    """A fake remote server that can also serve exact bytes (the base class serves dicts)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.raw: dict[str, bytes] = {}

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "GET" and request.path in self.raw:
            return web.Response(body=self.raw[request.path], content_type=AS2_JSON)
        return await super().handle(request)


@pytest.fixture
async def raw_remote() -> AsyncIterator[RawRemote]:
    server = RawRemote(free_port())
    await server.start()
    yield server
    await server.close()


@pytest.mark.parametrize("flaw", ["deep-nesting", "lone-surrogate"])
async def test_an_unreadable_remote_actor_document_is_a_refusal_not_a_server_error(
    raw_remote: RawRemote, hospital: Hospital, remote: FakeRemote, flaw: str
) -> None:
    # Given an actor whose document is deeply nested JSON, or has a lone surrogate in its name
    iri = raw_remote.base_url + "/actors/odd"
    document = actor_document(iri)
    document["publicKey"]["publicKeyPem"] = remote.actor_document("mallory")["publicKey"][
        "publicKeyPem"
    ]
    if flaw == "deep-nesting":
        document["attachment"] = "NEST"
        raw_remote.raw["/actors/odd"] = encode(document).replace(
            b'"NEST"', b"[" * 5000 + b"]" * 5000
        )
    else:
        document["name"] = document["summary"] = "LONE"
        raw_remote.raw["/actors/odd"] = with_lone_surrogate(document)
    follow = {"@context": AS2, "id": iri + "/follows/1", "type": "Follow", "actor": iri,
              "object": hospital.group_iri}  # fmt: skip
    body = encode(follow)
    headers = cavage_headers(
        url=hospital.group_inbox, body=body, key=remote.keys["mallory"],
        key_id=iri + "#main-key", now=hospital.now(),
    )  # fmt: skip
    # When a Follow signed by that actor arrives (its key is fetched from the document)
    answer = await post(hospital.group_inbox, body, headers)
    # Then the key cannot be had, a 401, not a server error
    assert answer.status == 401, answer
