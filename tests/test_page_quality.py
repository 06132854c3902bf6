"""The quality bars of every page, in a real headless Chromium: axe-core finds no serious or
critical problem, signed out and signed in as a member, a group moderator, a group owner and
an admin; no page scrolls sideways at 360 px, with 200 % text too; no page weighs over 100 KB
compressed on first load; and the core actions (sign up, join, start a thread, reply) work with
JavaScript off. Screenshots of the main pages at 1280 and 360 px go to build/screenshots/.

One Chromium, one seeded node and one server serve the whole module (module-scoped, on the
module's event loop); the pages come from the catalogue in tests/site_pages.py."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from federation.keysink import attach_actor_keys
from node.config import Settings, SmtpSettings, SmtpTls
from node.runtime import NodeContext
from tests import databases
from tests.browser import DEFAULT_PASSWORD
from tests.clock import ManualClock
from tests.conftest import CHEAP_PASSWORDS
from tests.keypool import pooled_key_pair
from tests.site_pages import PAGES, USERNAME, VISITOR, PageCase, Seeded, seed
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE, playwright_api
from tests.test_browser import pytestmark as needs_chromium
from web.app import create_app

pytestmark = [needs_chromium, pytest.mark.asyncio(loop_scope="module")]

AXE = Path(__file__).parent / "fixtures" / "axe.min.js"
SCREENSHOTS = Path(__file__).parent.parent / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PAGE_WEIGHT_LIMIT = 100_000  # bytes, gzip-compressed, HTML and every sub-resource fetched
BLOCKING = ("serious", "critical")


@dataclass(frozen=True)
class Site:
    base: str
    seeded: Seeded
    chromium: Any
    signed_in: dict[str, Any]  # role -> Playwright storage state (its session cookie)

    async def context(self, role: str, **options: Any) -> Any:
        state = self.signed_in.get(role)
        return await self.chromium.new_context(storage_state=state, **options)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(
    test_databases: databases.TestDatabases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    data_dir = tmp_path_factory.mktemp("quality")
    url = await test_databases.fresh("quality", data_dir)
    # A mail server is configured (and never used) so that the email pages exist.
    smtp = SmtpSettings("127.0.0.1", "node@example.org", port=9, tls=SmtpTls.NONE)
    settings = Settings(
        domain="localhost:8080",
        data_dir=data_dir,
        database_url=url,
        password_cost=CHEAP_PASSWORDS,
        smtp=smtp,
    )
    node = await NodeContext.open(settings, clock=ManualClock())
    attach_actor_keys(node, pooled_key_pair)
    seeded = await seed(node)
    server = TestServer(create_app(node))
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with playwright_api.async_playwright() as playwright:
            chromium = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                signed_in = {}
                for role, username in USERNAME.items():
                    context = await chromium.new_context()
                    page = await context.new_page()
                    await sign_in(page, base, username)
                    signed_in[role] = await context.storage_state()
                    await context.close()
                yield Site(base, seeded, chromium, signed_in)
            finally:
                await chromium.close()
    finally:
        await server.close()
        await node.close()


async def sign_in(page: Any, base: str, username: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#f-username", username)
    await page.fill("#f-password", DEFAULT_PASSWORD)
    async with page.expect_navigation():
        await page.click("main button[type=submit]")
    assert "/login" not in page.url, f"{username} could not sign in"


async def open_page(page: Any, site: Site, role: str, case: PageCase) -> None:
    """Open the page and check it is the page itself, for this role, not an error or a
    redirect to the sign-in form."""
    address = site.seeded.address(case)
    response = await page.goto(site.base + address)
    assert response is not None and response.status == 200, (
        f"{address} as {role}: {response and response.status}"
    )
    assert page.url == site.base + address, f"{address} as {role} went to {page.url}"


async def every_page(site: Site, viewport: dict[str, int]) -> AsyncIterator[tuple[str, Any]]:
    """Open each page of the catalogue for each role that may, in one tab per role (a fresh
    context, signed in as that role), and hand it over once loaded as "<address> as <role>"."""
    for role in (VISITOR, *USERNAME):
        context = await site.context(role, viewport=viewport)
        page = await context.new_page()
        try:
            for case in PAGES:
                if role in case.who:
                    await open_page(page, site, role, case)
                    if case.shot and role == case.who[0]:
                        name = f"{case.shot}-{viewport['width']}.png"
                        await page.screenshot(path=SCREENSHOTS / name, full_page=True)
                    yield f"{site.seeded.address(case)} as {role}", page
        finally:
            await context.close()


async def axe_violations(page: Any, rules: tuple[str, ...] = ()) -> list[str]:
    """The serious and critical violations axe-core finds on the page, each with its rule and
    the nodes; `rules` runs only those. axe is evaluated by the driver, so the page's CSP (no
    script at all) does not refuse it."""
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.evaluate(axe_source())
    options = {"resultTypes": ["violations"], **({"runOnly": list(rules)} if rules else {})}
    violations = await page.evaluate(
        """async (options) => (await axe.run(document, options)).violations.map(v => ({
             id: v.id, impact: v.impact, help: v.help,
             nodes: v.nodes.map(n => n.target.join(' '))}))""",
        options,
    )
    return [
        f"{v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
        for v in violations
        if v["impact"] in BLOCKING
    ]


@cache
def axe_source() -> str:
    return AXE.read_text()


async def test_axe_finds_no_serious_or_critical_problem_on_any_page(site: Site) -> None:
    problems = [
        f"{what}: {violation}"
        async for what, page in every_page(site, DESKTOP)
        for violation in await axe_violations(page)
    ]
    assert not problems, "axe-core found:\n" + "\n".join(problems)


async def test_no_page_scrolls_sideways_at_360px_even_with_200_percent_text(site: Site) -> None:
    """Nothing sticks out of a 360 px screen, with the text at its size and at twice it; what
    scrolls within the page (a code block, a table) can be scrolled with the keyboard."""
    problems: list[str] = []
    async for what, page in every_page(site, PHONE):
        for text in ("100 %", "200 %"):
            if text == "200 %":  # twice the text size the page's own stylesheet sets
                await page.evaluate(DOUBLE_THE_TEXT)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 0:
                wide = await page.evaluate(WIDEST_ELEMENTS)
                problems.append(f"{what}, {text} text: {overflow}px too wide, at {wide}")
            for violation in await axe_violations(page, ("scrollable-region-focusable",)):
                problems.append(f"{what}, {text} text: {violation}")
    assert not problems, "\n".join(problems)


DOUBLE_THE_TEXT = """(() => {
  const root = document.documentElement;
  root.style.fontSize = 2 * parseFloat(getComputedStyle(root).fontSize) + 'px';
})()"""

# What sticks out past the viewport's right edge (a box, or text overflowing its box),
# innermost first and outside any box that scrolls on its own, to say what to fix.
WIDEST_ELEMENTS = """(() => {
  const limit = document.documentElement.clientWidth + 0.5;
  const scrolls = e => ['auto', 'scroll', 'hidden'].includes(getComputedStyle(e).overflowX);
  const inScroller = e => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      if (scrolls(a)) return true;
    }
    return false;
  };
  const wide = e => e.getBoundingClientRect().right > limit
    || (e.scrollWidth > e.clientWidth + 1 && !scrolls(e));
  const found = [...document.querySelectorAll('body *')].filter(e => !inScroller(e) && wide(e));
  return found.filter(e => !found.some(f => f !== e && e.contains(f))).slice(0, 5)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
         + (typeof e.className === 'string' && e.className ? '.' + e.className : ''));
})()"""


async def test_no_page_weighs_over_100_kb_compressed_on_first_load(site: Site) -> None:
    """The gzip-compressed size of the HTML and of every sub-resource the browser fetched for
    it, with the browser's cache off (each page as on a first visit); all from this node."""
    heavy: list[str] = []
    for role in (VISITOR, *USERNAME):
        context = await site.context(role)
        page = await context.new_page()
        devtools = await context.new_cdp_session(page)
        await devtools.send("Network.enable")
        await devtools.send("Network.setCacheDisabled", {"cacheDisabled": True})
        fetched: list[Any] = []
        page.on("response", lambda response, into=fetched: into.append(response))
        for case in PAGES:
            if role not in case.who:
                continue
            fetched.clear()
            await open_page(page, site, role, case)
            await page.wait_for_load_state("load")
            what = f"{site.seeded.address(case)} as {role}"
            urls = [response.url for response in fetched]
            assert all(url.startswith(site.base) for url in urls), f"{what}: {urls}"
            assert any("/static/style." in url for url in urls), f"{what}: {urls}"
            total = 0
            for response in fetched:
                if not 300 <= response.status < 400:  # a redirect has no body
                    total += len(gzip.compress(await response.body()))
            if total > PAGE_WEIGHT_LIMIT:
                heavy.append(f"{what}: {total} bytes compressed, in {len(fetched)} answers")
        await context.close()
    assert not heavy, "\n".join(heavy)


