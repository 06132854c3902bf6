"""`healthnode db copy --to URL`: a SQLite node moves to PostgreSQL with its pages, its pending
deliveries and its keys; its follower on another node keeps accepting what it sends.

Needs a PostgreSQL server (HEALTHNODE_TEST_PG_URL); node A is SQLite on every run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from node.storage.engine import create_engine
from node.storage.models import (
    ConditionGroup,
    Delivery,
    Member,
    Membership,
    OutboxActivity,
    Post,
    Thread,
)
from tests.clock import ManualClock
from tests.databases import PG_URL, SCHEMA_PREFIX, with_search_path
from tests.federation_harness import RunningNode, eventually, free_port
from tests.test_backup_restore import (
    as2,
    bea_follows_t1d,
    cached_keys,
    follower,  # noqa: F401 (fixture)
    nurse_with_a_public_group,
    one,
    open_served,
    run_cli,
    shut,
    without_tokens,
)

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs HEALTHNODE_TEST_PG_URL")


@pytest.fixture
async def empty_target() -> AsyncIterator[str]:
    schema = SCHEMA_PREFIX + "copy"
    admin = create_engine(PG_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield with_search_path(PG_URL, schema)
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await admin.dispose()


async def add_unreachable_follower(a: RunningNode, slug: str) -> str:
    """A remote member whose server is down follows the group: deliveries to it stay queued."""
    dead = f"127.0.0.1:{free_port()}"
    now = a.node.clock.now()
    async with a.node.transaction() as session:
        group = (
            await session.execute(select(ConditionGroup).where(ConditionGroup.slug == slug))
        ).scalar_one()
        member = Member(
            username="dan", domain=dead, display_name="Dan", bio="", password_hash="",
            role="member", created_at=now, last_active_at=now,
            actor_iri=f"http://{dead}/users/dan", inbox_url=f"http://{dead}/users/dan/inbox",
        )  # fmt: skip
        session.add(member)
        await session.flush()
        session.add(
            Membership(
                group_id=group.id,
                member_id=member.id,
                state="active",
                role="member",
                created_at=now,
                updated_at=now,
                follow_activity_id=f"http://{dead}/follows/1",
            )
        )
    return f"http://{dead}/users/dan/inbox"


async def pending(node: RunningNode) -> list[tuple[Any, ...]]:
    async with node.node.transaction() as session:
        rows = await session.execute(
            select(
                Delivery.inbox_url,
                Delivery.state,
                Delivery.attempts,
                Delivery.next_attempt_at,
                OutboxActivity.type,
                OutboxActivity.body,
            )
            .join(OutboxActivity, OutboxActivity.id == Delivery.activity_id)
            .where(Delivery.state == "queued")
            .order_by(Delivery.inbox_url, OutboxActivity.id)
        )
        return [tuple(row) for row in rows]


async def test_db_copy_moves_pages_pending_deliveries_and_keys_to_postgresql(
    follower: RunningNode,  # noqa: F811
    empty_target: str,
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    port = free_port()
    data_dir = tmp_path / "a"
    a = await open_served(data_dir, port, clock)
    try:
        # Given a public group on SQLite node A, followed by bea on B and by dan, whose
        # server is down
        owner = await nurse_with_a_public_group(a)
        await bea_follows_t1d(follower, a)
        await eventually(
            lambda: one(
                a,
                select(Membership.state)
                .join(Member, Member.id == Membership.member_id)
                .where(Member.username == "bea", Membership.state == "active"),
            ),
            "bea's follow accepted on A",
        )
        dead_inbox = await add_unreachable_follower(a, "t1d")

        # And a thread that reached B but is still queued for dan after a failed attempt
        await owner.get("/g/t1d/new")
        page = await owner.post("/g/t1d/new", {"title": "Before", "body": "On *SQLite*."})
        assert page.status == 200, page.text[:300]
        thread_path = page.path
        page = await owner.post(f"{thread_path}/reply", {"body": "A reply, *pointing* up."})
        assert page.status == 200 and "pointing" in page.text, page.text[:300]
        await eventually(
            lambda: one(follower, select(Post.id).where(Post.source == "A reply, *pointing* up.")),
            "the thread and its reply on B",
        )

        async def failed_once() -> list[tuple[Any, ...]]:
            rows = await pending(a)
            return [row for row in rows if row[0] == dead_inbox and row[2] >= 1]

        await eventually(failed_once, "a failed attempt to reach dan")
        queued = await pending(a)
        keys_on_b = await cached_keys(follower, a.base_url)
        assert keys_on_b
        visitor = await a.browser()
        pages = {path: (await visitor.get(path)).html for path in ("/g/t1d", thread_path)}
        documents = {path: await as2(visitor, path) for path in ("/g/t1d", "/u/nurse")}
    finally:
        await shut(a)

    # When A's data is copied into an empty PostgreSQL database
    code, out, err = await run_cli("db", "copy", "--to", empty_target, "--data-dir", data_dir)
    assert code == 0, err
    assert out.startswith("copied "), out
    code, _, err = await run_cli("db", "copy", "--to", empty_target, "--data-dir", data_dir)
    assert code == 1 and "not empty" in err, err

    # And A' opens on it with the same data dir (the same secret), domain and port
    a2 = await open_served(data_dir, port, clock, database_url=empty_target)
    try:
        assert a2.node.engine.dialect.name == "postgresql"
        # Then the same deliveries are pending, the same pages and documents are served
        assert await pending(a2) == queued
        parent = await one(
            a2, select(Post.parent_id).where(Post.source == "A reply, *pointing* up.")
        )
        assert parent is not None and parent == await one(
            a2, select(Post.id).where(Post.source == "On *SQLite*.")
        )
        visitor = await a2.browser()
        for path, html in pages.items():
            page = await visitor.get(path)
            assert without_tokens(page.html) == without_tokens(html), path
        for path, document in documents.items():
            assert await as2(visitor, path) == document, path

        # And search finds what was written on SQLite: its documents were copied, and
        # PostgreSQL's generated column indexed them (SQLite's FTS5 tables are not copied)
        found = await visitor.get("/search?q=pointing")
        assert f"{thread_path}#post-" in found.html and "<mark>pointing</mark>" in found.html
        assert thread_path in (await visitor.get("/search?q=sqlite+before")).html

        # And a thread started on A' reaches B, which verifies it with the keys it cached
        owner = await a2.browser()
        await owner.login("nurse")
        await owner.get("/g/t1d/new")
        page = await owner.post("/g/t1d/new", {"title": "After", "body": "On PostgreSQL."})
        assert page.status == 200, page.text[:300]
        await eventually(
            lambda: one(follower, select(Thread.id).where(Thread.title == "After")),
            "the thread made on A' accepted by B",
        )
        assert await cached_keys(follower, a2.base_url) == keys_on_b
    finally:
        await shut(a2)
