"""Forgery attempts over real HTTP against a real node: each is refused and changes nothing.

"Changes nothing" means: no post, no membership, no reaction, no inbox item beyond what the
test set up, and no outgoing activity or delivery caused. The node under test is the
"hospital" of tests/peers.py (a development node on loopback); the attackers are FakeRemotes.

Already covered elsewhere, and not repeated here (tests/test_federation_inbox.py): a stale
Date, a keyId on a third server, a key owned by someone else (for a Follow), a body swapped
with the Digest left as signed, an activity id on another origin, an embedded object from
another origin (fetched, not trusted), the 1 MiB cap. Address filtering on a node that is not a
development node is in tests/test_ssrf.py (an actor URL on a name resolving to 127.0.0.1 there).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from node import posts
from node.groups import create_group, view_group
from node.policy import Viewer
from node.storage.models import (
    Delivery,
    InboxItem,
    Member,
    Membership,
    OutboxActivity,
    Post,
    Reaction,
    Thread,
)
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    AS2_JSON,
    PUBLIC,
    SECURITY_V1,
    Answer,
    FakeRemote,
    Hospital,
    assert_nothing_kept,
    assert_refused,
    assert_unverified,
    at_once,
    b64,
    cavage_headers,
    count,
    encode,
    follow,
    inbox_items,
    join,
    post,
    post_signed,
    processed,
    public_pem,
    remote_memberships,
    signed,
)

# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Snapshot:
    """Everything a forgery could change, counted."""

    inbox_items: int
    memberships: int
    posts: int
    threads: int
    reactions: int
    outbox_activities: int
    deliveries: int
    posts_sent: int  # POSTs the node made, as its client recorded them


async def snapshot(hospital: Hospital) -> Snapshot:
    def rows(model: Any) -> Any:
        return select(func.count()).select_from(model)

    return Snapshot(
        inbox_items=await inbox_items(hospital),
        memberships=await count(hospital, rows(Membership)),
        posts=await count(hospital, rows(Post)),
        threads=await count(hospital, rows(Thread)),
        reactions=await count(hospital, rows(Reaction)),
        outbox_activities=await count(hospital, rows(OutboxActivity)),
        deliveries=await count(hospital, rows(Delivery)),
        posts_sent=sum(1 for r in hospital.running.recorder.requests if r.method == "POST"),
    )


async def outcome(hospital: Hospital, activity_id: str) -> tuple[str, str] | None:
    """(state, error) once the item was tried: done, failed, or queued again to retry."""
    async with hospital.running.node.transaction(reading=True) as session:
        item = (
            await session.execute(select(InboxItem).where(InboxItem.activity_id == activity_id))
        ).scalar_one_or_none()
    if item is None or (item.state == "queued" and item.attempts == 0):
        return None
    return item.state, item.error


async def tried(hospital: Hospital, activity_id: str) -> tuple[str, str]:
    return await eventually(lambda: outcome(hospital, activity_id), f"{activity_id} processed")


async def nurse_id(hospital: Hospital) -> int:
    async with hospital.running.node.transaction(reading=True) as session:
        member = (await session.execute(select(Member).where(Member.username == "nurse"))).scalar()
        assert member is not None
        return member.id


async def local_thread(
    hospital: Hospital, slug: str, title: str, text: str, reply_text: str = ""
) -> tuple[str, str]:
    """nurse starts a thread in one of the node's groups (and replies to it): their IRIs."""
    node = hospital.running.node
    author = await nurse_id(hospital)
    async with node.transaction() as session:
        view = await view_group(session, slug, Viewer(author))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title=title, draft=posts.Draft(text),
            now=node.clock.now(),
        )  # fmt: skip
        reply_iri = ""
        if reply_text:
            answer = await posts.reply(
                session, node.settings.limits, Viewer(author), thread_id=thread.id,
                parent_id=None, draft=posts.Draft(reply_text), now=node.clock.now(),
            )  # fmt: skip
            reply_iri = f"{hospital.base_url}/p/{answer.id}"
    return f"{hospital.base_url}/t/{thread.id}", reply_iri


