"""Migrations run forward from the first released schema with data in it (SQLite or PostgreSQL,
as the run says): rows written with plain SQL for schema 0001 (and, for what came with
federation, 0002) survive every later migration, and a node opened on the result serves them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from federation.keysink import attach_actor_keys
from node.config import Settings
from node.runtime import NodeContext
from node.storage.backup import head_revision
from node.storage.engine import create_engine
from node.storage.migrate import upgrade_to_head
from tests.browser import Browser
from tests.clock import ManualClock
from tests.conftest import CHEAP_PASSWORDS
from tests.databases import BACKEND, PG_URL, SCHEMA_PREFIX, sqlite_url, with_search_path
from tests.federation_harness import free_port
from tests.keypool import pooled_key_pair
from web.app import create_app

FIRST = "0001_initial"
FEDERATION = "0002_federation"
PASSWORD = "correct horse battery"
SERIAL_TABLES = ("members", "condition_groups", "deliveries")
THEN = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
REMOTE = "https://remote.example"
AS2 = {"Accept": "application/activity+json"}


@pytest.fixture
async def old_database(tmp_path: Path) -> AsyncIterator[str]:
    """An empty database (a SQLite file, or a fresh PostgreSQL schema) for the run's backend."""
    if BACKEND != "postgresql":
        yield sqlite_url(tmp_path / "old.sqlite3")
        return
    schema = SCHEMA_PREFIX + "forward"
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


async def insert(connection: AsyncConnection, table: str, **values: Any) -> Any:
    """One row by plain SQL, as that release's schema had it (times stored as naive UTC);
    gives its generated id, if the table has one."""
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    returning = " RETURNING id" if table in SERIAL_TABLES else ""
    statement = text(f"INSERT INTO {table} ({columns}) VALUES ({marks}){returning}")
    times = [name for name, value in values.items() if isinstance(value, datetime)]
    statement = statement.bindparams(*(bindparam(name, type_=DateTime()) for name in times))
    plain = {
        name: value.replace(tzinfo=None) if isinstance(value, datetime) else value
        for name, value in values.items()
    }
    result = await connection.execute(statement, plain)
    return result.scalar_one() if returning else None


async def write_release_one(engine: AsyncEngine) -> None:
    """Members, a public group with a condition, a thread with a reply and a helpful mark, and
    a private group (which must never get a key pair)."""
    hashed = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    async with engine.begin() as db:
        for name, kind in (
            ("ann", "member"),
            ("bob", "member"),
            ("t1d", "group"),
            ("carers", "group"),
        ):
            await insert(db, "handles", name=name, kind=kind)
        ids = {}
        for username, role in (("ann", "admin"), ("bob", "member")):
            ids[username] = await insert(
                db, "members", username=username,
                display_name=username.title(), bio="", password_hash=hashed, role=role,
                created_at=THEN, last_active_at=THEN, consent_at=THEN,
                consent_policy_version="1",
            )  # fmt: skip
        group = await insert(
            db, "condition_groups", slug="t1d", name="Type 1 diabetes",
            description="Living with type 1", rules="Be kind", visibility="public",
            join_policy="open", join_code="", owner_id=ids["ann"], created_at=THEN,
            last_activity_at=THEN,
        )  # fmt: skip
        await insert(db, "group_conditions", group_id=group, tag="diabetes")
        await insert(
            db, "condition_groups", slug="carers", name="Carers", description="", rules="",
            visibility="private", join_policy="request", join_code="", owner_id=ids["ann"],
            created_at=THEN, last_activity_at=THEN,
        )  # fmt: skip
        for username, role in (("ann", "owner"), ("bob", "member")):
            await insert(
                db, "memberships", group_id=group, member_id=ids[username], state="active",
                role=role, created_at=THEN, updated_at=THEN,
            )  # fmt: skip
        await insert(
            db, "threads", id="0000000000thread0001", group_id=group, title="Night hypos",
            author_id=ids["ann"], created_at=THEN, last_activity_at=THEN + timedelta(minutes=5),
        )  # fmt: skip
        for post_id, parent, author, source, minutes in (
            ("0000000000opening001", None, "ann", "Anyone else wake at 3am?", 0),
            ("0000000000reply00001", "0000000000opening001", "bob", "Every week, sadly.", 5),
        ):
            await insert(
                db, "posts", id=post_id, thread_id="0000000000thread0001", parent_id=parent,
                author_id=ids[author], source=source, content_html=f"<p>{source}</p>",
                content_warning="", created_at=THEN + timedelta(minutes=minutes),
                edited_at=None, deleted_at=None,
            )  # fmt: skip
        await insert(
            db, "reactions", post_id="0000000000reply00001", member_id=ids["ann"], kind="helpful",
            created_at=THEN + timedelta(minutes=6),
        )  # fmt: skip


