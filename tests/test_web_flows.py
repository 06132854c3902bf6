"""The person's journey through the real app: register, create or join a group, post, reply."""

from __future__ import annotations

from node.runtime import NodeContext
from tests.browser import Browser
from tests.conftest import BrowserFactory


async def create_group(browser: Browser, slug: str, name: str, **fields: str) -> None:
    await browser.get("/groups/new")
    page = await browser.post(
        "/groups/new",
        {"slug": slug, "name": name, "visibility": "public", "tags": "", **fields},
    )
    assert page.status == 200, page.text
    assert page.path == f"/g/{slug}"


async def test_register_create_group_start_thread_and_reply(
    browser_factory: BrowserFactory,
) -> None:
    # Given a new member who starts a group
    alice = await browser_factory()
    await alice.register("alice", display_name="Al")
    await create_group(alice, "t1d", "Type 1 diabetes", tags="diabetes, type 1")

    # When she starts a thread
    page = await alice.post(
        "/g/t1d/new", {"title": "Night hypos", "body": "Anyone **else** wake at 3am?"}
    )
    assert page.status == 200
    assert page.path.startswith("/t/")
    thread_path = page.path
    assert "<strong>else</strong>" in page.html

    # And another member joins and replies
    bob = await browser_factory()
    await bob.register("bob")
    assert (await bob.post("/g/t1d/join")).status == 200
    page = await bob.post(f"{thread_path}/reply", {"body": "Yes, every week."})
    assert page.status == 200

    # Then everyone, signed in or not, reads the same thread
    anonymous = await browser_factory()
    page = await anonymous.get(thread_path)
    assert page.status == 200
    assert "Night hypos" in page.text
    assert "Yes, every week." in page.text
    directory = await anonymous.get("/?tag=diabetes")
    assert "Type 1 diabetes" in directory.text


async def test_security_headers_on_every_page(browser: Browser, node: NodeContext) -> None:
    for path in ("/", "/login", "/g/missing", "/static/style.css"):
        async with browser.client.get(path) as response:
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            # Our own static scripts only: no inline script, no other origin's.
            assert "script-src 'self';" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["Referrer-Policy"] == "no-referrer"