def create_of(remote: FakeRemote, name: str, obj: Any, group_iri: str) -> dict[str, Any]:
    actor = remote.actor(name)
    return {"@context": AS2, "id": f"{actor}/activities/{uuid.uuid4().hex}", "type": "Create",
            "actor": actor, "object": obj, "to": [PUBLIC], "cc": [group_iri],
            "audience": group_iri}  # fmt: skip


def page_by(remote: FakeRemote, name: str, group_iri: str, text: str) -> dict[str, Any]:
    return {"id": f"{remote.actor(name)}/pages/{uuid.uuid4().hex}", "type": "Page",
            "attributedTo": remote.actor(name), "name": "A title", "content": f"<p>{text}</p>",
            "to": [group_iri, PUBLIC], "audience": group_iri}  # fmt: skip


async def member_joins(hospital: Hospital, remote: FakeRemote, name: str) -> None:
    """A remote person follows the public group and is accepted."""
    accepted_before = len(remote.posted("Accept", name))
    answer = await post_signed(hospital, remote, follow(remote, name, hospital.group_iri),
                               signer=name)  # fmt: skip
    assert answer.status == 202, answer

    async def accepted() -> bool:
        return len(remote.posted("Accept", name)) > accepted_before

    await eventually(accepted, f"the Accept at {name}")


async def quiet_deliveries(hospital: Hospital) -> bool:
    waiting = select(func.count()).select_from(Delivery)
    waiting = waiting.where(Delivery.state.in_(("queued", "in_flight")))
    waiting = waiting.where(Delivery.next_attempt_at <= hospital.now())
    return await count(hospital, waiting) == 0


# ---------------------------------------------------------------- a signature for someone else


@pytest.mark.parametrize("claimed", ["same server", "third server"])
async def test_a_valid_signature_by_one_actor_cannot_speak_for_another(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote, claimed: str
) -> None:
    # Given mallory and trent are both members of the public group
    await join(hospital, remote)
    await member_joins(hospital, remote, "trent")
    # And a thread in trent's name, by trent on the same server or "mallory" on a third one
    victim, victim_server = ("trent", remote) if claimed == "same server" else ("mallory", third)
    create = create_of(
        victim_server, victim, page_by(victim_server, victim, hospital.group_iri, "forged"),
        hospital.group_iri,
    )  # fmt: skip
    await eventually(lambda: quiet_deliveries(hospital), "the Accepts delivered")
    before = await snapshot(hospital)
    # When mallory signs it with her own, valid key and POSTs it
    body = encode(create)
    answer = await post(hospital.group_inbox, body, signed(hospital, remote, body))
    # Then it is refused: the key is not the claimed actor's
    reason = (
        "someone other than the actor"
        if claimed == "same server"
        else "signing key is not on the actor's server"
    )
    assert_refused(answer, 401, reason)
    # And nothing changed, nothing was sent, and the third server was never asked
    assert await snapshot(hospital) == before
    assert third.received == []


# ---------------------------------------------------------------- embedded copies


