"""A Mastodon-shaped peer: the exact headers and JSON Mastodon sends, replayed against our inbox.

What is replayed, and where it comes from (mastodon/mastodon, read through the code search):

- Headers, `app/lib/request.rb` and `app/workers/activitypub/delivery_worker.rb`: a POST carries
  User-Agent, Host, Date, Accept-Encoding, Digest (`SHA-256=`) and Content-Type
  `application/activity+json`; the Signature (rsa-sha256, keyId `<actor>#main-key`) covers every
  header but User-Agent and Accept-Encoding, so headers="(request-target) host date digest
  content-type". Mastodon sets Host to `@url.host`; on the default port that production uses it
  equals the authority, so here (a loopback port) the authority is sent.
- JSON, `app/serializers/activitypub/*` (follow, undo_follow, like, undo_like, undo_announce,
  delete, update, activity, note, actor) with the `@context` term maps of
  `app/helpers/context_helper.rb`, and the `signature` block that
  `app/lib/activitypub/linked_data_signature.rb` adds to public Create, Delete and Update.
- Where each activity goes (`app/services/*`): Follow and Undo{Follow} to the followed actor's own
  inbox, a Like to the post author's own inbox, the rest to shared inboxes.

Each activity must then leave the node in the state docs/FEDERATION.md describes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from html import unescape
from itertools import count as counter
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, select

from node import groups, posts
from node.policy import Viewer
from node.storage.models import Delivery, Member, Membership, Post, Reaction, RemoteKey, Thread
from tests.federation_harness import eventually, free_port
from tests.peers import (
    AS2,
    PUBLIC,
    SECURITY_V1,
    Answer,
    FakeRemote,
    Hospital,
    Received,
    assert_unverified,
    at_once,
    b64,
    count,
    http_date,
    post,
    processed,
    public_pem,
    remote_memberships,
)

MASTODON_VERSION = "4.3.2"
HTTP_RB = "http.rb/5.2.0"

# app/helpers/context_helper.rb, CONTEXT_EXTENSION_MAP: the entries each serializer declares.
NOTE_CONTEXT: list[Any] = [
    AS2,
    {
        "ostatus": "http://ostatus.org#",
        "atomUri": "ostatus:atomUri",
        "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
        "conversation": "ostatus:conversation",
        "sensitive": "as:sensitive",
        "toot": "http://joinmastodon.org/ns#",
        "votersCount": "toot:votersCount",
    },
]
TOMBSTONE_CONTEXT: list[Any] = [
    AS2,
    {"ostatus": "http://ostatus.org#", "atomUri": "ostatus:atomUri"},
]
ACTOR_CONTEXT: list[Any] = [
    AS2,
    SECURITY_V1,
    {
        "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
        "toot": "http://joinmastodon.org/ns#",
        "featured": {"@id": "toot:featured", "@type": "@id"},
        "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
        "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
        "movedTo": {"@id": "as:movedTo", "@type": "@id"},
        "schema": "http://schema.org#",
        "PropertyValue": "schema:PropertyValue",
        "value": "schema:value",
        "discoverable": "toot:discoverable",
        "suspended": "toot:suspended",
        "memorial": "toot:memorial",
        "indexable": "toot:indexable",
        "attributionDomains": {"@id": "toot:attributionDomains", "@type": "@id"},
        "Emoji": "toot:Emoji",
        "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
    },
]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def without_context(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "@context"}


# ---------------------------------------------------------------- the Mastodon server


@dataclass
class MastodonServer(FakeRemote):
    """A FakeRemote whose actors are Mastodon accounts: Mastodon's actor document, a shared
    inbox at /inbox, and activities built the way Mastodon's serializers build them."""

    display_names: dict[str, str] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=lambda: counter(113_452_000_000_000_001))

    @property
    def shared_inbox(self) -> str:
        return self.base_url + "/inbox"

    def actor_document(self, name: str) -> dict[str, Any]:
        """app/serializers/activitypub/actor_serializer.rb, as Mastodon 4.3 serves it."""
        iri = self.actor(name)
        return {
            "@context": ACTOR_CONTEXT,
            "id": iri,
            "type": "Person",
            "following": iri + "/following",
            "followers": iri + "/followers",
            "inbox": iri + "/inbox",
            "outbox": iri + "/outbox",
            "featured": iri + "/collections/featured",
            "featuredTags": iri + "/collections/tags",
            "preferredUsername": name,
            "name": self.display_names.get(name, name.title()),
            "summary": "<p>Diagnosed in 2019. Here to listen.</p>",
            "url": f"{self.base_url}/@{name}",
            "manuallyApprovesFollowers": False,
            "discoverable": True,
            "indexable": False,
            "published": "2024-03-05T00:00:00Z",
            "memorial": False,
            "publicKey": {
                "id": iri + "#main-key",
                "owner": iri,
                "publicKeyPem": public_pem(self.keys[name]),
            },
            "tag": [],
            "attachment": [{"type": "PropertyValue", "name": "Pronouns", "value": "she/her"}],
            "endpoints": {"sharedInbox": self.shared_inbox},
            "icon": {
                "type": "Image",
                "mediaType": "image/png",
                "url": f"{self.base_url}/system/accounts/avatars/{name}.png",
            },
        }

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "POST" and request.path == "/inbox":
            body = await request.read()
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.received.append(Received("POST", request.path_qs, headers, body))
            return web.Response(status=202)
        return await super().handle(request)

    def at_shared_inbox(self, kind: str) -> list[dict[str, Any]]:
        """The activities of one type our node delivered to this server's shared inbox."""
        found = []
        for request in self.received:
            if request.method == "POST" and request.path == "/inbox":
                document = request.json()
                if document.get("type") == kind:
                    found.append(document)
        return found

    # ------------------------------------------------------------ activities

    def ld_signature(self, name: str, now: datetime) -> dict[str, str]:
        """The block linked_data_signature.rb adds. Its value is a real RSA signature, but not
        over the URDNA2015 hashes Mastodon signs: the node checks no LD signature
        (docs/FEDERATION.md, "HTTP signatures"), it only has to keep the block intact."""
        value = self.keys[name].sign(name.encode(), padding.PKCS1v15(), hashes.SHA256())
        return {
            "type": "RsaSignature2017",
            "creator": self.key_id(name),
            "created": iso(now),
            "signatureValue": b64(value),
        }

    def follow(self, name: str, target: str) -> dict[str, Any]:
        # follow_serializer.rb; the id is TagManager#generate_uri_for: the host and a UUID.
        return {
            "@context": AS2,
            "id": f"{self.base_url}/{uuid.uuid4()}",
            "type": "Follow",
            "actor": self.actor(name),
            "object": target,
        }

    def undo_follow(self, name: str, follow: dict[str, Any]) -> dict[str, Any]:
        return {
            "@context": AS2,
            "id": f"{self.actor(name)}#follows/{next(self.ids)}/undo",
            "type": "Undo",
            "actor": self.actor(name),
            "object": without_context(follow),
        }

    def note(
        self,
        name: str,
        now: datetime,
        *,
        html: str,
        in_reply_to: str | None = None,
        content_warning: str | None = None,
        mentions: tuple[tuple[str, str], ...] = (),
    ) -> dict[str, Any]:
        """note_serializer.rb for a public status; `mentions` are (actor IRI, acct) pairs."""
        status_id = next(self.ids)
        uri = f"{self.actor(name)}/statuses/{status_id}"
        replies = uri + "/replies"
        return {
            "id": uri,
            "type": "Note",
            "summary": content_warning,
            "inReplyTo": in_reply_to,
            "published": iso(now),
            "url": f"{self.base_url}/@{name}/{status_id}",
            "attributedTo": self.actor(name),
            "to": [PUBLIC],
            "cc": [self.actor(name) + "/followers", *(iri for iri, _ in mentions)],
            "sensitive": content_warning is not None,
            "atomUri": uri,
            "inReplyToAtomUri": in_reply_to,
            "conversation": f"tag:{urlsplit(self.base_url).hostname},2026-11-01:"
            f"objectId={status_id}:objectType=Conversation",
            "content": html,
            "contentMap": {"en": html},
            "attachment": [],
            "tag": [{"type": "Mention", "href": iri, "name": f"@{acct}"} for iri, acct in mentions],
            "replies": {
                "id": replies,
                "type": "Collection",
                "first": {
                    "type": "CollectionPage",
                    "next": replies + "?only_other_accounts=true&page=true",
                    "partOf": replies,
                    "items": [],
                },
            },
            "likes": {"id": uri + "/likes", "type": "Collection", "totalItems": 0},
            "shares": {"id": uri + "/shares", "type": "Collection", "totalItems": 0},
        }

    def create(self, name: str, note: dict[str, Any], now: datetime) -> dict[str, Any]:
        # activity_serializer.rb around the Note, LD-signed because the status is public.
        return {
            "@context": NOTE_CONTEXT,
            "id": note["id"] + "/activity",
            "type": "Create",
            "actor": self.actor(name),
            "published": note["published"],
            "to": note["to"],
            "cc": note["cc"],
            "object": note,
            "signature": self.ld_signature(name, now),
        }

    def delete(self, name: str, note_iri: str, now: datetime) -> dict[str, Any]:
        # delete_serializer.rb: a Tombstone with its atomUri, to Public only.
        return {
            "@context": TOMBSTONE_CONTEXT,
            "id": note_iri + "#delete",
            "type": "Delete",
            "actor": self.actor(name),
            "to": [PUBLIC],
            "object": {"id": note_iri, "type": "Tombstone", "atomUri": note_iri},
            "signature": self.ld_signature(name, now),
        }

    def delete_account(self, name: str, now: datetime) -> dict[str, Any]:
        # delete_actor_serializer.rb: the actor deletes itself, `#delete` on its IRI.
        actor = self.actor(name)
        return {
            "@context": TOMBSTONE_CONTEXT,
            "id": actor + "#delete",
            "type": "Delete",
            "actor": actor,
            "to": [PUBLIC],
            "object": actor,
            "signature": self.ld_signature(name, now),
        }

    def like(self, name: str, target: str) -> dict[str, Any]:
        return {
            "@context": AS2,
            "id": f"{self.actor(name)}#likes/{next(self.ids)}",
            "type": "Like",
            "actor": self.actor(name),
            "object": target,
        }

    def undo_like(self, name: str, like: dict[str, Any]) -> dict[str, Any]:
        return {
            "@context": AS2,
            "id": like["id"] + "/undo",
            "type": "Undo",
            "actor": self.actor(name),
            "object": without_context(like),
        }

    def announce(self, name: str, target: str, author: str, now: datetime) -> dict[str, Any]:
        # A boost: a status of its own whose activity id ends in /activity, object by id.
        status_id = next(self.ids)
        return {
            "@context": AS2,
            "id": f"{self.actor(name)}/statuses/{status_id}/activity",
            "type": "Announce",
            "actor": self.actor(name),
            "published": iso(now),
            "to": [PUBLIC],
            "cc": [author, self.actor(name) + "/followers"],
            "object": target,
        }

    def undo_announce(self, name: str, announce: dict[str, Any]) -> dict[str, Any]:
        status_id = announce["id"].split("/statuses/")[1].removesuffix("/activity")
        return {
            "@context": AS2,
            "id": f"{self.actor(name)}#announces/{status_id}/undo",
            "type": "Undo",
            "actor": self.actor(name),
            "to": [PUBLIC],
            "object": without_context(announce),
        }

    def update_person(self, name: str, now: datetime) -> dict[str, Any]:
        # update_serializer.rb: the whole actor document, id "#updates/<timestamp>".
        return {
            "@context": ACTOR_CONTEXT,
            "id": f"{self.actor(name)}#updates/{int(now.timestamp())}",
            "type": "Update",
            "actor": self.actor(name),
            "to": [PUBLIC],
            "object": without_context(self.actor_document(name)),
            "signature": self.ld_signature(name, now),
        }


