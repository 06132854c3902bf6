"""The application factories: which one opens and closes the node, and when."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.keysink import ActorKeys
from node.config import Settings
from node.notifications import Notifier
from node.runtime import NodeContext
from tests import databases
from tests.clock import ManualClock
from tests.conftest import CHEAP_PASSWORDS
from web.app import create_app, create_app_owning_node
from web.appkeys import FEDERATION, NODE

Closed = list[tuple[NodeContext, list[str]]]


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> Closed:
    """Every node closed during the test, with the kinds of event sinks it still had then."""
    seen: Closed = []
    real_close = NodeContext.close

    async def close(node: NodeContext) -> None:
        seen.append((node, [type(sink).__name__ for sink in node.sinks]))
        await real_close(node)

    monkeypatch.setattr(NodeContext, "close", close)
    return seen


async def test_the_serving_app_opens_its_node_on_startup_and_closes_it_on_cleanup(
    test_databases: databases.TestDatabases, tmp_path: Path, closed: Closed
) -> None:
    settings = Settings(
        domain="localhost:8080",
        data_dir=tmp_path,
        database_url=await test_databases.fresh("owned", tmp_path),
        password_cost=CHEAP_PASSWORDS,
    )
    clock = ManualClock()
    # Given the app `healthnode serve` runs: nothing is open before it starts
    app = create_app_owning_node(settings, clock=clock, run_workers=False)
    assert NODE not in app
    async with TestClient(TestServer(app)) as client:
        # When it has started, its node is open on the clock it was given, with actor keys
        # and federation attached, and it serves pages
        node = app[NODE]
        assert node.settings is settings and node.clock is clock
        assert [type(sink) for sink in node.sinks] == [
            Notifier,
            ActorKeys,
            type(app[FEDERATION].outbox),
        ]
        assert (await client.get("/")).status == 200
        assert closed == []
    # Then cleanup closes the node once, after federation has let go of it
    assert closed == [(node, ["Notifier", "ActorKeys"])]


async def test_an_app_given_a_node_leaves_it_open_for_its_caller(
    node: NodeContext, closed: Closed
) -> None:
    app = create_app(node, run_workers=False)
    async with TestClient(TestServer(app)) as client:
        assert app[NODE] is node
        assert (await client.get("/")).status == 200
    assert closed == []
    assert app[FEDERATION].outbox not in node.sinks
