"""No leaks (docs/POLICY.md, "No leaks: requests, logs, addresses"): pages that request
nothing from another host, logs without post text, passwords, tokens or email addresses, and
client addresses kept only for their retention, then purged by the workers.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import re
import shutil
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from federation.queue import Housekeeping
from node import rate_limits, remote, throttles
from node.config import ADDRESS_RETENTION_DEFAULT, Rate, parse_address_retention
from node.groups import view_group
from node.membership import put_membership
from node.policy import Viewer
from node.posts import Draft, reply, start_thread
from node.reports import ReportCategory, file_report
from node.runtime import NodeContext
from node.storage.models import (
    AttemptCounter,
    ConditionGroup,
    Membership,
    OutboxActivity,
    Post,
    Thread,
)
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.clock import ManualClock
from tests.conftest import NodeFactory
from tests.federation_harness import Recorder, RunningNode, eventually, free_port
from tests.test_domain_services import found_group, register
from web.app import create_app
from web.cli import ADDRESS_RETENTION_ENV, CommandError, build_parser, settings_from
from web.logs import JsonFormatter
from web.security_headers import SECURITY_HEADERS
from web.serving import RouteAccessLogger

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


# --- logs hold no post text, no passwords, no tokens, no addresses --------------------------


async def _served(make_node: NodeFactory, name: str) -> RunningNode:
    """A node served as `healthnode serve` serves it: with its own access log."""
    port = free_port()
    node = await make_node(name, domain=f"127.0.0.1:{port}")
    recorder = Recorder()
    server = TestServer(create_app(node, trace_configs=[recorder.trace_config()]), port=port)
    await server.start_server(access_log_class=RouteAccessLogger)
    return RunningNode(name, node, server, recorder)


def _logged(record: logging.LogRecord) -> str:
    """All a log record could write: its message, its arguments and its exception."""
    parts = [str(record.msg), repr(record.args)]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


async def test_logs_hold_no_post_text_passwords_join_codes_searches_or_addresses(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, at its most talkative
    # (and written as `--log-format json` writes them, to grep the very lines)
    json_lines = io.StringIO()
    json_handler = logging.StreamHandler(json_lines)
    json_handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(json_handler)
    hospital, charity = [await _served(make_node, name) for name in ("hospital", "charity")]
    secrets_: list[str] = []

    def secret(text: str) -> str:
        secrets_.append(text)
        return text

    try:
        # Given a member who registers, mistypes her password, then signs in
        password = secret("plum orchard lantern 4417")
        nurse = await hospital.browser()
        await nurse.register("nurse", password)
        await nurse.logout()
        wrong = await nurse.login("nurse", secret("plum orchard lantern 4418"))
        assert wrong.status == 400
        assert (await nurse.login("nurse", password)).status == 200
        # And founds a public group and a private one, and starts a thread
        await nurse.get("/groups/new")
        await nurse.post("/groups/new", {"slug": "t1d", "name": "Type 1", "visibility": "public"})
        await nurse.get("/groups/new")
        hush = await nurse.post(
            "/groups/new", {"slug": "hush", "name": "Hush", "visibility": "private",
                            "join_policy": "request"},
        )  # fmt: skip
        hush_slug = hush.path.removeprefix("/g/")
        secrets_.append(hush_slug)
        opening = secret("My HbA1c came back at 9.1 and I am scared, write to pat@example.org")
        # (already warned about the address in it: the second submit, "Publish anyway")
        page = await nurse.post(
            "/g/t1d/new", {"title": "Results", "body": opening, "details_seen": "yes"}
        )
        assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
        thread_path = page.path
        # When a member elsewhere follows the group, and replies from home
        bea = await charity.browser()
        await bea.register("bea", secret("velvet canyon 0093 stars"))
        await bea.get("/authorize_interaction")
        followed = await bea.post("/groups/follow", {"handle": f"t1d@{hospital.domain}"})
        assert followed.status == 200, followed.text[:300]

        async def thread_on_charity() -> Any:
            async with charity.node.transaction(reading=True) as session:
                return (
                    await session.execute(select(Thread.id).where(Thread.title == "Results"))
                ).scalar()

        # (the group's outbox sends new threads to followers; post once the follow is in)
        await eventually(lambda: _followed(charity), "the Accept on the charity")
        second = secret("Mine was 8.7 last spring; my endo is Dr Rowe at St Mary's")
        page = await nurse.post(thread_path + "/reply", {"body": second})
        assert page.status == 200, page.text[:300]
        charity_thread = await eventually(thread_on_charity, "the thread on the charity")
        answer = secret("You are not alone, I was at 10.2 in March and now 6.9")
        page = await bea.post(f"/t/{charity_thread}/reply", {"body": answer})
        assert page.status == 200, page.text[:300]

        async def answer_on_hospital() -> Any:
            async with hospital.node.transaction(reading=True) as session:
                return (
                    await session.execute(select(Post.id).where(Post.source == answer))
                ).scalar()

        await eventually(answer_on_hospital, "the reply on the hospital")
        # And someone searches the directory, and follows the private group's join link
        await bea.get("/?q=" + secret("insulin pump failure"))
        async with hospital.node.transaction(reading=True) as session:
            code = (
                await session.execute(
                    select(ConditionGroup.join_code).where(ConditionGroup.slug == hush_slug)
                )
            ).scalar_one()
        secrets_.append(code)
        asker = await hospital.browser()
        await asker.register("asker", secret("quiet river 5521 lamps"))
        await asker.get(f"/g/{hush_slug}/ask/{code}")
        asked = await asker.post(f"/g/{hush_slug}/ask/{code}")
        assert asked.status == 200, asked.text[:300]
    finally:
        for running in (hospital, charity):
            await running.close()
        logging.getLogger().removeHandler(json_handler)

    # Then no log record holds any of it, nor the address of anyone who made a request
    assert len(caplog.records) > 50  # the servers did log, for a start
    # (and no part of a post that a log could have shortened or escaped)
    secrets_ += ["127.0.0.1", "HbA1c", "pat@example.org", "Dr Rowe", "10.2 in March", "pump fail"]
    found: set[tuple[str, tuple[str, ...]]] = set()
    for record in caplog.records:
        written = _logged(record)
        leaked = [text for text in secrets_ if text in written]
        if leaked:
            found.add((record.name, tuple(leaked)))
    assert not found, found
    # And the JSON lines neither: each one object, the requests' lines with their ids
    lines = json_lines.getvalue().splitlines()
    assert len(lines) >= len(caplog.records)
    written = [json.loads(line) for line in lines]
    for line, record in zip(lines, written, strict=True):
        unescaped = line + "\n" + json.dumps(record, ensure_ascii=True)
        leaked = [text for text in secrets_ if text in unescaped or text in str(record)]
        assert not leaked, (record["logger"], leaked)
    access = [record for record in written if record["logger"] == "aiohttp.access"]
    assert access and all(len(record["request_id"]) == 32 for record in access)


async def _followed(running: RunningNode) -> Any:
    async with running.node.transaction(reading=True) as session:
        return (
            await session.execute(
                select(Membership.group_id).where(
                    Membership.state == "active", Membership.follow_activity_id.is_not(None)
                )
            )
        ).scalar()


# --- pages request nothing from another host --------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/run installs it under CI)",
)
ELSEWHERE = "elsewhere.example"
REMOTE_IMAGE = f"https://{ELSEWHERE}/pixel.png"
# GET routes no seeded value fills, each with why. A new route with a parameter the test
# cannot fill fails the test until it is filled (FILLS) or listed here.
UNFILLABLE: dict[str, str] = {
    "/logo/{name}": "an image the node serves itself, never a page (tests/test_node_identity.py)",
    "/static/{name}": "the stylesheet and script, no page (tests/test_static_assets.py)",
}
# Signed out, then as a member, a moderator and an admin (the seed's people).
ROLES = (None,)


@dataclass
class Community:
    """A served node with something on every page: an admin (ada), a group owner (olivia), a
    moderator (mo) and a member (max) of a public and a private group, threads and replies in
    both, a remote member and a remote group, a remote reply carrying an image from another
    host, a report, and published activities."""

    base: str
    fills: dict[str, list[str]]
    app: web.Application


async def _seed(node: NodeContext) -> dict[str, list[str]]:
    now = node.clock.now()
    async with node.transaction() as session:
        ada = await register(session, node, "ada", admin=True)
        olivia, mo, max_ = [await register(session, node, name) for name in ("olivia", "mo", "max")]
        public = await found_group(session, node, olivia, "sugar", name="Sugar Talk")
        private = await found_group(session, node, olivia, "quiet_room", private=True)
        stranger = await remote.upsert_remote_member(
            session, _remote_facts("stranger", "members"), now
        )
        remote_group = await remote.upsert_remote_group(
            session, _remote_facts("faraway", "groups"), now
        )
        for group in (public, private):
            for member, role in ((mo, "moderator"), (max_, "member")):
                await put_membership(session, None, group.id, member.id, "active", now, role=role)
        # Following the public group, as the inbox would have it: activities are published.
        await put_membership(session, None, public.id, stranger.id, "active", now)
    threads, posts_ = [], []
    for group in (public, private):
        async with node.transaction() as session:
            view = await view_group(session, group.slug, Viewer(max_.id))
            thread = await start_thread(
                session, node.settings.limits, view, title="Morning readings",
                draft=Draft("Woke at **5.6** today."), now=now,
            )  # fmt: skip
            answer = await reply(
                session, node.settings.limits, Viewer(mo.id), thread_id=thread.id,
                parent_id=None, draft=Draft("Well done."), now=now,
            )  # fmt: skip
        threads.append(thread.id)
        posts_.append(answer.id)
    async with node.transaction() as session:
        # A remote reply whose HTML shows an image from its own server.
        far = await reply(
            session, node.settings.limits, Viewer(stranger.id), thread_id=threads[0],
            parent_id=None, now=now, draft=Draft(
                "look", html=f'<p>look <img src="{REMOTE_IMAGE}" alt="chart"></p>',
                ap_id=f"https://{ELSEWHERE}/notes/1",
            ),
        )  # fmt: skip
        posts_.append(far.id)
        report = await file_report(
            session, category=ReportCategory.HARASSMENT, now=now, group_id=public.id,
            post_id=posts_[0], reporter_id=max_.id, comment="rude",
        )  # fmt: skip
        activities = list((await session.execute(select(OutboxActivity.id))).scalars())
    assert activities, "no activity was published to the remote follower"
    return {
        "username": [max_.username, f"{stranger.username}@{ELSEWHERE}", ada.username],
        "slug": [public.slug, private.slug, f"{remote_group.slug}@{ELSEWHERE}"],
        "thread_id": threads,
        "post_id": posts_,
        "code": [private.join_code],
        "report_id": [str(report.id)],
        "activity_id": activities[:1],
        # One-time links: a token that was never issued answers the page that says so.
        "token": ["A" * 43],
    }


def _remote_facts(name: str, kind: str) -> remote.RemoteActorFacts:
    iri = f"https://{ELSEWHERE}/{kind}/{name}"
    return remote.RemoteActorFacts(
        iri=iri, username=name, domain=ELSEWHERE, display_name=name.title(), summary="",
        inbox=f"{iri}/inbox", shared_inbox=None, profile_url=None,
    )  # fmt: skip


@pytest.fixture
async def community(node: NodeContext) -> AsyncIterator[Community]:
    server = TestServer(create_app(node))
    await server.start_server()  # first: the app's outbox records what the seed publishes
    try:
        base = str(server.make_url("")).rstrip("/")
        yield Community(base, await _seed(node), server.app)
    finally:
        await server.close()


def every_page(app: web.Application, fills: dict[str, list[str]]) -> list[str]:
    """Every GET route of the app's router, each parameter filled with each seeded value
    (for routes of several parameters, every combination): new pages are covered as they
    are added."""
    paths: list[str] = []
    for resource in app.router.resources():
        if not any(route.method == "GET" for route in resource):
            continue
        info = resource.get_info()
        if "directory" in info:  # static files: the one the pages use
            paths.append(f"{info['prefix']}/style.css")
            continue
        pattern = resource.canonical
        names = re.findall(r"\{(\w+)", pattern)
        if pattern in UNFILLABLE:
            continue
        missing = [name for name in names if name not in fills]
        assert not missing, f"{pattern}: fill {missing} from the seed, or list it in UNFILLABLE"
        for values in itertools.product(*(fills[name] for name in names)):
            path = pattern
            for name, value in zip(names, values, strict=True):
                path = re.sub(r"\{" + name + r"[^}]*\}", value, path)
            paths.append(path)
    return paths


def _same_origin(url: str, base: str) -> bool:
    if url.startswith(("data:", "about:", "blob:")):
        return True
    there, here = urlsplit(url), urlsplit(base)
    return (there.scheme, there.netloc) == (here.scheme, here.netloc)


async def _visit_all(chromium: Any, base: str, paths: list[str], who: str | None) -> list[str]:
    """Load every path as `who` (or signed out); answers what went, or tried to go, elsewhere:
    requests to other origins (aborted, never sent) and loads the page's CSP refused."""
    context = await chromium.new_context()
    elsewhere: list[str] = []

    async def refuse(route: Any) -> None:
        elsewhere.append(f"request {route.request.url}")
        await route.abort()

    await context.route(lambda url: not _same_origin(url, base), refuse)
    page = await context.new_page()
    page.on(
        "console",
        lambda message: (
            elsewhere.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    if who is not None:
        await page.goto(f"{base}/login")
        await page.fill("#f-username", who)
        await page.fill("#f-password", DEFAULT_PASSWORD)
        await page.press("#f-password", "Enter")
        await page.wait_for_load_state()
        assert "/login" not in page.url, f"{who} could not sign in"
    for path in paths:
        before = len(elsewhere)
        try:
            response = await page.goto(base + path, wait_until="load")
        except Exception as error:  # playwright's Error; documents for servers download
            assert "Download is starting" in str(error), (who, path, error)
            continue
        assert response is None or response.status < 500, (who, path, response.status)
        elsewhere[before:] = [
            f"{who or 'signed out'} {path}: {item}" for item in elsewhere[before:]
        ]
    await context.close()
    return elsewhere


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    from tests.test_browser import CHROMIUM_ARGS  # (it skips itself without playwright)

    async with playwright_api.async_playwright() as playwright:
        # Debian's Chromium, never a browser downloaded by Playwright.
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@needs_chromium
async def test_no_page_requests_anything_from_another_host(
    community: Community, chromium: Any
) -> None:
    paths = every_page(community.app, community.fills)
    assert {"/", "/g/sugar", "/admin/audit", "/notifications"} <= set(paths)
    assert len(paths) > 40
    visits = [_visit_all(chromium, community.base, paths, who) for who in ROLES]
    elsewhere = [item for found in await asyncio.gather(*visits) for item in found]
    assert elsewhere == []


@needs_chromium
async def test_a_remote_posts_images_are_not_fetched(community: Community, chromium: Any) -> None:
    context = await chromium.new_context()
    page = await context.new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    thread_id = community.fills["thread_id"][0]
    await page.goto(f"{community.base}/t/{thread_id}", wait_until="load")
    assert "look" in await page.inner_text("main")
    images = await page.evaluate("[...document.images].map(image => image.src)")
    assert REMOTE_IMAGE not in images and REMOTE_IMAGE not in asked
    await context.close()


def test_the_content_security_policy_names_no_other_origin() -> None:
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in SECURITY_HEADERS["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"  # fonts, scripts, frames, connections: none
    for directive, sources in policy.items():
        assert set(sources.split()) <= {"'self'", "'none'"}, directive
