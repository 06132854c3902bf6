"""Rate limits over real HTTP: posts per member, reports per member, inbox POSTs and follow
requests per remote host, each answering 429 with Retry-After past its number and allowing
again once its time has passed (on the node's ManualClock); and their configuration from the
environment, checked at start-up.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from federation.keysink import attach_actor_keys
from node import reports
from node.config import Limits, Rate, RateLimits, Throttle
from node.members import find_member
from node.runtime import NodeContext
from node.throttles import Throttled
from tests.browser import Browser
from tests.clock import ManualClock
from tests.conftest import NodeFactory
from tests.federation_harness import free_port
from tests.keypool import pooled_key_pair
from tests.peers import (
    AS2_JSON,
    FakeRemote,
    Hospital,
    close_hospital,
    encode,
    follow,
    inbox_items,
    open_hospital,
    signed,
)
from tests.test_cli import command, command_env
from tests.test_web_flows import create_group
from web.app import create_app
from web.cli import RATE_ENV_PREFIX, build_parser, settings_from

ClientFactory = Callable[..., Awaitable[TestClient]]
MINUTE = timedelta(minutes=1)


def rates(**changes: Any) -> Limits:
    return Limits(rates=RateLimits(**changes))


@dataclass
class Answer:
    """An answer as it came: no redirect followed."""

    status: int
    retry_after: str | None
    text: str


async def submit(browser: Browser, path: str, fields: dict[str, str]) -> Answer:
    """A form POST as the browser sends it, its answer as it comes (no redirect followed)."""
    if not browser.token:
        await browser.get("/")
    data = {"csrf_token": browser.token, **fields}
    async with browser.client.post(path, data=data, allow_redirects=False) as response:
        return Answer(response.status, response.headers.get("Retry-After"), await response.text())


async def browser_on(node: NodeContext, aiohttp_client: ClientFactory) -> Browser:
    return Browser(await aiohttp_client(TestServer(create_app(node, run_workers=False))))


async def group_with_a_thread(node: NodeContext, aiohttp_client: ClientFactory) -> str:
    """nurse owns the public group t1d and opens a thread in it; its path is returned."""
    nurse = await browser_on(node, aiohttp_client)
    await nurse.register("nurse")
    await create_group(nurse, "t1d", "Type 1 diabetes")
    page = await nurse.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    assert page.path.startswith("/t/"), page.text
    return page.path


async def member_of_t1d(node: NodeContext, aiohttp_client: ClientFactory, name: str) -> Browser:
    browser = await browser_on(node, aiohttp_client)
    await browser.register(name)
    assert (await browser.post("/g/t1d/join")).status == 200
    return browser


# --- posts per member ---------------------------------------------------------------------


async def test_posts_past_the_limit_wait_for_the_window_with_the_text_kept(
    make_node: NodeFactory, aiohttp_client: ClientFactory
) -> None:
    node = await make_node(limits=rates(posts_per_member=Rate(3, timedelta(minutes=10))))
    assert isinstance(node.clock, ManualClock)
    thread = await group_with_a_thread(node, aiohttp_client)
    bob = await member_of_t1d(node, aiohttp_client, "bob")

    # Given bob has written as many posts as the window allows, threads and replies alike
    assert (await submit(bob, f"{thread}/reply", {"body": "One"})).status == 303
    assert (await submit(bob, "/g/t1d/new", {"title": "Two", "body": "Two"})).status == 303
    node.clock.advance(timedelta(minutes=4))
    assert (await submit(bob, f"{thread}/reply", {"body": "Three"})).status == 303

    # When he replies again, then starts a thread
    reply = await submit(bob, f"{thread}/reply", {"body": "My fourth, kept for later"})
    new = await submit(bob, "/g/t1d/new", {"title": "Fifth", "body": "A fifth, kept too"})

    # Then both wait until ten minutes after his first, saying so, his text still in the form
    for answer in (reply, new):
        assert answer.status == 429, answer.text[:500]
        assert answer.retry_after == "360"
        assert "You have written 3 posts in 10 minutes" in answer.text
        assert "Please wait 6 minutes and try again." in answer.text
    assert "My fourth, kept for later" in reply.text
    assert "A fifth, kept too" in new.text

    # And another member is not held back by bob's count
    carol = await member_of_t1d(node, aiohttp_client, "carol")
    assert (await submit(carol, f"{thread}/reply", {"body": "Me too"})).status == 303

    # And once the window has closed, bob posts again
    node.clock.advance(timedelta(minutes=6))
    assert (await submit(bob, f"{thread}/reply", {"body": "Back"})).status == 303


async def test_a_groups_moderators_are_not_limited_in_it(
    make_node: NodeFactory, aiohttp_client: ClientFactory
) -> None:
    node = await make_node(limits=rates(posts_per_member=Rate(2, timedelta(minutes=10))))
    thread = await group_with_a_thread(node, aiohttp_client)
    nurse = await browser_on(node, aiohttp_client)
    await nurse.login("nurse")
    for index in range(5):
        answer = await submit(nurse, f"{thread}/reply", {"body": f"Pinned reminder {index}"})
        assert answer.status == 303, answer.text[:500]


async def test_two_web_processes_share_one_post_budget(
    make_node: NodeFactory, aiohttp_client: ClientFactory
) -> None:
    """Two apps on one database, as two processes would run (on PostgreSQL, for real)."""
    first = await make_node("shared", limits=rates(posts_per_member=Rate(4, 10 * MINUTE)))
    second = await NodeContext.open(first.settings, clock=first.clock)
    attach_actor_keys(second, pooled_key_pair)
    try:
        thread = await group_with_a_thread(first, aiohttp_client)
        bob = await member_of_t1d(first, aiohttp_client, "bob")
        other = await browser_on(second, aiohttp_client)
        await other.login("bob")  # bob signed in at both processes

        # When bob sends ten replies at once, five to each process
        answers = await asyncio.gather(
            *(
                submit((bob, other)[index % 2], f"{thread}/reply", {"body": f"Hi {index}"})
                for index in range(10)
            )
        )
        # Then exactly the budget was written, and the rest were told to wait
        assert Counter(answer.status for answer in answers) == {303: 4, 429: 6}
    finally:
        await second.close()


# --- reports per member -------------------------------------------------------------------


async def test_reports_past_the_limit_wait_and_remote_ones_are_not_counted(
    make_node: NodeFactory, aiohttp_client: ClientFactory
) -> None:
    node = await make_node(limits=rates(reports_per_member=Rate(2, timedelta(hours=1))))
    assert isinstance(node.clock, ManualClock)
    await group_with_a_thread(node, aiohttp_client)
    await member_of_t1d(node, aiohttp_client, "bob")
    async with node.transaction() as session:
        bob, nurse = await find_member(session, "bob"), await find_member(session, "nurse")
    assert bob is not None and nurse is not None

    async def report(reporter_id: int | None, now_rates: RateLimits | None) -> None:
        async with node.transaction() as session:
            await reports.file_report(
                session,
                category=reports.ReportCategory.SPAM,
                now=node.clock.now(),
                group_id=None,
                member_id=nurse.id,
                reporter_id=reporter_id,
                origin_domain="elsewhere.example" if reporter_id is None else "local",
                rates=now_rates,
            )

    configured = node.settings.limits.rates
    await report(bob.id, configured)
    node.clock.advance(timedelta(minutes=20))
    await report(bob.id, configured)
    with pytest.raises(Throttled, match="You have sent 2 reports in 1 hour") as refused:
        await report(bob.id, configured)
    assert refused.value.wait == timedelta(minutes=40)
    # Reports from other servers (no reporter here) are theirs to limit
    for _ in range(5):
        await report(None, configured)
    # Without the node's limits at hand, the defaults (20 an hour) still count bob's
    for _ in range(18):
        await report(bob.id, None)
    with pytest.raises(Throttled):
        await report(bob.id, None)
    node.clock.advance(timedelta(minutes=40))
    await report(bob.id, configured)


# --- inbox POSTs and follow requests per remote host --------------------------------------


@pytest.fixture
async def limited(
    make_node: NodeFactory, remote: FakeRemote, third: FakeRemote
) -> AsyncIterator[Hospital]:
    """The hospital of tests/peers.py (nurse's public group t1d), with small per-host limits:
    3 inbox POSTs a minute, 2 follow requests an hour."""
    limits = rates(inbox_per_host=Rate(3, MINUTE), follows_per_host=Rate(2, timedelta(hours=1)))

    def make(name: str, **overrides: Any) -> Awaitable[NodeContext]:
        return make_node(name, limits=limits, **overrides)

    hospital = await open_hospital(make)
    yield hospital
    await close_hospital(hospital)


async def deliver(
    hospital: Hospital, sender: FakeRemote, document: dict[str, Any], signer: str = "mallory"
) -> Answer:
    """POST `document` to the group's inbox, signed with `signer`'s key at `sender`."""
    body = encode(document)
    headers = signed(hospital, sender, body, key=sender.keys[signer], key_id=sender.key_id(signer))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            hospital.group_inbox, data=body, headers={"Content-Type": AS2_JSON, **headers}
        ) as response,
    ):
        text = await response.text()
        return Answer(response.status, response.headers.get("Retry-After"), text)


def undo_of(activity: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": activity["@context"],
        "id": activity["id"] + "/undo",
        "type": "Undo",
        "actor": activity["actor"],
        "object": activity,
    }


async def test_inbox_posts_past_a_hosts_budget_are_refused_before_any_key_fetch(
    limited: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    clock = limited.running.node.clock
    assert isinstance(clock, ManualClock)
    # Given a host that has sent its three POSTs of the minute (its key fetched once)
    for _ in range(3):
        activity = follow(remote, "mallory", limited.group_iri)
        assert (await deliver(limited, remote, undo_of(activity))).status == 202
    assert len(remote.gets("/users/mallory")) == 1
    kept = await inbox_items(limited)

    # When the same host (127.0.0.1, on another port) sends one signed with a new key
    answer = await deliver(limited, third, follow(third, "mallory", limited.group_iri))

    # Then it is refused with the wait, and that key was never asked for, nor anything kept
    assert answer.status == 429, answer
    assert answer.retry_after == "20"  # one POST back every 20 s
    assert "too many requests from this server" in answer.text
    assert third.gets("/users/mallory") == []
    assert await inbox_items(limited) == kept

    # And twenty seconds later one more is accepted, and its key fetched then
    clock.advance(timedelta(seconds=20))
    activity = follow(third, "mallory", limited.group_iri)
    assert (await deliver(limited, third, undo_of(activity))).status == 202
    assert len(third.gets("/users/mallory")) == 1


async def test_follow_requests_past_a_hosts_limit_wait(
    limited: Hospital, remote: FakeRemote
) -> None:
    clock = limited.running.node.clock
    assert isinstance(clock, ManualClock)
    # Given two follow requests from one server's actors this hour
    assert (
        await deliver(limited, remote, follow(remote, "mallory", limited.group_iri))
    ).status == 202
    clock.advance(timedelta(minutes=15))
    assert (
        await deliver(limited, remote, follow(remote, "trent", limited.group_iri), "trent")
    ).status == 202
    kept = await inbox_items(limited)

    # When a third arrives
    clock.advance(MINUTE)  # the inbox budget (3 a minute) is not what refuses it
    answer = await deliver(limited, remote, follow(remote, "mallory", limited.group_iri))

    # Then it waits for the hour to pass since the first, and nothing of it is kept
    assert answer.status == 429, answer
    assert answer.retry_after == str(44 * 60)
    assert "too many follow requests from this server" in answer.text
    assert await inbox_items(limited) == kept

    # And once the hour is over, the server's actors may ask again
    clock.advance(timedelta(minutes=44))
    assert (
        await deliver(limited, remote, follow(remote, "mallory", limited.group_iri))
    ).status == 202


# --- configuration ------------------------------------------------------------------------


def test_rate_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RATE_ENV_PREFIX + "POSTS_PER_MEMBER", "5/1h")
    monkeypatch.setenv(RATE_ENV_PREFIX + "REPORTS_PER_MEMBER", "off")
    monkeypatch.setenv(RATE_ENV_PREFIX + "INBOX_PER_HOST", " 600 / 1m ")
    monkeypatch.setenv(RATE_ENV_PREFIX + "FOLLOWS_PER_HOST", "10/30m")
    monkeypatch.setenv(RATE_ENV_PREFIX + "SIGN_IN_PER_ADDRESS", "10,30s,2h")
    monkeypatch.setenv(RATE_ENV_PREFIX + "REGISTRATIONS_PER_ADDRESS", "3")
    settings = settings_from(build_parser().parse_args(["serve"]))
    assert settings.limits.rates == RateLimits(
        posts_per_member=Rate(5, timedelta(hours=1)),
        reports_per_member=None,
        inbox_per_host=Rate(600, MINUTE),
        follows_per_host=Rate(10, timedelta(minutes=30)),
        sign_in_per_address=Throttle(
            free=10, first_delay=timedelta(seconds=30), longest_delay=timedelta(hours=2)
        ),
        registrations_per_address=Throttle(free=3),
    )
    assert settings.limits.rates.sign_in_per_account_address == Throttle(free=5)


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("POSTS_PER_MEMBER", "30 per 10 minutes", "is not COUNT/PERIOD such as 30/10m"),
        ("POSTS_PER_MEMBER", "0/10m", "is not COUNT/PERIOD"),
        ("INBOX_PER_HOST", "300/0s", "'0s' is not between 1s and 7d"),
        ("FOLLOWS_PER_HOST", "60/30d", "'30d' is not between 1s and 7d"),
        ("SIGN_IN_PER_ADDRESS", "off", "is not FREE or FREE,FIRST_DELAY,LONGEST_DELAY"),
        ("SIGN_IN_PER_ADDRESS", "5,1h,1m", "the delays must grow"),
        ("POST_PER_MEMBER", "30/10m", "HEALTHNODE_RATE_POST_PER_MEMBER is not a rate limit"),
    ],
)
def test_a_bad_rate_limit_stops_the_node_at_start_up_with_its_reason(
    tmp_path: Path, variable: str, value: str, reason: str
) -> None:
    port = free_port()
    completed = subprocess.run(
        command("serve", "--port", str(port), "--data-dir", tmp_path / "data"),
        cwd=tmp_path,
        env={**command_env(), RATE_ENV_PREFIX + variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"healthnode: {RATE_ENV_PREFIX}{variable}"), lines
    assert reason in lines[0], lines
    assert not (tmp_path / "data").exists()  # nothing was started or written