def mastodon_headers(
    *, url: str, body: bytes, key: rsa.RSAPrivateKey, key_id: str, now: datetime, origin: str
) -> dict[str, str]:
    """The headers request.rb sends for a signed POST, in its order, signed as it signs them."""
    parts = urlsplit(url)
    built = {
        "(request-target)": f"post {parts.path}",
        "User-Agent": f"{HTTP_RB} (Mastodon/{MASTODON_VERSION}; +{origin}/)",
        "Host": parts.netloc,
        "Date": http_date(now),
        "Accept-Encoding": "gzip",
        "Digest": "SHA-256=" + b64(hashlib.sha256(body).digest()),
        "Content-Type": "application/activity+json",
    }
    signed = {
        name: value
        for name, value in built.items()
        if name not in ("User-Agent", "Accept-Encoding")
    }
    text = "\n".join(f"{name.lower()}: {value}" for name, value in signed.items())
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    covered = " ".join(signed).lower()
    assert covered == "(request-target) host date digest content-type"
    headers = {name: value for name, value in built.items() if name != "(request-target)"}
    headers["Signature"] = (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{covered}",signature="{b64(signature)}"'
    )
    return headers


async def deliver(
    hospital: Hospital,
    mastodon: MastodonServer,
    activity: dict[str, Any],
    inbox: str,
    *,
    key: rsa.RSAPrivateKey | None = None,
) -> Answer:
    """POST as Mastodon's delivery worker does: compact UTF-8 JSON (Oj), Mastodon's headers."""
    body = json.dumps(activity, separators=(",", ":"), ensure_ascii=False).encode()
    name = activity["actor"].rsplit("/", 1)[-1]
    headers = mastodon_headers(
        url=inbox, body=body, key=key or mastodon.keys[name], key_id=mastodon.key_id(name),
        now=hospital.now(), origin=mastodon.base_url,
    )  # fmt: skip
    return await post(inbox, body, headers)


