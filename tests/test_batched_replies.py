"""The inbox worker's fast path (federation/replies.py), over real HTTP into a real node.

A batch mixes plain replies that the fast path settles together with replies that a rule
refuses or that cannot be applied yet. Whatever the fast path does not settle goes through the
per-item path in its place: each bad reply fails or waits for a retry alone, with the reason
the per-item path gives (checked by running that path itself on the same activity), and each
good reply is stored and announced exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import event, func, select, text

from federation.processing import Rejected, Retry
from node import groups, membership, posts
from node.policy import Viewer, viewer_for
from node.storage.models import InboxItem, Member, OutboxActivity, Post
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    PUBLIC,
    FakeRemote,
    Hospital,
    at_once,
    count,
    deliveries_settled,
    follow,
    join,
    post_signed,
)


@dataclass
class Scene:
    hospital: Hospital
    remote: FakeRemote
    thread_iri: str  # a thread of the group; its opening post is the nurse's
    deleted_iri: str  # a thread whose opening post the nurse deleted


@pytest.fixture
async def scene(hospital: Hospital, remote: FakeRemote) -> AsyncIterator[Scene]:
    """mallory and trent follow the public group, trent is then banned; the group has a
    thread, and a thread whose opening post was deleted. The inbox worker is stopped: the
    tests drain the inbox queue themselves, so that everything they send is one batch."""
    await join(hospital, remote)
    answer = await post_signed(
        hospital, remote, follow(remote, "trent", hospital.group_iri), signer="trent"
    )
    assert answer.status == 202, answer
    await eventually(lambda: at_once(remote.posted("Accept", "trent")), "the Accept at trent")
    node = hospital.running.node
    now = hospital.now()
    async with node.transaction() as session:
        nurse = (
            await session.execute(select(Member).where(Member.username == "nurse"))
        ).scalar_one()
        view = await groups.view_group(session, "t1d", viewer_for(nurse.id, nurse.role))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Night lows",
            draft=posts.Draft("Lows at night since the new pump."), now=now,
        )  # fmt: skip
        gone = await posts.start_thread(
            session, node.settings.limits, view, title="Old question",
            draft=posts.Draft("Soon deleted."), now=now,
        )  # fmt: skip
        opening = await posts.first_post(session, gone.id)
        await posts.delete_post(session, Viewer(nurse.id), post_id=opening.id, now=now)
        await membership.ban(session, view, f"trent@{urlsplit(remote.base_url).netloc}", now)
    await hospital.running.federation.inbox_worker.stop()
    base = hospital.base_url
    yield Scene(hospital, remote, f"{base}/t/{thread.id}", f"{base}/t/{gone.id}")


def reply(
    scene: Scene, name: str, in_reply_to: str, text: str, note_id: str | None = None
) -> dict[str, Any]:
    """A Create{Note} replying to `in_reply_to`, shaped as Mastodon sends it to a group."""
    actor = scene.remote.actor(name)
    note = note_id or f"{actor}/statuses/{uuid.uuid4().hex}"
    group = scene.hospital.group_iri
    return {
        "@context": AS2,
        "id": f"{note}/activity/{uuid.uuid4().hex[:8]}",
        "type": "Create",
        "actor": actor,
        "to": [PUBLIC],
        "cc": [group],
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": actor,
            "inReplyTo": in_reply_to,
            "content": f"<p>{text}</p>",
            "to": [PUBLIC],
            "cc": [group],
            "audience": group,
        },
    }


async def send(scene: Scene, *activities: dict[str, Any]) -> None:
    for activity in activities:
        signer = activity["actor"].rsplit("/", 1)[-1]
        answer = await post_signed(scene.hospital, scene.remote, activity, signer=signer)
        assert answer.status == 202, answer


@dataclass
class Outcome:
    state: str
    attempts: int
    error: str


async def outcomes(scene: Scene) -> dict[str, Outcome]:
    async with scene.hospital.running.node.transaction() as session:
        rows = await session.execute(
            select(InboxItem.activity_id, InboxItem.state, InboxItem.attempts, InboxItem.error)
        )
        return {row[0]: Outcome(row[1], row[2], row[3]) for row in rows.all()}


async def per_item_reason(scene: Scene, activity_id: str) -> str:
    """What the per-item path (Processor.process) says now of the activity as it was
    stored, in a transaction that is rolled back."""
    running = scene.hospital.running
    processor = running.federation.inbox_queue.processor
    async with running.node.sessions() as session:
        body = (
            await session.execute(
                select(InboxItem.body).where(InboxItem.activity_id == activity_id)
            )
        ).scalar_one()
        try:
            await processor.process(session, json.loads(body), scene.hospital.now())
        except (Rejected, Retry) as reason:
            return str(reason)
        finally:
            await session.rollback()
    return ""


async def stored(scene: Scene, note_id: str) -> int:
    return await count(
        scene.hospital, select(func.count()).select_from(Post).where(Post.ap_id == note_id)
    )


async def announced(scene: Scene) -> list[str]:
    """The ids of the activities the group announced, one entry per Announce stored."""
    async with scene.hospital.running.node.transaction() as session:
        bodies = await session.execute(
            select(OutboxActivity.body).where(OutboxActivity.type == "Announce")
        )
        return [
            inner["id"]
            for inner in (json.loads(body)["object"] for body in bodies.scalars())
            if isinstance(inner, dict)
        ]


class Inserts:
    """Counts the INSERT statements into posts that reach the database (an observer of
    the engine; nothing is changed)."""

    def __init__(self, scene: Scene) -> None:
        self.engine = scene.hospital.running.node.engine.sync_engine
        self.statements = 0

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO POSTS"):
            self.statements += 1

    def __enter__(self) -> Inserts:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


async def test_a_mixed_batch_settles_good_replies_together_and_bad_ones_alone(
    scene: Scene,
) -> None:
    # Given a reply of mallory's that is already here
    earlier = reply(scene, "mallory", scene.thread_iri, "Earlier")
    await send(scene, earlier)
    await scene.hospital.running.federation.inbox_queue.drain()
    assert (await outcomes(scene))[earlier["id"]].state == "done"

    # When one batch brings good replies, and among them: a reply by trent (banned), one to
    # the deleted post, a second Create of a Note that came earlier, one of a Note in this
    # very batch, one to a post that is not here, and one answering a reply of this batch
    first = reply(scene, "mallory", scene.thread_iri, "First")
    second = reply(scene, "mallory", scene.thread_iri, "Second")
    banned = reply(scene, "trent", scene.thread_iri, "From a banned member")
    to_deleted = reply(scene, "mallory", scene.deleted_iri, "To a deleted post")
    again_earlier = reply(scene, "mallory", scene.thread_iri, "Earlier", earlier["object"]["id"])
    again_first = reply(scene, "mallory", scene.thread_iri, "First", first["object"]["id"])
    unknown = f"{scene.remote.actor('mallory')}/statuses/never-arrived"
    to_unknown = reply(scene, "mallory", unknown, "To a post not here")
    on_first = reply(scene, "mallory", first["object"]["id"], "Answering the first")
    third = reply(scene, "mallory", scene.thread_iri, "Third")
    batch = [first, second, banned, to_deleted, again_earlier, again_first, to_unknown,
             on_first, third]  # fmt: skip
    await send(scene, *batch)
    with Inserts(scene) as inserts:
        handled = await scene.hospital.running.federation.inbox_queue.drain()
    assert handled == len(batch)

    # Then the good replies are stored once each; the plain ones with one INSERT together,
    # the one answering a reply of the same batch afterwards, on its own
    for good in (first, second, third, on_first, earlier):
        assert await stored(scene, good["object"]["id"]) == 1, good["object"]["content"]
    assert inserts.statements == 2
    settled = await outcomes(scene)
    for good in (first, second, third, on_first, again_earlier, again_first):
        assert settled[good["id"]] == Outcome("done", 0, ""), good["object"]["content"]

    # And each bad one failed, or waits for its retry, alone, for the per-item path's reason
    assert settled[banned["id"]].state == "failed"
    assert "Only active members of this group can reply" in settled[banned["id"]].error
    assert settled[to_deleted["id"]].state == "failed"
    assert "has been deleted" in settled[to_deleted["id"]].error
    assert settled[to_unknown["id"]].state == "queued"
    assert settled[to_unknown["id"]].attempts == 1
    assert settled[to_unknown["id"]].error == "the post this replies to is not here yet"
    for bad in (banned, to_deleted, to_unknown):
        assert settled[bad["id"]].error == await per_item_reason(scene, bad["id"])
    assert await stored(scene, banned["object"]["id"]) == 0
    assert await stored(scene, to_deleted["object"]["id"]) == 0

    # And the group announced each accepted reply once, verbatim, and nothing else of them
    shown = await announced(scene)
    for good in (earlier, first, second, third, on_first):
        assert shown.count(good["id"]) == 1, good["object"]["content"]
    for other in (banned, to_deleted, again_earlier, again_first, to_unknown):
        assert other["id"] not in shown
    await eventually(lambda: deliveries_settled(scene.hospital), "the deliveries settled")
    at_mallory = [
        document["object"]["id"]
        for document in scene.remote.posted("Announce", "mallory")
        if isinstance(document["object"], dict)
    ]
    for good in (earlier, first, second, third, on_first):
        assert at_mallory.count(good["id"]) == 1, good["object"]["content"]


async def test_a_reply_the_database_refuses_fails_alone_and_the_others_are_kept(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the database refuses to store one particular Note (a trigger, standing in for
    # any fault of the database with one row)
    node = scene.hospital.running.node
    poisoned = reply(scene, "mallory", scene.thread_iri, "The database refuses this one")
    note = poisoned["object"]["id"]
    sqlite = node.engine.dialect.name == "sqlite"
    async with node.transaction() as session:
        if sqlite:
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON posts "
                    f"WHEN NEW.ap_id = '{note}' BEGIN SELECT RAISE(ABORT, 'refused here'); END"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.ap_id = '{note}' THEN RAISE EXCEPTION 'refused here'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON posts "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_one()"
                )
            )
    try:
        # When a batch of plain replies holds that Note among good ones
        good = [reply(scene, "mallory", scene.thread_iri, f"Good {n}") for n in range(4)]
        await send(scene, good[0], good[1], poisoned, good[2], good[3])
        await scene.hospital.running.federation.inbox_queue.drain()

        # Then the run's statements failed together, and its items went one by one
        assert "processing 5 replies together failed" in caplog.text
        # And the good ones are stored and announced once each
        settled = await outcomes(scene)
        shown = await announced(scene)
        for kept in good:
            assert settled[kept["id"]] == Outcome("done", 0, "")
            assert await stored(scene, kept["object"]["id"]) == 1
            assert shown.count(kept["id"]) == 1
        # And the refused one alone waits for a retry, with the database's reason
        assert settled[poisoned["id"]].state == "queued"
        assert settled[poisoned["id"]].attempts == 1
        assert "refused here" in settled[poisoned["id"]].error
        assert await stored(scene, note) == 0
        assert poisoned["id"] not in shown
    finally:
        async with node.transaction() as session:
            await session.execute(text("DROP TRIGGER refuse_one" + ("" if sqlite else " ON posts")))
            if not sqlite:
                await session.execute(text("DROP FUNCTION refuse_one()"))


async def test_a_reply_by_someone_who_is_no_member_is_refused_as_the_per_item_path_refuses_it(
    scene: Scene, third: FakeRemote
) -> None:
    # Given a person on a third server who never followed the group
    actor = third.actor("mallory")
    note = f"{actor}/statuses/{uuid.uuid4().hex}"
    stranger = reply(scene, "mallory", scene.thread_iri, "Who am I?")
    stranger["id"], stranger["actor"] = f"{note}/activity", actor
    stranger["object"] = {**stranger["object"], "id": note, "attributedTo": actor}
    known = reply(scene, "mallory", scene.thread_iri, "A member's reply")
    # When her reply arrives in one batch with a member's
    await send(scene, known)
    answer = await post_signed(scene.hospital, third, stranger)
    assert answer.status == 202, answer
    await scene.hospital.running.federation.inbox_queue.drain()
    # Then the member's is kept, and hers is refused for the per-item path's reason
    settled = await outcomes(scene)
    assert settled[known["id"]] == Outcome("done", 0, "")
    assert settled[stranger["id"]].state == "failed"
    assert "Only active members of this group can reply" in settled[stranger["id"]].error
    assert settled[stranger["id"]].error == await per_item_reason(scene, stranger["id"])
    assert await stored(scene, note) == 0
