"""Processing never waits on the network inside a write transaction: what an incoming activity
needs from another server is fetched between the inbox worker's transactions.

The remote server checks, while it is being asked, whether the node holds a write transaction
open: on SQLite by trying to take the database's write lock itself, on PostgreSQL by looking
for a transaction that has written and sits idle. A transaction held across the request would
be seen for the whole time the remote takes to answer; short ones come and go.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from typing import Any

from aiohttp import web
from sqlalchemy import func, select, text

from federation.service import Federation
from node.groups import create_group
from node.members import create_member
from node.runtime import NodeContext
from node.storage.models import InboxItem, Post, Reaction
from tests.conftest import NodeFactory
from tests.databases import BACKEND
from tests.federation_harness import eventually, free_port
from tests.peers import (
    AS2,
    PUBLIC,
    FakeRemote,
    Hospital,
    follow,
    join,
    json_answer,
    post_signed,
    processed,
)

SAMPLES = 12
SAMPLE_SECONDS = 0.025
# A local write that waited for a remote fetch would wait until the remote answers: here
# only when the test lets it, or after SLOW_SERVER_SECONDS.
LOCAL_WRITE_SECONDS = 10.0
SLOW_SERVER_SECONDS = 30.0


async def write_transaction_open(hospital: Hospital) -> bool:
    node = hospital.running.node
    if BACKEND == "postgresql":
        async with node.engine.connect() as connection:
            found = await connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
                    " AND state LIKE 'idle in transaction%'"
                )
            )
            return bool(found.scalar())
    path = node.settings.resolved_database_url.split("///", 1)[1]
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):
            raise
        return True
    finally:
        probe.close()


async def test_an_object_is_fetched_with_no_write_transaction_open(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory is a member of the public group, and a Note of hers lives on her server,
    # which, while it is asked for the Note, watches the node's database
    await join(hospital, remote)
    note_path = f"/notes/{uuid.uuid4().hex}"
    note = {
        "@context": AS2,
        "id": remote.base_url + note_path,
        "type": "Note",
        "attributedTo": remote.actor("mallory"),
        "name": "Fetched, not embedded",
        "content": "<p>Served by its origin</p>",
        "to": [hospital.group_iri, PUBLIC],
        "audience": hospital.group_iri,
    }
    held_throughout: list[bool] = []

    async def answer_watching(request: web.Request) -> web.StreamResponse:
        samples = []
        for _ in range(SAMPLES):
            samples.append(await write_transaction_open(hospital))
            await asyncio.sleep(SAMPLE_SECONDS)  # the time a far server takes to answer
        held_throughout.append(all(samples))
        return json_answer(note)

    remote.routes[note_path] = answer_watching

    # When she sends a Create that names the Note by its id only
    create: dict[str, Any] = {
        "@context": AS2,
        "id": f"{remote.actor('mallory')}/activities/{uuid.uuid4().hex}",
        "type": "Create",
        "actor": remote.actor("mallory"),
        "object": note["id"],
        "to": [PUBLIC],
        "cc": [hospital.group_iri],
        "audience": hospital.group_iri,
    }
    answer = await post_signed(hospital, remote, create)
    assert answer.status == 202, answer
    state = await eventually(lambda: processed(hospital, create["id"]), "the Create processed")

    # Then the Note was fetched from its origin and kept
    assert state == "done"
    assert held_throughout, "the Note was never fetched"
    async with hospital.running.node.transaction() as session:
        kept = (await session.execute(select(Post).where(Post.ap_id == note["id"]))).scalar()
    assert kept is not None and "Served by its origin" in kept.content_html
    # And no write transaction stayed open while the origin was answering
    assert not any(held_throughout), held_throughout


async def test_a_member_signs_in_and_starts_a_thread_while_an_object_server_is_slow(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory is a member of the public group, and her server is slow to serve a Note
    # of hers: it answers only once the test lets it
    await join(hospital, remote)
    note_path = f"/notes/{uuid.uuid4().hex}"
    note = {
        "@context": AS2, "id": remote.base_url + note_path, "type": "Note",
        "attributedTo": remote.actor("mallory"), "name": "Slow to come",
        "content": "<p>From a slow server</p>", "to": [hospital.group_iri, PUBLIC],
        "audience": hospital.group_iri,
    }  # fmt: skip
    asked, answer_now = asyncio.Event(), asyncio.Event()

    async def answer_slowly(request: web.Request) -> web.StreamResponse:
        asked.set()
        await asyncio.wait_for(answer_now.wait(), SLOW_SERVER_SECONDS)
        return json_answer(note)

    remote.routes[note_path] = answer_slowly
    # And she sends a Create that names the Note by id, which the node starts fetching
    create = {
        "@context": AS2, "id": f"{remote.actor('mallory')}/activities/{uuid.uuid4().hex}",
        "type": "Create", "actor": remote.actor("mallory"), "object": note["id"],
        "to": [PUBLIC], "cc": [hospital.group_iri], "audience": hospital.group_iri,
    }  # fmt: skip
    answer = await post_signed(hospital, remote, create)
    assert answer.status == 202, answer
    await asyncio.wait_for(asked.wait(), 20)

    # When, while her server has not answered, nurse signs in and starts a thread
    nurse = await hospital.running.browser()
    async with asyncio.timeout(LOCAL_WRITE_SECONDS):
        await nurse.login("nurse")
        page = await nurse.post("/g/t1d/new", {"title": "While it waits", "body": "Local."})
    # Then both were done at once, without waiting for the remote fetch
    assert page.status == 200 and "While it waits" in page.text, page.text[:300]
    assert not answer_now.is_set()
    # And the Note is kept once its server answers
    answer_now.set()
    state = await eventually(lambda: processed(hospital, create["id"]), "the Create processed")
    assert state == "done"


async def test_an_item_waiting_for_a_fetch_holds_back_the_rest_of_its_batch(
    make_node: NodeFactory, remote: FakeRemote
) -> None:
    # Given a node whose public group mallory and trent follow (its workers not running:
    # the test drains the inbox queue itself)
    node = await make_node("hospital", domain=f"127.0.0.1:{free_port()}")
    federation = Federation(node)
    try:
        async with node.transaction() as session:
            owner = await create_member(
                session, node.passwords, node.settings.limits, username="nurse",
                password="correct horse battery", display_name="Nurse", now=node.clock.now(),
            )  # fmt: skip
            await create_group(
                session, node.settings.limits, owner_id=owner.id, slug="t1d",
                name="Type 1 diabetes", now=node.clock.now(),
            )  # fmt: skip
        group_iri = federation.documents.iris.group("t1d")
        await stored(
            node, [follow(remote, "mallory", group_iri), follow(remote, "trent", group_iri)]
        )
        await drained(federation)

        # When one batch holds mallory's Create naming her Note by id (a fetch), then trent's
        # Like of that Note
        note_path = f"/notes/{uuid.uuid4().hex}"
        note = {
            "@context": AS2, "id": remote.base_url + note_path, "type": "Note",
            "attributedTo": remote.actor("mallory"), "name": "Hello", "content": "<p>Hi</p>",
            "to": [group_iri, PUBLIC], "audience": group_iri,
        }  # fmt: skip
        remote.documents[note_path] = note
        create = {
            "@context": AS2, "id": f"{remote.actor('mallory')}/activities/{uuid.uuid4().hex}",
            "type": "Create", "actor": remote.actor("mallory"), "object": note["id"],
            "to": [PUBLIC], "cc": [group_iri], "audience": group_iri,
        }  # fmt: skip
        like = {
            "@context": AS2, "id": f"{remote.actor('trent')}/likes/{uuid.uuid4().hex}",
            "type": "Like", "actor": remote.actor("trent"), "object": note["id"],
        }  # fmt: skip
        await stored(node, [create, like])
        await drained(federation)

        # Then both were applied in the order they came: the post, and trent's mark on it
        async with node.transaction() as session:
            states = dict(
                (await session.execute(select(InboxItem.activity_id, InboxItem.state))).all()
            )
            reactions = (await session.execute(select(func.count()).select_from(Reaction))).scalar()
        assert (states[create["id"]], states[like["id"]]) == ("done", "done")
        assert reactions == 1
    finally:
        await federation.close()


async def stored(node: NodeContext, documents: list[dict[str, Any]]) -> None:
    now = node.clock.now()
    async with node.transaction() as session:
        for document in documents:
            session.add(
                InboxItem(
                    activity_id=document["id"], actor_iri=document["actor"],
                    body=json.dumps(document), state="queued", attempts=0,
                    next_attempt_at=now, received_at=now, error="",
                )
            )  # fmt: skip


async def drained(federation: Federation) -> None:
    """Drain the inbox queue until it has nothing due (bounded)."""
    for _ in range(20):
        if not await federation.inbox_queue.drain():
            return
    raise AssertionError("the inbox queue kept finding work")
