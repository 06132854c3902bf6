"""A PostgreSQL node backed up as docs/OPERATIONS.md says (pg_dump plus the node secret) and
restored into a new database serves the same pages, documents and keys.

Needs HEALTHNODE_TEST_PG_URL and pg_dump / pg_restore on the PATH.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from node.storage.engine import create_engine
from tests.clock import ManualClock
from tests.databases import PG_URL, SCHEMA_PREFIX, with_search_path
from tests.federation_harness import free_port
from tests.test_backup_restore import (
    as2,
    nurse_with_a_public_group,
    open_served,
    shut,
    without_tokens,
)

pytestmark = pytest.mark.skipif(
    not PG_URL or not shutil.which("pg_dump") or not shutil.which("pg_restore"),
    reason="needs HEALTHNODE_TEST_PG_URL and pg_dump",
)
RESTORED_DATABASE = "test_backup_restored"


def tool_arguments(url: URL) -> tuple[list[str], dict[str, str]]:
    arguments = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    if url.username:
        arguments += ["-U", url.username]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return arguments, env


async def run_tool(*args: str, env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()


async def admin_sql(statement: str) -> None:
    engine = create_engine(PG_URL)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = SCHEMA_PREFIX + "dump"
    await admin_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await admin_sql(f'CREATE SCHEMA "{name}"')
    await admin_sql(f'DROP DATABASE IF EXISTS "{RESTORED_DATABASE}"')
    yield name
    await admin_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    await admin_sql(f'DROP DATABASE IF EXISTS "{RESTORED_DATABASE}" WITH (FORCE)')


async def test_pg_dump_and_the_secret_restore_a_postgresql_node(
    schema: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    port = free_port()
    data_dir = tmp_path / "a"
    a = await open_served(data_dir, port, clock, database_url=with_search_path(PG_URL, schema))
    try:
        # Given a PostgreSQL node with a public group and a thread
        owner = await nurse_with_a_public_group(a)
        await owner.get("/g/t1d/new")
        page = await owner.post("/g/t1d/new", {"title": "Dumped", "body": "Kept *safe*."})
        assert page.status == 200, page.text[:300]
        visitor = await a.browser()
        paths = ("/g/t1d", page.path, "/search?q=dumped+safe")
        assert page.path in (await visitor.get(paths[2])).html
        pages = {path: (await visitor.get(path)).html for path in paths}
        documents = {path: await as2(visitor, path) for path in ("/g/t1d", "/u/nurse")}
    finally:
        await shut(a)

    # When its database is dumped with pg_dump, and the dump and the node secret are
    # restored into a new database and a new data dir
    url = make_url(PG_URL)
    arguments, env = tool_arguments(url)
    dump = tmp_path / "node.dump"
    await run_tool(
        "pg_dump", *arguments, "-d", str(url.database), "-n", schema, "-Fc", "-f", str(dump),
        env=env,
    )  # fmt: skip
    await admin_sql(f'CREATE DATABASE "{RESTORED_DATABASE}"')
    await run_tool(
        "pg_restore", *arguments, "-d", RESTORED_DATABASE, "--no-owner", "--exit-on-error",
        str(dump), env=env,
    )  # fmt: skip
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir(mode=0o700)
    shutil.copy2(data_dir / "node-secret", restored_dir / "node-secret")
    restored_url = url.set(database=RESTORED_DATABASE).render_as_string(hide_password=False)

    # Then a node opened there on the same domain serves the same pages and keys
    a2 = await open_served(
        restored_dir, port, clock, database_url=with_search_path(restored_url, schema)
    )
    try:
        visitor = await a2.browser()
        for path, html in pages.items():
            page = await visitor.get(path)
            assert page.status == 200, path
            assert without_tokens(page.html) == without_tokens(html), path
        for path, document in documents.items():
            assert await as2(visitor, path) == document, path
        # And its members sign in and write as before
        owner = await a2.browser()
        await owner.login("nurse")
        await owner.get("/g/t1d/new")
        page = await owner.post("/g/t1d/new", {"title": "Restored", "body": "Still here."})
        assert page.status == 200 and "Still here." in page.text, page.text[:300]
    finally:
        await shut(a2)