async def test_sign_up_join_start_a_thread_and_reply_with_javascript_off(site: Site) -> None:
    context = await site.chromium.new_context(viewport=PHONE, java_script_enabled=False)
    page = await context.new_page()
    base = site.base

    # Given a new person signs up with the form alone
    await page.goto(f"{base}/register")
    await page.fill("#f-username", "noscript")
    await page.fill("#f-password", DEFAULT_PASSWORD)
    await page.fill("#f-password_again", DEFAULT_PASSWORD)
    await page.check("#f-consent")
    async with page.expect_navigation():
        await page.click("main form[action='/register'] button[type=submit]")
    assert "Sign out" in await page.inner_text("header")

    # When they join the public group
    await page.goto(f"{base}/g/{site.seeded.names['group']}")
    async with page.expect_navigation():
        await page.click("form[action$='/join'] button[type=submit]")
    assert await page.locator("a.button", has_text="Start a thread").count() == 1

    # And start a thread
    async with page.expect_navigation():
        await page.click("a.button:has-text('Start a thread')")
    await page.fill("#f-title", "Hello from a phone without scripts")
    await page.fill("#f-body", "Does this work for everyone?")
    async with page.expect_navigation():
        await page.click("main form[action$='/new'] button[type=submit]")
    assert "/t/" in page.url
    assert "Does this work for everyone?" in await page.inner_text("main")

    # Then they can reply in it, and the reply shows
    await page.fill("#f-body", "Replying works too.")
    async with page.expect_navigation():
        await page.click("#send-reply")
    assert "Replying works too." in await page.inner_text("main")
    await context.close()