async def delivered_and_done(
    hospital: Hospital, mastodon: MastodonServer, activity: dict[str, Any], inbox: str
) -> None:
    answer = await deliver(hospital, mastodon, activity, inbox)
    assert answer.status == 202, answer
    state = await eventually(
        lambda: processed(hospital, activity["id"]), f"{activity['type']} done"
    )
    assert state == "done", state


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
async def remote(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[MastodonServer]:
    """Overrides the shared `remote`: the `hospital` fixture then federates with Mastodon."""
    server = MastodonServer(free_port(), keys={"mallory": keys["mallory"]})
    await server.start()
    yield server
    await server.close()


@dataclass
class Scene:
    hospital: Hospital
    mastodon: MastodonServer
    thread_id: str
    page_iri: str
    nurse_iri: str
    follow: dict[str, Any]

    @property
    def thread_url(self) -> str:
        return f"{self.hospital.base_url}/t/{self.thread_id}"


async def nurse_starts_a_thread(hospital: Hospital) -> str:
    node = hospital.running.node
    async with node.transaction() as session:
        nurse = (
            await session.execute(select(Member).where(Member.username == "nurse"))
        ).scalar_one()
        view = await groups.view_group(session, "t1d", Viewer(nurse.id))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Night-time lows",
            draft=posts.Draft("How do you catch lows **at night**?"), now=node.clock.now(),
        )  # fmt: skip
    return thread.id