async def write_release_two(engine: AsyncEngine) -> None:
    """What came with federation: a remote member following the group, a delivery queued."""
    async with engine.begin() as db:
        group = (
            await db.execute(text("SELECT id FROM condition_groups WHERE slug = 't1d'"))
        ).scalar_one()
        cal = await insert(
            db, "members", username="cal", domain="remote.example",
            display_name="Cal", bio="", password_hash="", role="member",
            created_at=THEN, last_active_at=THEN, actor_iri=f"{REMOTE}/users/cal",
            inbox_url=f"{REMOTE}/users/cal/inbox", shared_inbox_url=f"{REMOTE}/inbox",
            profile_url=f"{REMOTE}/@cal", fetched_at=THEN,
        )  # fmt: skip
        await insert(
            db, "memberships", group_id=group, member_id=cal, state="active", role="member",
            created_at=THEN, updated_at=THEN, follow_activity_id=f"{REMOTE}/follows/1",
        )  # fmt: skip
        await insert(
            db, "outbox_activities", id="0000000000announce01",
            actor_iri="http://localhost:8080/g/t1d", signer="group:t1d", type="Announce",
            body=json.dumps({"type": "Announce", "id": "urn:test:announce"}), created_at=THEN,
        )  # fmt: skip
        await insert(
            db, "deliveries", activity_id="0000000000announce01",
            inbox_url=f"{REMOTE}/inbox", state="queued", attempts=2,
            next_attempt_at=THEN + timedelta(minutes=10), locked_until=None, last_status=503,
            last_error="503 Service Unavailable", created_at=THEN, updated_at=THEN,
        )  # fmt: skip


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(sql))]


