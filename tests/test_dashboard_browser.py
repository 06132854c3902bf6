"""The admins' dashboard in a real headless Chromium: it fits a 360 px phone, and each chart is
an image with a name and a table that says the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node.runtime import NodeContext
from tests.browser import DEFAULT_PASSWORD
from tests.test_browser import PHONE, chromium, pytestmark  # noqa: F401
from tests.test_dashboard import NOW, move_to, seed, web_node  # noqa: F401
from web.app import create_app


@pytest.fixture
async def site(web_node: NodeContext) -> AsyncIterator[str]:  # noqa: F811
    await seed(web_node)
    move_to(web_node, NOW)
    server = TestServer(create_app(web_node))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_dashboard_fits_a_phone_and_names_its_charts(
    site: str,
    chromium: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    page = await chromium.new_page(viewport=PHONE)
    await page.goto(f"{site}/login?next=/admin")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", DEFAULT_PASSWORD)
    await page.click("main button[type=submit]")
    await page.wait_for_url(f"{site}/admin")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"/admin scrolls sideways by {overflow}px at 360px"
    charts = await page.evaluate(
        """[...document.querySelectorAll('svg.chart')].map(svg => ({
             name: svg.getAttribute('aria-labelledby').split(' ')
                     .map(id => document.getElementById(id).textContent).join(' '),
             width: svg.getBoundingClientRect().width,
             table: !!svg.parentElement.querySelector('details table caption')}))"""
    )
    assert len(charts) == 12
    for chart in charts:
        assert chart["name"].startswith(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) and chart["table"]
        assert 0 < chart["width"] <= PHONE["width"]
    await page.screenshot(path=str(tmp_path / "dashboard-360.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.screenshot(path=str(tmp_path / "dashboard-1280.png"), full_page=True)
