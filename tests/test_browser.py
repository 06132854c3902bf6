"""Pages in a real headless Chromium: a 360 px wide phone, and a person using only the keyboard."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node import groups, members, posts
from node.policy import Viewer
from node.runtime import NodeContext
from tests.browser import DEFAULT_PASSWORD
from web.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/run installs it under CI)",
)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}


@pytest.fixture
async def site(node: NodeContext) -> AsyncIterator[tuple[str, str]]:
    """A served node with a member, a group and a thread with a long reply."""
    now = node.clock.now()
    async with node.transaction() as session:
        alice = await members.create_member(
            session, node.passwords, node.settings.limits,
            username="alice", password=DEFAULT_PASSWORD, display_name="Alice", now=now,
        )  # fmt: skip
        await groups.create_group(
            session, node.settings.limits, owner_id=alice.id, slug="long_covid",
            name="Long COVID carers", description="Support for people caring for someone.",
            tags="long-covid, carers", now=now,
        )  # fmt: skip
        view = await groups.view_group(session, "long_covid", Viewer(alice.id))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Pacing on bad days",
            draft=posts.Draft("What helps you plan a day?\n\n" + "averyveryverylongword" * 12),
            now=now,
        )  # fmt: skip
    server = TestServer(create_app(node))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), thread.id
    finally:
        await server.close()


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_pages_fit_a_360px_phone_without_sideways_scrolling(
    site: tuple[str, str], chromium: Any, tmp_path: Path
) -> None:
    base, thread_id = site
    page = await chromium.new_page(viewport=PHONE)
    for path in ("/", "/register", "/login", "/g/long_covid", f"/t/{thread_id}"):
        response = await page.goto(base + path)
        assert response is not None and response.status == 200, path
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 360px"
        # Every input a person can reach has a label the browser knows.
        unlabelled = await page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
               .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
        )
        assert unlabelled == [], f"{path} has inputs without labels: {unlabelled}"
    await page.screenshot(path=str(tmp_path / "thread-360.png"), full_page=True)


async def test_keyboard_only_sign_in_and_reply_with_visible_focus(
    site: tuple[str, str], chromium: Any
) -> None:
    base, thread_id = site
    page = await chromium.new_page(viewport=PHONE)
    await page.goto(f"{base}/login?next=/t/{thread_id}")

    # Given the first Tab lands on the skip link, which is visible when focused
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.className")
    assert focused == "skip-link"
    box = await page.evaluate("JSON.stringify(document.activeElement.getBoundingClientRect().left)")
    assert float(box) >= 0
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"

    # When the person follows it and fills the sign-in form with the keyboard alone
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    await _tab_until(page, "f-username")
    await page.keyboard.type("alice")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "f-password"
    await page.keyboard.type(DEFAULT_PASSWORD)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")

    # Then they are back on the thread, signed in, and can reply by keyboard
    assert f"/t/{thread_id}" in page.url
    await _tab_until(page, "f-body")
    await page.keyboard.type("Lists on the fridge help me.")
    await _tab_until(page, "send-reply")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert "Lists on the fridge help me." in await page.inner_text("main")


async def _tab_until(page: Any, element_id: str, limit: int = 60) -> None:
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == element_id:
            outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"no visible focus on #{element_id}"
            return
    raise AssertionError(f"#{element_id} is not reachable with Tab")
