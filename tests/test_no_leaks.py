"""No leaks (docs/POLICY.md, "No leaks: requests, logs, addresses"): pages that request
nothing from another host, logs without post text, passwords, tokens or email addresses, and
client addresses kept only for their retention, then purged by the workers.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from federation.queue import Housekeeping
from node import rate_limits, throttles
from node.config import ADDRESS_RETENTION_DEFAULT, Rate, parse_address_retention
from node.runtime import NodeContext
from node.storage.models import AttemptCounter
from tests.browser import Browser
from tests.clock import ManualClock
from tests.federation_harness import eventually
from web.cli import ADDRESS_RETENTION_ENV, CommandError, build_parser, settings_from

# --- client addresses: kept for their retention, then purged ---------------------------------


async def _counter_keys(node: NodeContext) -> set[str]:
    async with node.transaction(reading=True) as session:
        return set((await session.execute(select(AttemptCounter.key))).scalars())


async def test_client_addresses_are_purged_by_the_workers_after_the_retention(
    node: NodeContext, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = node.clock
    assert isinstance(clock, ManualClock)
    # Given a registration, a wrong password and a post counted: three keys name the address
    await browser.register("alice")
    await browser.logout()
    await browser.login("alice", "not the password")
    async with node.transaction() as session:
        await throttles.count_in_window(
            session, rate_limits.posts_key(1), Rate(30, timedelta(hours=1)), clock.now(), "x"
        )
    keys = await _counter_keys(node)
    with_address = {key for key in keys if "127.0.0.1" in key}
    assert len(with_address) == 3, keys

    # When a purge runs just before the retention has passed, they are all kept
    clock.advance(ADDRESS_RETENTION_DEFAULT - timedelta(minutes=1))
    assert await Housekeeping(node).drain() == 0
    assert with_address <= await _counter_keys(node)

    # When the retention has passed, the running workers purge them, and only them
    clock.advance(timedelta(minutes=2))

    async def purged() -> bool:
        return not with_address & await _counter_keys(node)

    await eventually(purged, "the workers to purge client addresses")
    assert await _counter_keys(node) == {rate_limits.posts_key(1)}
    # And the log says how many, never which
    lines = [r.getMessage() for r in caplog.records if "client addresses" in r.getMessage()]
    assert lines == ["purged 3 client addresses past their retention"]
    # (the test server's access log is aiohttp's own; `serve` logs no address: RouteAccessLogger)
    ours = [r for r in caplog.records if r.name != "aiohttp.access"]
    assert not [r for r in ours if "127.0.0.1" in r.getMessage()]


async def test_the_address_retention_is_configurable(
    make_node: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADDRESS_RETENTION_ENV, "2d")
    assert settings_from(build_parser().parse_args(["serve"])).address_retention == timedelta(
        days=2
    )
    monkeypatch.delenv(ADDRESS_RETENTION_ENV)
    assert settings_from(build_parser().parse_args(["worker"])).address_retention == timedelta(
        days=7
    )
    assert parse_address_retention(" 36h ") == timedelta(hours=36)
    # Shorter than a throttle remembers an address would lift it early; longer is hoarding.
    for wrong in ("1h", "91d", "7", "seven days", "7w"):
        with pytest.raises(ValueError):
            parse_address_retention(wrong)
    monkeypatch.setenv(ADDRESS_RETENTION_ENV, "1h")
    with pytest.raises(CommandError, match=ADDRESS_RETENTION_ENV):
        settings_from(build_parser().parse_args(["serve"]))