async def test_a_database_from_the_first_release_migrates_to_head_with_its_data(
    old_database: str, tmp_path: Path
) -> None:
    # Given a database at the first release's schema, with members, a group and posts in it
    engine = create_engine(old_database)
    try:
        await upgrade_to_head(engine, FIRST)
        await write_release_one(engine)
        # And, at the release that brought federation, a remote follower and a queued delivery
        await upgrade_to_head(engine, FEDERATION)
        await write_release_two(engine)

        # When it is migrated to the latest schema
        await upgrade_to_head(engine)

        # Then every row is still there, as it was written
        assert await rows(engine, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
        assert await rows(
            engine, "SELECT username, domain, role FROM members ORDER BY username"
        ) == [("ann", "", "admin"), ("bob", "", "member"), ("cal", "remote.example", "member")]
        assert await rows(
            engine,
            "SELECT m.username, s.state, s.role, s.follow_activity_id FROM memberships s"
            " JOIN members m ON m.id = s.member_id ORDER BY m.username",
        ) == [
            ("ann", "active", "owner", None),
            ("bob", "active", "member", None),
            ("cal", "active", "member", f"{REMOTE}/follows/1"),
        ]
        assert await rows(engine, "SELECT source FROM posts ORDER BY created_at") == [
            ("Anyone else wake at 3am?",),
            ("Every week, sadly.",),
        ]
        assert await rows(
            engine,
            "SELECT m.username, r.kind FROM reactions r JOIN members m ON m.id = r.member_id",
        ) == [("ann", "helpful")]
        assert await rows(engine, "SELECT tag FROM group_conditions") == [("diabetes",)]
        assert await rows(
            engine, "SELECT activity_id, inbox_url, state, attempts FROM deliveries"
        ) == [("0000000000announce01", f"{REMOTE}/inbox", "queued", 2)]
        # And no actor has a key pair yet: keys came after the first release
        assert await rows(engine, "SELECT owner FROM actor_keys") == []
        ids = dict(await rows(engine, "SELECT username, id FROM members"))
        ids |= dict(await rows(engine, "SELECT visibility, id FROM condition_groups"))
    finally:
        await engine.dispose()

    # And a node opened on it serves the group and the thread
    port = free_port()
    settings = Settings(
        domain=f"127.0.0.1:{port}", data_dir=tmp_path / "data", database_url=old_database,
        password_cost=CHEAP_PASSWORDS,
    )  # fmt: skip
    node = await NodeContext.open(settings, clock=ManualClock(), key_factory=pooled_key_pair)
    attach_actor_keys(node, pooled_key_pair)
    server = TestServer(create_app(node), host="127.0.0.1", port=port)
    await server.start_server()
    client = TestClient(server)
    await client.start_server()
    try:
        browser = Browser(client)
        group = await browser.get("/g/t1d")
        assert group.status == 200, group.text[:300]
        assert "Type 1 diabetes" in group.text and "Night hypos" in group.text
        thread = await browser.get("/t/0000000000thread0001")
        assert thread.status == 200, thread.text[:300]
        assert "Anyone else wake at 3am?" in thread.text
        assert "Every week, sadly." in thread.text
        # And search finds what was written before it existed (the migration indexed it),
        # never the private group
        found = await browser.get("/search?q=wakes+3am")
        assert "/t/0000000000thread0001" in found.html, found.text[:300]
        assert "/g/t1d" in (await browser.get("/search?q=diabetic")).html
        assert "No groups, threads or posts" in (await browser.get("/search?q=carers")).text
        # And its members sign in with the passwords they had, and write
        await browser.login("bob")
        await browser.get("/t/0000000000thread0001")
        page = await browser.post("/t/0000000000thread0001/reply", {"body": "Still here."})
        assert page.status == 200, page.text[:300]
        assert "Still here." in page.text
        assert "<mark>Still</mark>" in (await browser.get("/search?q=still")).html
        # And, given key pairs at start-up, the group and its local members federate: their
        # AS2 documents answer with a public key (the keys of the first release's rows)
        for path in ("/g/t1d", "/u/ann", "/u/bob"):
            async with client.get(path, headers=AS2) as answer:
                assert answer.status == 200, (path, await answer.text())
                document = json.loads(await answer.text())
            key = document["publicKey"]
            assert key["owner"] == document["id"], document
            assert key["publicKeyPem"].startswith("-----BEGIN PUBLIC KEY-----"), key
    finally:
        await client.close()
        await server.close()
        await node.close()
    # And exactly the local members, the public group and the instance actor have keys: not
    # the remote member, not the private group
    engine = create_engine(old_database)
    try:
        owners = await rows(engine, "SELECT owner, public_pem FROM actor_keys ORDER BY owner")
        assert sorted(owner for owner, _pem in owners) == sorted(
            [f"group:{ids['public']}", f"member:{ids['ann']}", f"member:{ids['bob']}", "instance"]
        )
    finally:
        await engine.dispose()
    # And opening the node again makes no new keys and changes none
    node = await NodeContext.open(settings, clock=ManualClock(), key_factory=pooled_key_pair)
    await node.close()
    engine = create_engine(old_database)
    try:
        assert (
            await rows(engine, "SELECT owner, public_pem FROM actor_keys ORDER BY owner") == owners
        )
    finally:
        await engine.dispose()