@pytest.fixture
async def scene(hospital: Hospital, remote: MastodonServer) -> Scene:
    """nurse's thread in the public group, which mallory on Mastodon follows."""
    thread_id = await nurse_starts_a_thread(hospital)
    follow = remote.follow("mallory", hospital.group_iri)
    await delivered_and_done(hospital, remote, follow, hospital.group_inbox)
    return Scene(
        hospital, remote, thread_id, f"{hospital.base_url}/t/{thread_id}",
        f"{hospital.base_url}/u/nurse", follow,
    )  # fmt: skip


async def page_text(url: str) -> str:
    """A page as a person reads it: its text, without tags."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": "text/html"}) as response,
    ):
        assert response.status == 200, url
        html = await response.text()
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


async def post_by_ap_id(hospital: Hospital, ap_id: str) -> Post | None:
    async with hospital.running.node.transaction() as session:
        return (await session.execute(select(Post).where(Post.ap_id == ap_id))).scalar()


async def helpful_marks(hospital: Hospital) -> int:
    return await count(hospital, select(func.count()).select_from(Reaction))


async def reply_with_warning(scene: Scene) -> dict[str, Any]:
    """mallory replies to nurse's thread from Mastodon: a mention of nurse and a CW."""
    hospital, mastodon = scene.hospital, scene.mastodon
    acct = f"nurse@{urlsplit(hospital.base_url).netloc}"
    html = (
        f'<p><span class="h-card" translate="no"><a href="{scene.nurse_iri}" class="u-url '
        f'mention">@<span>nurse</span></a></span> A CGM alarm at 4 mmol/L, and glucose '
        f"tablets on the nightstand. Säker sömn!</p>"
    )
    note = mastodon.note(
        "mallory", hospital.now(), html=html, in_reply_to=scene.page_iri,
        content_warning="mentions a severe hypo", mentions=((scene.nurse_iri, acct),),
    )  # fmt: skip
    create = mastodon.create("mallory", note, hospital.now())
    # The mentioned account's preferred inbox is the shared one our Person publishes.
    await delivered_and_done(hospital, mastodon, create, hospital.base_url + "/inbox")
    return create


