from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.keysink import attach_actor_keys
from node.config import PasswordCost, Settings
from node.runtime import NodeContext
from tests import databases
from tests.browser import Browser
from tests.clock import ManualClock
from tests.databases import BACKEND, PG_URL, TestDatabases
from tests.keypool import pooled_key_pair
from web.app import create_app

CHEAP_PASSWORDS = PasswordCost(time_cost=1, memory_cost_kib=8, parallelism=1)


def pytest_report_header() -> str:
    return f"healthnode test database: {BACKEND}"


def pytest_sessionstart(session: pytest.Session) -> None:
    if BACKEND not in ("sqlite", "postgresql"):
        pytest.exit(f"HEALTHNODE_TEST_DATABASE must be sqlite or postgresql, not {BACKEND!r}", 4)
    if BACKEND == "postgresql":
        if not PG_URL:
            pytest.exit("HEALTHNODE_TEST_PG_URL is not set for the PostgreSQL run", 4)
        try:
            asyncio.run(databases.check_postgresql())
        except Exception as error:  # any failure to connect ends the run loudly
            pytest.exit(f"PostgreSQL at {PG_URL} cannot be reached: {error}", 4)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if BACKEND == "postgresql" and PG_URL:
        asyncio.run(databases.drop_test_schemas())


@pytest.fixture(scope="session")
def test_databases(tmp_path_factory: pytest.TempPathFactory) -> TestDatabases:
    return TestDatabases(tmp_path_factory.mktemp("databases"))


NodeFactory = Callable[..., Awaitable[NodeContext]]


@pytest.fixture
async def make_node(test_databases: TestDatabases, tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Open a node on a fresh, migrated database: `await make_node("a", domain=...)`."""
    opened: list[NodeContext] = []

    async def factory(
        name: str = "node",
        domain: str = "localhost:8080",
        clock: ManualClock | None = None,
        **overrides: object,
    ) -> NodeContext:
        data_dir = tmp_path / name
        data_dir.mkdir(exist_ok=True)
        url = await test_databases.fresh(name, data_dir)
        settings = Settings(
            domain=domain,
            data_dir=data_dir,
            database_url=url,
            password_cost=CHEAP_PASSWORDS,
            **overrides,  # type: ignore[arg-type]
        )
        node = await NodeContext.open(settings, clock=clock or ManualClock())
        attach_actor_keys(node, pooled_key_pair)
        opened.append(node)
        return node

    yield factory
    for node in opened:
        await node.close()


@pytest.fixture
async def node(make_node: NodeFactory) -> NodeContext:
    return await make_node()


BrowserFactory = Callable[[], Awaitable[Browser]]


@pytest.fixture
async def web_node(node: NodeContext) -> NodeContext:
    """The default node, to be served by `browser`."""
    return node


@pytest.fixture
async def browser_factory(
    web_node: NodeContext, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> BrowserFactory:
    """`await new_browser()` gives a browser with its own cookies on one served node."""
    server = TestServer(create_app(web_node))
    await server.start_server()
    first = await aiohttp_client(server)

    async def new_browser() -> Browser:
        client = first if not used else await aiohttp_client(server)
        used.append(client)
        return Browser(client)

    used: list[TestClient] = []
    return new_browser


@pytest.fixture
async def browser(browser_factory: BrowserFactory) -> Browser:
    return await browser_factory()


# The fake remote server and node under test shared by the inbox-edge and interoperability tests.
from tests.peers import hospital, keys, remote, scripted, third  # noqa: E402, F401