@pytest.mark.parametrize("kind", ["Create", "Update"])
@pytest.mark.parametrize("which", ["thread", "reply"])
async def test_an_embedded_copy_of_one_of_our_own_posts_is_not_taken(
    hospital: Hospital, remote: FakeRemote, kind: str, which: str
) -> None:
    # Given a thread and a reply by nurse in the public group, and mallory a member
    thread_iri, reply_iri = await local_thread(
        hospital, "t1d", "Pump settings", "The real text", "The real reply"
    )
    await join(hospital, remote)
    await eventually(lambda: quiet_deliveries(hospital), "the node's own deliveries")
    before = await snapshot(hospital)
    target = thread_iri if which == "thread" else reply_iri
    # When mallory sends a Create (or Update) embedding "that post", rewritten, as hers
    forged = {"id": target, "type": "Page" if which == "thread" else "Note",
              "attributedTo": remote.actor("mallory"), "name": "Forged title",
              "content": "<p>Forged text</p>", "to": [hospital.group_iri, PUBLIC],
              "audience": hospital.group_iri}  # fmt: skip
    document = {**create_of(remote, "mallory", forged, hospital.group_iri), "type": kind}
    answer = await post_signed(hospital, remote, document)
    assert answer.status == 202, answer
    # Then processing refuses it: our own objects are never taken from another server
    state, error = await tried(hospital, document["id"])
    assert (state, error) == ("failed", "our own objects are not taken from others")
    # And the node did not fetch its own IRI, and nothing changed or was sent
    assert not [r for r in hospital.running.recorder.requests if r.url.startswith(target)]
    after = await snapshot(hospital)
    assert after == replace(before, inbox_items=before.inbox_items + 1)
    async with hospital.running.node.transaction(reading=True) as session:
        texts = [
            (p.source, p.content_html) for p in (await session.execute(select(Post))).scalars()
        ]
        titles = list((await session.execute(select(Thread.title))).scalars())
    assert not [t for t in texts if "Forged" in t[0] + t[1]], texts
    assert titles == ["Pump settings"]


@pytest.mark.parametrize("served", ["another author", "another id"])
async def test_an_object_fetched_from_its_origin_must_be_what_was_claimed(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote, served: str
) -> None:
    # Given mallory is a member, and a third server serves a Note at some address
    await join(hospital, remote)
    path = f"/notes/{uuid.uuid4().hex}"
    genuine = {"@context": AS2, "id": third.base_url + path, "type": "Note",
               "attributedTo": third.actor("someone"), "content": "<p>Not mallory's</p>",
               "to": [PUBLIC], "audience": hospital.group_iri}  # fmt: skip
    if served == "another id":
        # ... which claims to be another object than the one asked for
        genuine |= {"id": third.base_url + "/notes/other", "attributedTo": remote.actor("mallory")}
    third.documents[path] = genuine
    # When mallory sends a Create embedding a copy that says it is hers
    claimed = {**genuine, "id": third.base_url + path, "attributedTo": remote.actor("mallory")}
    claimed.pop("@context")
    document = create_of(remote, "mallory", claimed, hospital.group_iri)
    await eventually(lambda: quiet_deliveries(hospital), "the Accept delivered")
    before = await snapshot(hospital)
    answer = await post_signed(hospital, remote, document)
    assert answer.status == 202, answer
    # Then the node fetched it from its origin, and refused what it got
    state, error = await tried(hospital, document["id"])
    expected = (
        "the object's author is not the activity's actor"
        if served == "another author"
        else "the fetched object has another id"
    )
    assert (state, error) == ("failed", expected)
    assert third.gets(path)
    after = await snapshot(hospital)
    assert after == replace(before, inbox_items=before.inbox_items + 1)


# ---------------------------------------------------------------- a remote group of our own


CIRCLE_PATH = "/groups/circle"


@dataclass
class Circle:
    """A remote group on the FakeRemote that nurse follows; it signs with trent's key."""

    iri: str
    key: rsa.RSAPrivateKey

    @property
    def key_id(self) -> str:
        return self.iri + "#main-key"

    def announce(self, obj: Any) -> dict[str, Any]:
        return {"@context": AS2, "id": f"{self.iri}/activities/{uuid.uuid4().hex}",
                "type": "Announce", "actor": self.iri, "object": obj, "to": [PUBLIC],
                "cc": [self.iri + "/followers"]}  # fmt: skip

    def inner(self, kind: str, actor: str, obj: Any) -> dict[str, Any]:
        return {"id": f"{self.iri}/activities/{uuid.uuid4().hex}", "type": kind, "actor": actor,
                "object": obj, "to": [PUBLIC], "cc": [self.iri], "audience": self.iri}  # fmt: skip