# ---------------------------------------------------------------- follow


async def test_a_mastodon_follow_makes_a_member_and_is_accepted(
    hospital: Hospital, remote: MastodonServer
) -> None:
    # Given a Follow of the public group exactly as Mastodon sends it, to the group's own inbox
    follow = remote.follow("mallory", hospital.group_iri)
    # When it is delivered with Mastodon's headers
    answer = await deliver(hospital, remote, follow, hospital.group_inbox)
    # Then it is accepted
    assert answer.status == 202, answer
    # And an Accept from the group, embedding the Follow, reaches mallory's own inbox
    accepts = await eventually(lambda: at_once(remote.posted("Accept")), "the Accept")
    assert accepts[0]["actor"] == hospital.group_iri
    assert accepts[0]["object"]["id"] == follow["id"]
    # And she is an active member, known by what her Mastodon actor document says
    async with hospital.running.node.transaction() as session:
        member = (
            await session.execute(select(Member).where(Member.actor_iri == remote.actor("mallory")))
        ).scalar_one()
        membership = (
            await session.execute(select(Membership).where(Membership.member_id == member.id))
        ).scalar_one()
    assert membership.state == "active"
    assert member.display_name == "Mallory"
    assert member.shared_inbox_url == remote.shared_inbox
    assert member.profile_url == f"{remote.base_url}/@mallory"


async def test_a_mastodon_unfollow_ends_the_membership(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory follows the group from Mastodon
    assert await remote_memberships(hospital) == 1
    # When she unfollows: Undo{Follow} embedding her Follow, to the group's inbox
    undo = mastodon.undo_follow("mallory", scene.follow)
    await delivered_and_done(hospital, mastodon, undo, hospital.group_inbox)
    # Then she is no longer a member, and the group counts only its owner
    assert await remote_memberships(hospital) == 0
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            hospital.group_iri + "/followers", headers={"Accept": "application/activity+json"}
        ) as response,
    ):
        assert (await response.json(content_type=None))["totalItems"] == 1


# ---------------------------------------------------------------- statuses


async def test_a_mastodon_reply_keeps_its_content_warning_and_its_mention(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory follows the group
    # When she replies to nurse's thread from Mastodon, mentioning nurse, behind a CW
    create = await reply_with_warning(scene)
    # Then the reply is in the thread, under nurse's opening post
    reply = await post_by_ap_id(hospital, create["object"]["id"])
    assert reply is not None
    assert reply.thread_id == scene.thread_id and reply.parent_id is not None
    # And the content warning is kept as the warning, the text behind it
    assert reply.content_warning == "mentions a severe hypo"
    assert "glucose tablets on the nightstand" in reply.source
    # And the mention stays a link to nurse (mentions are not otherwise read: FEDERATION.md)
    assert f'href="{scene.nurse_iri}"' in reply.content_html
    assert "@nurse" in unescape(re.sub(r"<[^>]+>", "", reply.content_html))
    # And the copy served here carries it as Mastodon sent it: summary, with sensitive
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{hospital.base_url}/p/{reply.id}", headers={"Accept": "application/activity+json"}
        ) as response,
    ):
        served = await response.json(content_type=None)
    assert served["summary"] == "mentions a severe hypo" and served["sensitive"] is True
    # And a reader of the thread sees the warning before the text, and who wrote it
    text = await page_text(scene.thread_url)
    assert "Content warning: mentions a severe hypo" in text
    assert "Mallory" in text and "Säker sömn!" in text
    # And the group announces Mastodon's Create verbatim, LD signature and all
    announces = await eventually(
        lambda: at_once([a for a in mastodon.at_shared_inbox("Announce") if a["object"] == create]),
        "the Announce of the reply",
    )
    assert announces[0]["actor"] == hospital.group_iri


