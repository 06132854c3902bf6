"""`/healthz` and `/readyz`: cheap, unauthenticated, and saying nothing but "ok" or "not ready"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from node.runtime import NodeContext
from tests.conftest import NodeFactory
from web.app import create_app
from web.appkeys import FEDERATION
from web.routes_health import migration_head


@pytest.fixture
async def node(make_node: NodeFactory) -> NodeContext:
    return await make_node("health")


@pytest.fixture
async def client(node: NodeContext) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(node, run_workers=True))) as client:
        yield client


async def answer(client: TestClient, path: str) -> tuple[int, str, dict[str, str]]:
    async with client.get(path) as response:
        return response.status, await response.text(), dict(response.headers)


async def set_schema_version(node: NodeContext, version: str) -> None:
    async with node.engine.begin() as connection:
        await connection.execute(
            text("UPDATE alembic_version SET version_num = :v"), {"v": version}
        )


async def test_a_live_ready_node_says_ok_and_nothing_else(client: TestClient) -> None:
    for path in ("/healthz", "/readyz"):
        status, body, headers = await answer(client, path)
        assert (status, body) == (200, "ok\n"), path
        assert "Set-Cookie" not in headers
        assert headers["Cache-Control"] == "no-store"


async def test_a_schema_behind_the_code_is_not_ready(node: NodeContext, client: TestClient) -> None:
    # Given a database whose schema is one migration behind this code
    await set_schema_version(node, "0024_erasure")
    assert migration_head() != "0024_erasure"
    try:
        # Then the node is alive but not ready, and the answer does not say why
        assert (await answer(client, "/healthz"))[:2] == (200, "ok\n")
        assert (await answer(client, "/readyz"))[:2] == (503, "not ready\n")
    finally:
        await set_schema_version(node, str(migration_head()))
    assert (await answer(client, "/readyz"))[:2] == (200, "ok\n")


async def test_a_stopped_worker_makes_the_node_not_ready(client: TestClient) -> None:
    # Given a web process that runs its workers, one of which has stopped
    federation = client.app[FEDERATION]
    await federation.delivery_worker.stop()
    # Then it is not ready, with the same words as for any other reason
    assert (await answer(client, "/readyz"))[:2] == (503, "not ready\n")


async def test_an_unreachable_database_is_not_ready(node: NodeContext, client: TestClient) -> None:
    # Given a database the node can no longer use (its schema table is gone)
    async with node.engine.begin() as connection:
        await connection.execute(text("ALTER TABLE alembic_version RENAME TO alembic_version_away"))
    try:
        # Then readiness fails without an error page, and liveness holds
        assert (await answer(client, "/readyz"))[:2] == (503, "not ready\n")
        assert (await answer(client, "/healthz"))[:2] == (200, "ok\n")
    finally:
        async with node.engine.begin() as connection:
            await connection.execute(
                text("ALTER TABLE alembic_version_away RENAME TO alembic_version")
            )
