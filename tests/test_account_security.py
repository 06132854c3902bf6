"""A member's account security over real HTTP: changing the password, recovery without email
(the `healthnode member reset-password` command and the admins' button), and the sessions
page. Two browsers are two sessions of one member."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from node import members
from node.runtime import NodeContext
from node.storage.models import WebSession
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.clock import ManualClock
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import eventually, free_port
from tests.test_cli import COMMAND_TIMEOUT, command, command_env
from tests.test_sign_in_safety import guarded_server

NEW_PASSWORD = "a brand new passphrase"
FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
UNUSABLE = "each link works once, within an hour of being made"
RESET_LINK = re.compile(r"http://localhost:8080(/reset/[A-Za-z0-9_-]{43})")


@pytest.fixture
async def web_node(make_node: NodeFactory) -> NodeContext:
    # The wall clock's time, standing still: a link the command makes (on the wall clock, in
    # its own process) is fresh here, and expires when the test moves this clock on.
    return await make_node(clock=ManualClock(datetime.now(UTC).replace(microsecond=0)))


def clock_of(node: NodeContext) -> ManualClock:
    assert isinstance(node.clock, ManualClock)
    return node.clock


def assert_page(page: Page, status: int, *messages: str) -> None:
    assert page.status == status, f"{page.status} on {page.path}: {page.text[:600]}"
    for message in messages:
        assert message in page.text, f"{message!r} not on {page.path}: {page.text[:800]}"


async def signed_in(browser: Browser) -> bool:
    page = await browser.get("/account/sessions")
    return page.status == 200 and page.path == "/account/sessions"


async def sign_in_as(
    browser: Browser, username: str, password: str = DEFAULT_PASSWORD, user_agent: str = ""
) -> Page:
    headers = {"User-Agent": user_agent} if user_agent else {}
    await browser.get("/login", **headers)
    fields = {"username": username, "password": password}
    page = await browser.post("/login", fields, headers=headers)
    await browser.get("/")
    return page


async def change_password(browser: Browser, current: str, new: str = NEW_PASSWORD) -> Page:
    await browser.get("/account/password")
    fields = {"current_password": current, "new_password": new, "new_password_again": new}
    return await browser.post("/account/password", fields)


async def set_new_password(browser: Browser, path: str, new: str = NEW_PASSWORD) -> Page:
    form_page = await browser.get(path)
    if form_page.status != 200:
        return form_page
    return await browser.post(path, {"new_password": new, "new_password_again": new})


# --- changing the password ----------------------------------------------------------------------


async def test_changing_the_password_signs_out_the_other_session_and_keeps_this_one(
    browser_factory: BrowserFactory,
) -> None:
    here, elsewhere, later = [await browser_factory() for _ in range(3)]
    await here.register("alice")
    await sign_in_as(elsewhere, "alice")
    assert await signed_in(elsewhere)

    assert_page(await change_password(here, DEFAULT_PASSWORD), 200, "1 other session was")

    assert await signed_in(here)
    assert not await signed_in(elsewhere)
    assert_page(await sign_in_as(later, "alice", DEFAULT_PASSWORD), 400, "do not match")
    await sign_in_as(later, "alice", NEW_PASSWORD)
    assert await signed_in(later)


async def test_a_wrong_current_password_is_refused_and_counts_as_a_sign_in_guess(
    browser_factory: BrowserFactory,
) -> None:
    here, elsewhere = await browser_factory(), await browser_factory()
    await here.register("alice")
    await sign_in_as(elsewhere, "alice")

    page = await change_password(here, "not my password")
    assert_page(page, 400, "Your current password is not right, so nothing changed.")
    assert await signed_in(elsewhere)  # nothing changed: no session ended

    # The sign-in throttle's free attempts for this account from this address: four more
    # wrong ones, then even the right password waits.
    for _ in range(4):
        assert_page(await change_password(here, "another guess"), 400, "not right")
    assert_page(await change_password(here, DEFAULT_PASSWORD), 429, "Too many attempts")
    assert await signed_in(elsewhere)


async def test_a_new_password_with_a_mistake_costs_no_attempt(
    browser_factory: BrowserFactory,
) -> None:
    here = await browser_factory()
    await here.register("alice")
    await here.get("/account/password")
    fields = {"current_password": DEFAULT_PASSWORD, "new_password": "short"}
    assert_page(await here.post("/account/password", fields), 400, "at least 8 characters")
    assert_page(await change_password(here, DEFAULT_PASSWORD), 200, "Password changed")


# --- recovery --------------------------------------------------------------------------------


async def test_the_sign_in_page_links_to_recovery(browser: Browser) -> None:
    assert 'href="/recover"' in (await browser.get("/login")).html
    assert_page(await browser.get("/recover"), 200, "Ask an admin of this node")


def reset_password_command(node: NodeContext, username: str) -> subprocess.CompletedProcess[str]:
    """`healthnode member reset-password` as an admin runs it, on the node's own database."""
    args = ["member", "reset-password", username, "--data-dir", node.settings.data_dir]
    return subprocess.run(
        command(*args, "--database-url", str(node.settings.database_url)),
        cwd=node.settings.data_dir,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


async def test_the_reset_password_command_prints_a_link_that_works_once_within_an_hour(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    member, elsewhere, later = [await browser_factory() for _ in range(3)]
    await member.register("alice")
    await member.logout()
    await sign_in_as(elsewhere, "alice")

    done = await asyncio.to_thread(reset_password_command, web_node, "alice")
    assert done.returncode == 0, done.stderr
    match = RESET_LINK.fullmatch(done.stdout.strip())
    assert match, done.stdout
    link = match.group(1)

    assert_page(await set_new_password(member, link), 200, "Your new password is set")
    assert not await signed_in(elsewhere)  # every session ends
    assert_page(await member.get(link), 400, UNUSABLE)  # single use
    assert_page(await set_new_password(member, link, "yet another one"), 400, UNUSABLE)
    await sign_in_as(later, "alice", NEW_PASSWORD)
    assert await signed_in(later)

    # A second link, not used within the hour, no longer works.
    done = await asyncio.to_thread(reset_password_command, web_node, "alice")
    expired = RESET_LINK.fullmatch(done.stdout.strip())
    assert expired, done.stdout
    clock_of(web_node).advance(timedelta(hours=1, minutes=5))
    assert_page(await set_new_password(member, expired.group(1), "too late"), 400, UNUSABLE)
    assert await signed_in(later)

    unknown = await asyncio.to_thread(reset_password_command, web_node, "nobody")
    assert unknown.returncode == 1 and "no member called 'nobody'" in unknown.stderr
    assert unknown.stdout == ""


async def test_an_admins_button_makes_a_one_hour_link_shown_once(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    async with web_node.transaction() as session:
        await members.create_member(
            session,
            web_node.passwords,
            web_node.settings.limits,
            username="admin",
            password=DEFAULT_PASSWORD,
            display_name="Admin",
            now=web_node.clock.now(),
            is_admin=True,
        )
    admin, member = await browser_factory(), await browser_factory()
    await member.register("alice")
    assert (await member.get("/admin/members/alice/reset-link")).status == 404  # admins only
    await sign_in_as(admin, "admin")
    assert "/admin/members/alice/reset-link" in (await admin.get("/u/alice")).html

    async def make_link() -> str:
        assert_page(await admin.get("/admin/members/alice/reset-link"), 200, "Make a reset link")
        page = await admin.post("/admin/members/alice/reset-link")
        assert_page(page, 200, "It works once, within one hour")
        match = RESET_LINK.search(page.html)
        assert match, page.text
        return match.group(1)

    stale = await make_link()
    clock_of(web_node).advance(timedelta(minutes=59))
    assert (await member.get(stale)).status == 200  # still within the hour
    clock_of(web_node).advance(timedelta(minutes=2))
    assert_page(await set_new_password(member, stale), 400, UNUSABLE)

    replaced = await make_link()
    link = await make_link()  # the newer link replaces the older
    assert_page(await member.get(replaced), 400, UNUSABLE)
    assert_page(await member.get("/reset/" + "A" * 43), 400, UNUSABLE)  # unknown: the same
    assert_page(await member.get("/reset/short"), 400, UNUSABLE)
    assert await signed_in(member)
    assert_page(await set_new_password(member, link), 200, "Your new password is set")
    assert not await signed_in(member)  # the session the link was used in ends too
    assert_page(await set_new_password(member, link), 400, UNUSABLE)
    await sign_in_as(member, "alice", NEW_PASSWORD)
    assert await signed_in(member)
    audit = await admin.get("/admin/audit")
    assert "made a password reset link for alice" in audit.text
    assert link.removeprefix("/reset/") not in audit.html


async def test_reset_tokens_stay_out_of_the_access_log(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    node = await make_node("logged", domain=f"127.0.0.1:{port}")
    caplog.set_level(logging.DEBUG)
    token = "Tok3n" * 8 + "xyz"
    async with guarded_server(node, port):
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/reset/{token}") as answer:
                assert answer.status == 400
                assert answer.headers["Cache-Control"] == "no-store"

        async def logged() -> list[str] | None:
            lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
            return lines or None

        lines = await eventually(logged, "an access log line", seconds=5)
    assert lines[0].startswith("GET /reset/{token} 400 "), lines
    assert all(token not in record.getMessage() for record in caplog.records)


# --- sessions ------------------------------------------------------------------------------------


def session_keys(page: Page) -> list[str]:
    return re.findall(r'name="session" value="([0-9a-f]+)"', page.html)


async def test_the_sessions_page_lists_devices_and_signs_out_one_or_everywhere(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    phone, laptop, third = [await browser_factory() for _ in range(3)]
    await phone.register("alice")
    await phone.logout()
    await sign_in_as(phone, "alice", user_agent=FIREFOX_ANDROID)
    await sign_in_as(laptop, "alice", user_agent=CHROME_WINDOWS)
    clock_of(web_node).advance(timedelta(hours=2, minutes=10))

    page = await phone.get("/account/sessions")
    assert_page(page, 200, "Firefox on Android (this browser)", "Chrome on Windows")
    assert "about 2 hours ago" in page.text
    async with web_node.transaction(reading=True) as session:
        devices = set((await session.execute(select(WebSession.device))).scalars())
    assert devices == {"Firefox on Android", "Chrome on Windows"}  # never the User-Agent

    # Signing out the laptop from the phone: the first listed is this browser.
    this_one, laptop_key = session_keys(page)
    await phone.post("/account/sessions/end", {"session": laptop_key})
    assert not await signed_in(laptop)
    assert await signed_in(phone)
    page = await phone.post("/account/sessions/end", {"session": laptop_key})
    assert page.status == 404  # already ended; and no other member's session is reachable

    await sign_in_as(third, "alice")
    assert await signed_in(third)
    await phone.get("/account/sessions")
    page = await phone.post("/account/sessions/end-all")
    assert page.path.startswith("/login")
    assert not await signed_in(phone)
    assert not await signed_in(third)
    assert this_one not in (await phone.get("/account/sessions")).html