async def followed_circle(hospital: Hospital, remote: FakeRemote) -> Circle:
    """nurse follows a remote group through the web form (her membership waits for an Accept,
    which is enough for the node to read what the group announces)."""
    iri = remote.base_url + CIRCLE_PATH
    key = remote.keys["trent"]
    remote.documents[CIRCLE_PATH] = {
        "@context": [AS2, SECURITY_V1], "id": iri, "type": "Group",
        "preferredUsername": "circle", "name": "Circle", "inbox": iri + "/inbox",
        "publicKey": {"id": iri + "#main-key", "owner": iri, "publicKeyPem": public_pem(key)},
    }  # fmt: skip
    browser = await hospital.running.browser()
    await browser.login("nurse")
    page = await browser.post("/groups/follow", {"handle": iri})
    assert page.status == 200, page.text[:300]
    return Circle(iri, key)


async def post_as_circle(hospital: Hospital, circle: Circle, document: dict[str, Any]) -> Answer:
    body = encode(document)
    url = hospital.base_url + "/inbox"
    headers = cavage_headers(url=url, body=body, key=circle.key, key_id=circle.key_id,
                             now=hospital.now())  # fmt: skip
    return await post(url, body, headers)


PRIVATE_SECRETS = ("hush", "Quiet condition", "Private matters", "Only for us", "Our reply")


def announces_of_a_private_post(
    circle: Circle, remote: FakeRemote, page: str, reply: str
) -> dict[str, dict[str, Any]]:
    mallory = remote.actor("mallory")
    copy = {"id": page, "type": "Page", "attributedTo": mallory, "name": "Taken over",
            "content": "<p>Taken over</p>", "to": [PUBLIC], "audience": circle.iri}  # fmt: skip
    return {
        "the Page by id": circle.announce(page),
        "the reply by id": circle.announce(reply),
        "a copy of the Page": circle.announce(copy),
        "Create of a copy": circle.announce(circle.inner("Create", mallory, copy)),
        "Update of a copy": circle.announce(circle.inner("Update", mallory, copy)),
        "Like of the reply": circle.announce(circle.inner("Like", mallory, reply)),
        "Delete of the Page": circle.announce(circle.inner("Delete", mallory, page)),
        "Delete of the reply": circle.announce(circle.inner("Delete", mallory, reply)),
        "a person's Announce": {
            **circle.announce(page),
            "actor": mallory,
            "id": f"{mallory}/activities/{uuid.uuid4().hex}",
        },
    }


async def test_an_announce_of_our_private_groups_posts_reveals_and_accepts_nothing(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a private group on the node, with a thread and a reply by nurse
    node = hospital.running.node
    async with node.transaction() as session:
        hush = await create_group(
            session, node.settings.limits, owner_id=await nurse_id(hospital), slug="hush",
            name="Quiet condition circle", private=True, now=node.clock.now(),
        )  # fmt: skip
    page, reply = await local_thread(
        hospital, hush.slug, "Private matters", "Only for us", "Our reply"
    )
    # And a remote group that nurse follows, whose announces the node therefore reads
    circle = await followed_circle(hospital, remote)
    await eventually(lambda: quiet_deliveries(hospital), "the Follow delivered")
    before = await snapshot(hospital)
    # When that group (and a person) announce the private posts in every shape
    shapes = announces_of_a_private_post(circle, remote, page, reply)
    for label, document in shapes.items():
        if label == "a person's Announce":
            answer = await post_signed(hospital, remote, document, url=hospital.base_url + "/inbox")
        else:
            answer = await post_as_circle(hospital, circle, document)
        assert answer.status == 202, (label, answer)
    # Then each is refused or ignored: none is applied
    results = {label: await tried(hospital, doc["id"]) for label, doc in shapes.items()}
    assert results["a person's Announce"] == ("done", ""), results  # not a followed group
    # A bare Page whose id is already here is taken as a redelivery of that thread: ignored.
    assert results["a copy of the Page"] == ("done", ""), results
    for label in ("the Page by id", "the reply by id", "Create of a copy", "Update of a copy"):
        assert results[label] == ("failed", "our own objects are not taken from others"), label
    for label in ("Like of the reply", "Delete of the Page", "Delete of the reply"):
        assert results[label] == (
            "failed", "a group announced something about another group's post"
        ), label  # fmt: skip
    # And nothing changed: the posts are as written, not deleted, not marked, nothing new
    after = await snapshot(hospital)
    assert after == replace(before, inbox_items=before.inbox_items + len(shapes))
    async with node.transaction(reading=True) as session:
        rows = list((await session.execute(select(Post).order_by(Post.created_at))).scalars())
    assert [(p.source, p.deleted_at) for p in rows] == [("Only for us", None), ("Our reply", None)]
    # And the node fetched nothing of its own, and nothing it sent names the private group
    assert not [
        r for r in hospital.running.recorder.requests if r.url.startswith(hospital.base_url)
    ]
    for request in hospital.running.recorder.requests:
        blob = request.url + request.body.decode("utf-8", "replace")
        assert not [s for s in PRIVATE_SECRETS if s in blob], (request.url, blob[:300])
    # And asking for the private posts from outside still finds nothing
    async with aiohttp.ClientSession() as session:
        for iri in (page, reply):
            async with session.get(iri, headers={"Accept": AS2_JSON}) as response:
                assert response.status == 404, iri


# ---------------------------------------------------------------- followers-only objects


def status_answer(status: int) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "sign in to see this"}, status=status)

    return answer