async def test_a_mastodon_post_that_mentions_the_group_starts_a_thread(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    group_acct = f"t1d@{urlsplit(hospital.base_url).netloc}"
    # Given a Mastodon status that mentions the group (cc: the group, tag: Mention)
    html = (
        f'<p><span class="h-card" translate="no"><a href="{hospital.group_iri}" class="u-url '
        f'mention">@<span>t1d</span></a></span> Does anyone else dread sick days?</p>'
    )
    note = mastodon.note(
        "mallory", hospital.now(), html=html, mentions=((hospital.group_iri, group_acct),)
    )
    create = mastodon.create("mallory", note, hospital.now())
    # When Mastodon delivers it to the group's shared inbox
    await delivered_and_done(hospital, mastodon, create, hospital.base_url + "/inbox")
    # Then it opens a new thread in the group, titled from its text (a Note has no name)
    opening = await post_by_ap_id(hospital, note["id"])
    assert opening is not None and opening.parent_id is None
    async with hospital.running.node.transaction() as session:
        thread = await session.get(Thread, opening.thread_id)
    assert thread is not None and thread.id != scene.thread_id
    assert "Does anyone else dread sick days?" in thread.title
    assert opening.content_warning == ""


async def test_a_mastodon_delete_makes_the_reply_a_tombstone(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory's reply is in the thread
    create = await reply_with_warning(scene)
    note_iri = create["object"]["id"]
    # When she deletes it on Mastodon: Delete{Tombstone} to the shared inbox
    delete = mastodon.delete("mallory", note_iri, hospital.now())
    await delivered_and_done(hospital, mastodon, delete, hospital.base_url + "/inbox")
    # Then the post is a tombstone: deleted, shown as such, its text gone from the page
    reply = await post_by_ap_id(hospital, note_iri)
    assert reply is not None and reply.deleted_at is not None
    text = await page_text(scene.thread_url)
    assert "This post was deleted." in text
    assert "glucose tablets" not in text and "mentions a severe hypo" not in text
    # And its document here answers 410 Tombstone
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{hospital.base_url}/p/{reply.id}", headers={"Accept": "application/activity+json"}
        ) as response,
    ):
        assert response.status == 410
        assert (await response.json(content_type=None))["type"] == "Tombstone"


async def test_a_mastodon_account_deletion_erases_what_it_wrote_here(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory's reply (with its content warning) in nurse's thread, and her mark on it
    create = await reply_with_warning(scene)
    like = mastodon.like("mallory", scene.page_iri)
    await delivered_and_done(hospital, mastodon, like, hospital.group_inbox)
    assert await helpful_marks(hospital) == 1
    # When she deletes her account on Mastodon, which tells every server it knows
    delete = mastodon.delete_account("mallory", hospital.now())
    await delivered_and_done(hospital, mastodon, delete, hospital.base_url + "/inbox")
    # Then her reply is a tombstone, her mark is gone and she belongs to no group here
    reply = await post_by_ap_id(hospital, create["object"]["id"])
    assert reply is not None and reply.deleted_at is not None and reply.source == ""
    assert await helpful_marks(hospital) == 0
    assert await count(hospital, select(func.count()).select_from(Membership)) == 1  # nurse
    text = await page_text(scene.thread_url)
    assert "glucose tablets" not in text and "mentions a severe hypo" not in text
    assert "This post was deleted." in text
    # And what this node kept of her profile is emptied (her name, her "about", her page)
    async with hospital.running.node.transaction() as session:
        member = (
            await session.execute(
                select(Member).where(Member.actor_iri == mastodon.actor("mallory"))
            )
        ).scalar_one()
    assert (member.display_name, member.bio, member.profile_url) == ("mallory", "", None)


async def test_an_account_deletion_does_not_publish_who_belonged_to_the_group(
    scene: Scene,
) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory follows the group and never wrote in it
    # When she deletes her account
    delete = mastodon.delete_account("mallory", hospital.now())
    await delivered_and_done(hospital, mastodon, delete, hospital.base_url + "/inbox")
    # Then she has left, and the group's public outbox says nothing of her: announcing her
    # Delete there would tell anyone that she was in a health group
    assert await count(hospital, select(func.count()).select_from(Membership)) == 1  # nurse
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            hospital.group_iri + "/outbox", headers={"Accept": "application/activity+json"}
        ) as response,
    ):
        outbox = await response.json(content_type=None)
    assert mastodon.actor("mallory") not in json.dumps(outbox)


# ---------------------------------------------------------------- favourites and boosts


