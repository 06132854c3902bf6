"""The admins' pages in a real headless Chromium on a 360 px wide phone: no sideways
scrolling, and the federation health table stacked instead of wrapped letter by letter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node import federation_policy
from node.runtime import NodeContext
from node.storage.models import RemoteHost
from tests.browser import DEFAULT_PASSWORD
from tests.test_admin_federation import seed
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE, playwright_api
from web.app import create_app

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no Chromium installed")
DESKTOP = {"width": 1280, "height": 800}
ADMIN_PAGES = ("/admin/federation", "/admin/members", "/admin/settings", "/about")


@pytest.fixture
async def admin_site(node: NodeContext) -> AsyncIterator[str]:
    """A served node with an admin, deliveries to several servers (one paused, one with a
    long error) and a blocked domain with a long reason."""
    await seed(node)
    now = node.clock.now()
    async with node.transaction() as session:
        session.add(
            RemoteHost(
                host="a-rather-long-server-name.hospital-trust.example",
                consecutive_failures=2,
                last_error="ClientConnectorError: Cannot connect to host "
                "a-rather-long-server-name.hospital-trust.example:443 ssl:default",
                last_error_at=now - timedelta(minutes=5),
            )
        )
        await federation_policy.list_domain(
            session, "spam.example", federation_policy.ListKind.BLOCK,
            reason="Sent unsolicited advertising to three groups in one night",
            now=now, actor_label="admin", actor_id=None,
        )  # fmt: skip
    server = TestServer(create_app(node))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
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


async def signed_in_page(chromium: Any, base: str, viewport: dict[str, int]) -> Any:
    page = await chromium.new_page(viewport=viewport)
    await page.goto(base + "/login")
    await page.fill("#f-username", "admin")
    await page.fill("#f-password", DEFAULT_PASSWORD)
    await page.click("main button[type=submit]")
    await page.wait_for_url(base + "/")
    return page


async def sideways_overflow(page: Any) -> int:
    overflow: int = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


async def test_admin_pages_fit_a_360px_phone_and_the_health_table_stacks(
    admin_site: str, chromium: Any, tmp_path: Path
) -> None:
    page = await signed_in_page(chromium, admin_site, PHONE)
    for path in ADMIN_PAGES:
        response = await page.goto(admin_site + path)
        assert response is not None and response.status == 200, path
        overflow = await sideways_overflow(page)
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 360px"
    await page.goto(admin_site + "/admin/federation")
    await page.screenshot(path=str(tmp_path / "admin-federation-360.png"), full_page=True)
    # Each cell of the health table takes the row's width, named by its column, so words
    # are not broken letter by letter
    widths = await page.evaluate(
        "[...document.querySelectorAll('#hosts td')].map(c => c.getBoundingClientRect().width)"
    )
    assert widths and min(widths) >= 250, widths
    labels = await page.evaluate(
        """[...document.querySelectorAll('#hosts td')].map(
             c => getComputedStyle(c, '::before').content)"""
    )
    assert '"State: "' in labels
    state = await page.text_content("#hosts tbody tr:first-child td")
    assert state is not None and "Paused after repeated failures" in state


async def test_the_health_table_is_a_table_on_a_wide_screen(admin_site: str, chromium: Any) -> None:
    page = await signed_in_page(chromium, admin_site, DESKTOP)
    await page.goto(admin_site + "/admin/federation")
    display = await page.evaluate("getComputedStyle(document.querySelector('#hosts td')).display")
    assert display == "table-cell"
    assert await sideways_overflow(page) <= 0