def followers_only(circle: Circle, author: str, kind: str = "Page") -> dict[str, Any]:
    return {"id": f"{circle.iri}/post/{uuid.uuid4().hex}", "type": kind, "attributedTo": author,
            "name": "For followers", "content": "<p>For followers only</p>",
            "to": [circle.iri + "/followers"], "cc": [], "audience": circle.iri}  # fmt: skip


@pytest.mark.parametrize(
    "shape",
    [
        "embedded Page",
        "embedded Create{Note}",
        "by id, served followers-only",
        "by id, refused to us (403)",
    ],
)
async def test_a_followers_only_object_announced_by_a_followed_group_is_not_kept(
    hospital: Hospital, remote: FakeRemote, scripted: FakeRemote, shape: str
) -> None:
    # Given a remote group nurse follows
    circle = await followed_circle(hospital, remote)
    await eventually(lambda: quiet_deliveries(hospital), "the Follow delivered")
    before = await snapshot(hospital)
    mallory = remote.actor("mallory")
    note = followers_only(circle, mallory)
    # When it announces an object addressed to its followers only (or one its server will
    # not show us: the usual answer of a server with authorized fetch to a stranger)
    if shape == "embedded Page":
        document = circle.announce(note)
    elif shape == "embedded Create{Note}":
        document = circle.announce(circle.inner("Create", mallory, {**note, "type": "Note"}))
    elif shape == "by id, served followers-only":
        served = {"@context": AS2, **note, "id": remote.base_url + "/post/followers"}
        remote.documents["/post/followers"] = served
        document = circle.announce(remote.base_url + "/post/followers")
    else:
        scripted.routes["/post/hidden"] = status_answer(403)
        document = circle.announce(scripted.base_url + "/post/hidden")
    answer = await post_as_circle(hospital, circle, document)
    assert answer.status == 202, answer
    # Then it fails for good, and nothing is kept or sent
    state, error = await tried(hospital, document["id"])
    if shape.startswith("by id, refused"):
        assert "403" in error
    else:
        assert error == "only public posts are accepted into a group"
    assert state == "failed", (state, error)
    after = await snapshot(hospital)
    assert after == replace(before, inbox_items=before.inbox_items + 1)


