"""Everyday polish in a real browser (Debian's Chromium): the browser's time zone reaches the
page through the small script, and after a failed submit the focus is on the error summary,
whose links take the person to each field. The served site and the browser are
tests/test_browser.py's fixtures, used here by name."""
# ruff: noqa: F811

from __future__ import annotations

import re
from typing import Any

from tests.test_browser import PHONE, chromium, pytestmark, site  # noqa: F401


async def test_times_follow_the_browsers_time_zone(site: tuple[str, str], chromium: Any) -> None:
    base, thread_id = site
    context = await chromium.new_context(viewport=PHONE, timezone_id="Europe/Paris")
    page = await context.new_page()
    # The first page is in UTC, and its script tells the node the browser's zone
    await page.goto(f"{base}/t/{thread_id}")
    assert "UTC" in (await page.get_attribute("ol.posts time", "title") or "")
    cookies = {cookie["name"]: cookie["value"] for cookie in await context.cookies()}
    assert cookies.get("tz") == "Europe/Paris"
    # From the next page on, times are in it
    await page.goto(f"{base}/t/{thread_id}")
    title = await page.get_attribute("ol.posts time", "title") or ""
    assert re.fullmatch(r"\d+ \w+ \d{4}, \d\d:\d\d CET", title), title
    assert await page.text_content("ol.posts time") == "just now"
    await context.close()


async def test_a_failed_submit_moves_the_focus_to_the_error_summary(
    site: tuple[str, str], chromium: Any
) -> None:
    base, _ = site
    page = await chromium.new_page(viewport=PHONE)
    await page.goto(f"{base}/register")
    await page.fill("#f-username", "Not valid!")
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    # The page's script moves the focus once it runs, which may be after navigation ends
    await page.wait_for_function(
        "document.activeElement && document.activeElement.id === 'error-summary'", timeout=10_000
    )
    assert await page.evaluate("document.activeElement.id") == "error-summary"
    links = await page.eval_on_selector_all("#error-summary a", "as => as.map(a => a.hash)")
    assert links == ["#f-username", "#f-password", "#f-consent"]
    await page.click("#error-summary a[href='#f-password']")
    assert await page.evaluate("document.activeElement.id") == "f-password"
    assert await page.input_value("#f-username") == "Not valid!"