async def test_a_mastodon_favourite_counts_as_helpful_and_its_undo_takes_it_back(
    scene: Scene,
) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory follows the group
    # When she favourites nurse's opening post: a Like sent to nurse's own inbox
    like = mastodon.like("mallory", scene.page_iri)
    await delivered_and_done(hospital, mastodon, like, f"{hospital.base_url}/u/nurse/inbox")
    # Then the post has one helpful mark, which readers see
    assert await helpful_marks(hospital) == 1
    assert "1 found this helpful" in await page_text(scene.thread_url)
    # When she takes the favourite back: Undo embedding the Like
    undo = mastodon.undo_like("mallory", like)
    await delivered_and_done(hospital, mastodon, undo, f"{hospital.base_url}/u/nurse/inbox")
    # Then the mark is gone
    assert await helpful_marks(hospital) == 0
    assert "found this helpful" not in await page_text(scene.thread_url)


async def test_a_mastodon_boost_and_its_undo_are_accepted_and_ignored(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon

    # FEDERATION.md: an Announce is used only when its actor is a remote group someone here
    # follows; a person's boost shares a post with their own followers and changes nothing here.
    async def totals() -> tuple[int, ...]:
        return tuple(
            [
                await count(hospital, select(func.count()).select_from(model))
                for model in (Thread, Post, Reaction, Delivery)
            ]
        )

    before = await totals()
    # When mallory boosts nurse's thread, then undoes the boost
    announce = mastodon.announce("mallory", scene.page_iri, scene.nurse_iri, hospital.now())
    await delivered_and_done(hospital, mastodon, announce, hospital.base_url + "/inbox")
    undo = mastodon.undo_announce("mallory", announce)
    await delivered_and_done(hospital, mastodon, undo, hospital.base_url + "/inbox")
    # Then both were accepted and processed, and nothing was created, marked or sent
    assert await totals() == before


# ---------------------------------------------------------------- profile updates


async def test_a_mastodon_profile_update_changes_the_name_shown(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory's reply shows her name
    await reply_with_warning(scene)
    assert "Mallory" in await page_text(scene.thread_url)
    fetches = len(mastodon.gets("/users/mallory"))
    # When she changes her display name and Mastodon sends Update{Person}
    mastodon.display_names["mallory"] = "Mal (she/her)"
    update = mastodon.update_person("mallory", hospital.now())
    await delivered_and_done(hospital, mastodon, update, hospital.base_url + "/inbox")
    # Then the node fetched her actor again (the embedded copy is not trusted)
    assert len(mastodon.gets("/users/mallory")) == fetches + 1
    # And readers see the new name on her reply
    assert "Mal (she/her)" in await page_text(scene.thread_url)


async def test_a_mastodon_key_rotation_is_learnt_from_its_update(scene: Scene) -> None:
    hospital, mastodon = scene.hospital, scene.mastodon
    # Given mallory's key was rotated (tootctl accounts rotate): Mastodon now publishes the new
    # key and sends Update{Person} signed with the old one (sign_with: in request.rb)
    old_key = mastodon.keys["mallory"]
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mastodon.keys["mallory"] = new_key
    update = mastodon.update_person("mallory", hospital.now())
    # When the Update arrives signed with the key the node knows
    answer = await deliver(hospital, mastodon, update, hospital.base_url + "/inbox", key=old_key)
    assert answer.status == 202, answer
    assert await eventually(lambda: processed(hospital, update["id"]), "the Update") == "done"
    # Then the node holds her new key
    async with hospital.running.node.transaction() as session:
        stored = await session.get(RemoteKey, mastodon.key_id("mallory"))
    assert stored is not None and stored.public_pem == public_pem(new_key)
    # And what she signs with it from now on is accepted and applied
    like = mastodon.like("mallory", scene.page_iri)
    await delivered_and_done(hospital, mastodon, like, f"{hospital.base_url}/u/nurse/inbox")
    assert await helpful_marks(hospital) == 1


async def test_the_content_type_mastodon_signs_is_bound_by_the_signature(
    hospital: Hospital, remote: MastodonServer
) -> None:
    # Given a Follow signed as Mastodon signs it, over content-type among other headers
    follow = remote.follow("mallory", hospital.group_iri)
    body = json.dumps(follow, separators=(",", ":")).encode()
    headers = mastodon_headers(
        url=hospital.group_inbox, body=body, key=remote.keys["mallory"],
        key_id=remote.key_id("mallory"), now=hospital.now(), origin=remote.base_url,
    )  # fmt: skip
    # When it arrives with another Content-Type than the one signed
    headers["Content-Type"] = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
    answer = await post(hospital.group_inbox, body, headers)
    # Then the signature does not verify, and nothing is kept
    assert_unverified(answer, "does not verify")
    assert await remote_memberships(hospital) == 0