async def test_a_followers_only_post_sent_to_our_group_is_not_published(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory is a member of the public group
    await join(hospital, remote)
    await eventually(lambda: quiet_deliveries(hospital), "the Accept delivered")
    before = await snapshot(hospital)
    # When she sends it a Create of a Note addressed to her followers and the group only
    note = {"id": f"{remote.actor('mallory')}/notes/{uuid.uuid4().hex}", "type": "Note",
            "attributedTo": remote.actor("mallory"), "content": "<p>Just for my followers</p>",
            "to": [remote.actor("mallory") + "/followers"], "cc": [hospital.group_iri],
            "audience": hospital.group_iri}  # fmt: skip
    document = create_of(remote, "mallory", note, hospital.group_iri) | {
        "to": note["to"],
        "cc": note["cc"],
    }
    answer = await post_signed(hospital, remote, document)
    assert answer.status == 202, answer
    # Then it never becomes a public thread, and the group announces nothing
    assert await tried(hospital, document["id"]) == (
        "failed", "only public posts are accepted into a group"
    )  # fmt: skip
    after = await snapshot(hospital)
    assert after == replace(before, inbox_items=before.inbox_items + 1)


# ---------------------------------------------------------------- replays


@dataclass(frozen=True)
class Captured:
    """A signed request exactly as it went over the wire."""

    url: str
    body: bytes
    headers: dict[str, str]

    async def replay(self, url: str | None = None) -> Answer:
        return await post(url or self.url, self.body, self.headers)


def capture(hospital: Hospital, remote: FakeRemote, document: dict[str, Any]) -> Captured:
    body = encode(document)
    return Captured(hospital.group_inbox, body, signed(hospital, remote, body))


async def a_thread_by_mallory(hospital: Hospital, remote: FakeRemote) -> tuple[Captured, str]:
    """mallory, a member, starts a thread; the request is kept as an eavesdropper would."""
    await join(hospital, remote)
    create = create_of(
        remote, "mallory", page_by(remote, "mallory", hospital.group_iri, "Once only"),
        hospital.group_iri,
    )  # fmt: skip
    captured = capture(hospital, remote, create)
    answer = await captured.replay()
    assert answer.status == 202, answer
    state = await eventually(lambda: processed(hospital, create["id"]), "the Create processed")
    assert state == "done"
    await eventually(lambda: quiet_deliveries(hospital), "the group's announces delivered")
    return captured, create["id"]


async def test_a_request_replayed_after_the_date_window_is_refused(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a thread mallory started, whose signed request was captured
    captured, _ = await a_thread_by_mallory(hospital, remote)
    before = await snapshot(hospital)
    assert before.threads == 1
    # When the captured request is POSTed again, unchanged, 61 minutes later
    hospital.running.node.clock.advance(timedelta(minutes=61))
    answer = await captured.replay()
    # Then its date is refused, and nothing changes
    assert_refused(answer, 401, "date")
    assert await snapshot(hospital) == before


@pytest.mark.parametrize("minutes_later", [0, 59])
async def test_a_request_replayed_inside_the_window_is_acknowledged_and_applied_once(
    hospital: Hospital, remote: FakeRemote, minutes_later: int
) -> None:
    # Given a thread mallory started, whose signed request was captured and processed
    captured, create_id = await a_thread_by_mallory(hospital, remote)
    before = await snapshot(hospital)
    # When the captured request is POSTed again, unchanged, within the hour
    hospital.running.node.clock.advance(timedelta(minutes=minutes_later))
    answer = await captured.replay()
    # Then it is acknowledged (a redelivery), but nothing is stored, applied or sent again
    assert answer.status == 202, answer
    await eventually(lambda: quiet_deliveries(hospital), "the queues to settle")
    assert await snapshot(hospital) == before
    this_one = select(func.count()).select_from(InboxItem).where(InboxItem.activity_id == create_id)
    assert await count(hospital, this_one) == 1


async def test_a_follow_replayed_after_its_undo_does_not_rejoin(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory followed the group (the request was captured), then left it
    document = follow(remote, "mallory", hospital.group_iri)
    captured = capture(hospital, remote, document)
    assert (await captured.replay()).status == 202
    await eventually(lambda: at_once(remote.posted("Accept")), "the Accept at mallory")
    undo = {"@context": AS2, "id": f"{remote.actor('mallory')}/undo/{uuid.uuid4().hex}",
            "type": "Undo", "actor": remote.actor("mallory"), "object": document}  # fmt: skip
    assert (await post_signed(hospital, remote, undo)).status == 202
    await eventually(lambda: processed(hospital, undo["id"]), "the Undo processed")
    assert await remote_memberships(hospital) == 0
    await eventually(lambda: quiet_deliveries(hospital), "the queues to settle")
    before = await snapshot(hospital)
    # When someone replays her captured Follow ten minutes later
    hospital.running.node.clock.advance(timedelta(minutes=10))
    answer = await captured.replay()
    # Then it is acknowledged as a redelivery, and she is not a member again
    assert answer.status == 202, answer
    await eventually(lambda: quiet_deliveries(hospital), "the queues to settle")
    assert await remote_memberships(hospital) == 0
    assert len(remote.posted("Accept")) == 1
    assert await snapshot(hospital) == before


@pytest.mark.parametrize("path", ["/inbox", "/actor/inbox", "/u/nurse/inbox"])
async def test_a_request_replayed_to_another_inbox_is_refused(
    hospital: Hospital, remote: FakeRemote, path: str
) -> None:
    # Given a Follow of the group signed by mallory for the group's inbox, captured
    captured = capture(hospital, remote, follow(remote, "mallory", hospital.group_iri))
    # When it is POSTed, unchanged, to another inbox of the same node
    answer = await captured.replay(hospital.base_url + path)
    # Then the signed request target does not match: refused, nothing kept
    assert_unverified(answer, "does not verify")
    await assert_nothing_kept(hospital)


# ---------------------------------------------------------------- forged key documents


@pytest.mark.parametrize("forgery", ["owner on a third server", "owner does not list the key"])
async def test_a_key_document_that_its_actor_does_not_vouch_for_is_refused(
    hospital: Hospital,
    remote: FakeRemote,
    third: FakeRemote,
    keys: dict[str, rsa.RSAPrivateKey],
    forgery: str,
) -> None:
    # Given a key document on mallory's server, holding a key mallory does not publish
    owner = third.actor("mallory") if forgery == "owner on a third server" else remote.actor(
        "mallory"
    )  # fmt: skip
    key_id = remote.base_url + "/keys/spare"
    remote.documents["/keys/spare"] = {
        "@context": [AS2, SECURITY_V1], "id": key_id, "type": "Key", "owner": owner,
        "publicKeyPem": public_pem(keys["impostor"]),
    }  # fmt: skip
    # When a Follow "by mallory" is signed with that key and POSTed
    body = encode(follow(remote, "mallory", hospital.group_iri))
    headers = signed(hospital, remote, body, key=keys["impostor"], key_id=key_id)
    answer = await post(hospital.group_inbox, body, headers)
    # Then the key is not mallory's: refused, and nothing kept
    reason = (
        "the key's owner is on another server"
        if forgery == "owner on a third server"
        else "is not the key its actor publishes"
    )
    assert_refused(answer, 401, reason)
    assert third.received == []
    await assert_nothing_kept(hospital)


# ---------------------------------------------------------------- redirects to private addresses


PRIVATE_REDIRECTS = {
    "cloud metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "RFC 1918": "http://10.0.0.1/users/mallory",
    "IPv4-mapped RFC 1918": "http://[::ffff:10.0.0.1]/users/mallory",
    "IPv4-mapped metadata": "http://[::ffff:a9fe:a9fe]/latest/",
    "IPv6 unique local": "http://[fd00::1]/users/mallory",
    "IPv6 link-local": "http://[fe80::1]/users/mallory",
}


@pytest.mark.parametrize("target", sorted(PRIVATE_REDIRECTS))
async def test_an_actor_url_redirecting_to_a_private_address_is_not_followed(
    hospital: Hospital, scripted: FakeRemote, target: str
) -> None:
    """Even a development node, which may reach loopback peers, never reaches private ranges."""
    location = PRIVATE_REDIRECTS[target]

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(location)

    scripted.routes["/users/mallory"] = redirect
    # Given a Follow by mallory, whose actor URL redirects to a private address
    body = encode(follow(scripted, "mallory", hospital.group_iri))
    headers = cavage_headers(
        url=hospital.group_inbox, body=body, key=scripted.keys["mallory"],
        key_id=scripted.key_id("mallory"), now=hospital.now(),
    )  # fmt: skip
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the key cannot be had, refused for the address (no connection attempt waits for
    # a timeout)
    assert_unverified(answer, "cannot get the key", "private address")
    assert scripted.gets("/users/mallory"), "the first hop was made"
    # And the node started no request to the private address
    private_host = location.split("//", 1)[1].split("/", 1)[0]
    assert not [r.url for r in hospital.running.recorder.requests if private_host in r.url]
    await assert_nothing_kept(hospital)


# ---------------------------------------------------------------- digests recomputed


@pytest.mark.parametrize(
    "tampering",
    [
        "Digest recomputed for the new body",
        "a matching SHA-512 Digest added",
        "a matching Content-Digest added",
        "Digest replaced by a matching Content-Digest",
    ],
)
async def test_a_body_changed_after_signing_with_a_digest_to_match_is_refused(
    hospital: Hospital, remote: FakeRemote, tampering: str
) -> None:
    # Given a Follow signed by mallory (its Digest covered by the signature)
    signed_body = encode(follow(remote, "mallory", hospital.group_iri))
    headers = signed(hospital, remote, signed_body)
    # And a changed body, with digest headers made to match it
    changed = json.loads(signed_body) | {"id": f"{remote.actor('mallory')}/follows/changed"}
    body = encode(changed)
    sha256 = b64(hashlib.sha256(body).digest())
    if tampering == "Digest recomputed for the new body":
        headers["Digest"] = "SHA-256=" + sha256
    elif tampering == "a matching SHA-512 Digest added":
        headers["Digest"] += ",SHA-512=" + b64(hashlib.sha512(body).digest())
    elif tampering == "a matching Content-Digest added":
        headers["Content-Digest"] = f"sha-256=:{sha256}:"
    else:
        del headers["Digest"]
        headers["Content-Digest"] = f"sha-256=:{sha256}:"
    # When the changed request is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then it is refused, and nothing is kept
    if tampering == "Digest recomputed for the new body":
        assert_unverified(answer, "does not verify")
    elif tampering == "Digest replaced by a matching Content-Digest":
        # The signature covers a Digest header that is no longer there.
        assert_refused(answer, 400, "'digest' is missing")
    else:
        assert_refused(answer, 401, "digest does not match")
    await assert_nothing_kept(hospital)


# ---------------------------------------------------------------- account deletion by proxy


async def test_a_group_announcing_a_persons_account_deletion_erases_nothing(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory, a member of our public group, and a remote group nurse follows
    await join(hospital, remote)
    circle = await followed_circle(hospital, remote)
    await eventually(lambda: quiet_deliveries(hospital), "the Follow and Accept delivered")
    before = await snapshot(hospital)
    # When that group announces "mallory deleted her account" (only she may say so: signed,
    # or served at the Delete's id by her own server, which knows nothing of this one)
    mallory = remote.actor("mallory")
    document = circle.announce(circle.inner("Delete", mallory, mallory))
    answer = await post_as_circle(hospital, circle, document)
    assert answer.status == 202, answer
    state, error = await tried(hospital, document["id"])
    assert state == "failed" and "was not found" in error, (state, error)
    # Then mallory still belongs to the group, and nothing else changed
    after = await snapshot(hospital)
    assert after == replace(before, inbox_items=before.inbox_items + 1)
    async with hospital.running.node.transaction() as session:
        states = (
            await session.execute(
                select(Membership.state)
                .join(Member, Member.id == Membership.member_id)
                .where(Member.actor_iri == mallory)
            )
        ).scalars()
        assert list(states) == ["active"]
