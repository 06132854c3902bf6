"""A poll in a real headless Chromium: made on the new-thread form and answered without any
script, on a 360 px wide phone, every field labelled, and no style the page's CSP refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node import groups, members, membership
from node.policy import Viewer
from node.runtime import NodeContext
from tests.browser import DEFAULT_PASSWORD
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE, playwright_api, pytestmark
from web.app import create_app


@pytest.fixture
async def served(node: NodeContext) -> AsyncIterator[str]:
    """alice owns the public group "carers"; bob belongs to it."""
    now = node.clock.now()
    async with node.transaction() as session:
        ids = {}
        for name in ("alice", "bob"):
            created = await members.create_member(
                session, node.passwords, node.settings.limits, username=name,
                password=DEFAULT_PASSWORD, display_name=name.title(), now=now,
            )  # fmt: skip
            ids[name] = created.id
        await groups.create_group(
            session, node.settings.limits, owner_id=ids["alice"], slug="carers",
            name="Carers", description="For people caring for someone.", now=now,
        )  # fmt: skip
        view = await groups.view_group(session, "carers", Viewer(ids["bob"]))
        await membership.join(session, view, now)
    server = TestServer(create_app(node))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


__all__ = ["pytestmark"]  # Chromium missing: skipped, as tests/test_browser.py is


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


async def sign_in(page: Any, base: str, username: str, next_path: str) -> None:
    await page.goto(f"{base}/login?next={next_path}")
    await page.fill("#f-username", username)
    await page.fill("#f-password", DEFAULT_PASSWORD)
    async with page.expect_navigation():
        await page.click("button[type=submit]")


async def fits_and_is_labelled(page: Any, what: str) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{what} scrolls sideways by {overflow}px at 360px"
    unlabelled = await page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
           .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
    )
    assert unlabelled == [], f"{what} has inputs without labels: {unlabelled}"


async def test_a_poll_is_made_and_answered_in_chromium_without_script(
    served: str, chromium: Any
) -> None:
    base = served
    refused: list[str] = []
    context = await chromium.new_context(viewport=PHONE, java_script_enabled=False)
    alice = await context.new_page()
    alice.on("console", lambda message: refused.append(message.text))

    # Given alice fills the new-thread form with a poll, scripts off
    await sign_in(alice, base, "alice", "/g/carers/new")
    await fits_and_is_labelled(alice, "the new-thread form")
    await alice.fill("#f-title", "Respite")
    await alice.fill("#f-body", "How often do you get a break?")
    await alice.fill("#f-poll_option_1", "Weekly")
    await alice.fill("#f-poll_option_2", "Monthly")
    await alice.fill("#f-poll_option_3", "Never")
    await alice.fill("#f-poll_closes", "2026-11-02T12:00")
    async with alice.expect_navigation():
        await alice.click("form[action$='/new'] button[type=submit]")
    assert "/t/" in alice.url
    thread_path = alice.url.removeprefix(base)

    # When bob opens it, chooses with the radio buttons, and votes
    bob_context = await chromium.new_context(viewport=PHONE, java_script_enabled=False)
    bob = await bob_context.new_page()
    bob.on("console", lambda message: refused.append(message.text))
    await sign_in(bob, base, "bob", thread_path)
    await fits_and_is_labelled(bob, "the thread with its poll")
    assert "Results show after you vote" not in await bob.inner_text("#poll")
    await bob.check("label:has-text('Never')")
    async with bob.expect_navigation():
        await bob.click("#vote")

    # Then the results show, text first, with bars drawn by the page's own stylesheet
    text = await bob.inner_text("#poll")
    assert "Never: 1 vote (your choice)" in text, text
    assert "Weekly: 0 votes" in text and "1 voter" in text
    assert await bob.locator("meter.poll-bar").count() == 3
    await fits_and_is_labelled(bob, "the poll's results")
    assert not [line for line in refused if "Content Security Policy" in line], refused
    await context.close()
    await bob_context.close()
