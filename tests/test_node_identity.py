"""The node's identity (name, description, logo, contact, who runs it), how people may
register, and the admins' member management, through the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import aiohttp
import pytest
from sqlalchemy import func, select

from node import members
from node.config import IdentityDefaults, RegistrationMode
from node.modlog import ModAction
from node.runtime import NodeContext
from node.storage.models import Member, ModerationLogEntry
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.conftest import BrowserFactory, NodeFactory

AS2 = {"Accept": "application/activity+json"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0" + bytes(100)
WEBP = b"RIFF\x20\x00\x00\x00WEBPVP8 " + bytes(100)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
CONFIGURED = IdentityDefaults(
    name="Leeds Diabetes Peers",
    description="Peer support for people with diabetes in Leeds.",
    contact="hello@leeds.example",
    operator="The Leeds Diabetes Charity",
)


@pytest.fixture
async def web_node(make_node: NodeFactory) -> NodeContext:
    """A node whose configuration file names it (the defaults the settings page overrides)."""
    node = await make_node(identity=CONFIGURED)
    async with node.transaction() as session:
        await members.create_member(
            session, node.passwords, node.settings.limits, username="admin",
            password=DEFAULT_PASSWORD, display_name="Admin", now=node.clock.now(), is_admin=True,
        )  # fmt: skip
    return node


async def admin_browser(browser_factory: BrowserFactory) -> Browser:
    admin = await browser_factory()
    await admin.login("admin")
    return admin


SETTINGS = {"name": "", "description": "", "contact": "", "operator": "", "registration": ""}


async def save_settings(admin: Browser, logo: bytes | None = None, **fields: str) -> Page:
    """Send the settings form as a browser does: multipart, with an optional logo file."""
    await admin.get("/admin/settings")
    form = aiohttp.FormData()
    for key, value in (SETTINGS | fields | {"csrf_token": admin.token}).items():
        form.add_field(key, value)
    if logo is not None:
        form.add_field("logo", logo, filename="logo.bin", content_type="application/octet-stream")
    async with admin.client.post("/admin/settings", data=form) as response:
        page = Page(response.status, response.url.path_qs, await response.text())
    await admin.get("/")
    return page


async def documents(browser: Browser) -> tuple[dict[str, object], dict[str, object]]:
    async with browser.client.get("/nodeinfo/2.1") as response:
        nodeinfo = json.loads(await response.text())
    async with browser.client.get("/actor", headers=AS2) as response:
        actor = json.loads(await response.text())
    return nodeinfo, actor


async def log_actions(node: NodeContext) -> list[str]:
    async with node.transaction() as session:
        rows = await session.scalars(select(ModerationLogEntry.action).order_by("id"))
        return list(rows)


async def test_the_configured_identity_shows_until_the_settings_page_overrides_it(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    # Given a node named by its configuration file
    visitor = await browser_factory()
    home = await visitor.get("/")
    assert "Leeds Diabetes Peers" in home.text
    about = await visitor.get("/about")
    assert about.status == 200
    for words in (CONFIGURED.description, CONFIGURED.contact, CONFIGURED.operator):
        assert words in about.text
    nodeinfo, actor = await documents(visitor)
    assert nodeinfo["metadata"] == {
        "nodeName": "Leeds Diabetes Peers",
        "nodeDescription": CONFIGURED.description,
    }
    assert actor["name"] == "Leeds Diabetes Peers"
    assert actor["summary"] == f"<p>{CONFIGURED.description}</p>"

    # When an admin names it on the settings page, leaving the contact empty
    admin = await admin_browser(browser_factory)
    page = await save_settings(
        admin, name="Leeds Sugar Circle", description="A <friendly> circle.", operator="Volunteers"
    )
    assert page.status == 200 and page.path == "/admin/settings?saved=1", page.text[:300]

    # Then the page's values win everywhere, and the empty field is the configuration's
    about = await visitor.get("/about")
    assert "Leeds Sugar Circle" in about.text and "Volunteers" in about.text
    assert CONFIGURED.contact in about.text
    assert "<friendly>" not in about.html and "&lt;friendly&gt;" in about.html
    assert "Leeds Sugar Circle" in (await visitor.get("/")).text
    nodeinfo, actor = await documents(visitor)
    assert nodeinfo["metadata"] == {
        "nodeName": "Leeds Sugar Circle",
        "nodeDescription": "A <friendly> circle.",
    }
    assert actor["name"] == "Leeds Sugar Circle"
    assert actor["summary"] == "<p>A &lt;friendly&gt; circle.</p>"
    assert ModAction.NODE_SETTINGS in await log_actions(web_node)

    # And emptying the name gives the configured name back
    await save_settings(admin, name="")
    assert "Leeds Diabetes Peers" in (await visitor.get("/about")).text


async def test_a_too_long_name_is_refused_with_a_reason(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    admin = await admin_browser(browser_factory)
    page = await save_settings(admin, name="x" * 81, registration="sometimes")
    assert page.status == 400
    assert "The name is at most 80 characters." in page.text
    assert "Choose open, by approval, or closed." in page.text
    assert ModAction.NODE_SETTINGS not in await log_actions(web_node)


@pytest.mark.parametrize(
    ("image", "media_type"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")]
)
async def test_a_logo_is_served_from_a_fingerprinted_url_with_a_long_cache(
    web_node: NodeContext, browser_factory: BrowserFactory, image: bytes, media_type: str
) -> None:
    admin = await admin_browser(browser_factory)
    page = await save_settings(admin, logo=image)
    assert page.status == 200, page.text[:300]
    visitor = await browser_factory()
    _, actor = await documents(visitor)
    icon = actor["icon"]
    assert isinstance(icon, dict) and icon["mediaType"] == media_type
    path = str(icon["url"]).removeprefix("http://localhost:8080")
    assert path.startswith("/logo/") and f'src="{path}"' in (await visitor.get("/")).html
    async with visitor.client.get(path) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == media_type
        assert "immutable" in response.headers["Cache-Control"]
        assert "max-age=31536000" in response.headers["Cache-Control"]
        assert await response.read() == image
    # Signed in, the same public file keeps its long cache lifetime
    async with admin.client.get(path) as response:
        assert "immutable" in response.headers["Cache-Control"]

    # When the logo is removed, its URL is gone and the actor has no icon
    await save_settings(admin, remove_logo="yes")
    async with visitor.client.get(path) as response:
        assert response.status == 404
    _, actor = await documents(visitor)
    assert "icon" not in actor


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        (SVG, "must be a PNG, JPEG or WebP image (not SVG)"),
        (b"GIF89a" + bytes(50), "must be a PNG, JPEG or WebP image (not SVG)"),
        (PNG + bytes(200 * 1024), "The logo is at most 200 KB."),
    ],
)
async def test_a_logo_that_is_not_a_small_png_jpeg_or_webp_is_refused(
    web_node: NodeContext, browser_factory: BrowserFactory, upload: bytes, reason: str
) -> None:
    admin = await admin_browser(browser_factory)
    page = await save_settings(admin, logo=upload, name="Kept?")
    assert page.status == 400
    assert reason in page.text
    assert 'src="/logo/' not in (await admin.get("/")).html
    assert "Kept?" not in (await admin.get("/about")).text


async def test_a_made_up_logo_name_is_not_found(browser_factory: BrowserFactory) -> None:
    visitor = await browser_factory()
    for name in ("0123456789abcdef.png", "..%2Fnode-secret", "x"):
        async with visitor.client.get(f"/logo/{name}") as response:
            assert response.status == 404


async def test_closed_registration_says_so_and_refuses_a_post(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    admin = await admin_browser(browser_factory)
    await save_settings(admin, registration=RegistrationMode.CLOSED.value)
    visitor = await browser_factory()
    page = await visitor.get("/register")
    assert page.status == 200
    assert "not taking new members" in page.text
    assert 'action="/register"' not in page.html
    assert 'href="/register"' not in (await visitor.get("/")).html  # no Join link either
    page = await visitor.post(
        "/register",
        {"username": "eve", "password": "x" * 12, "password_again": "x" * 12, "consent": "yes"},
    )
    assert page.status == 403
    assert "not taking new members" in page.text
    async with web_node.transaction() as session:
        assert await members.find_member(session, "eve") is None
    nodeinfo, _ = await documents(visitor)
    assert nodeinfo["openRegistrations"] is False


async def test_by_approval_an_applicant_waits_and_an_admin_approves_or_declines(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    admin = await admin_browser(browser_factory)
    await save_settings(admin, registration=RegistrationMode.APPROVAL.value)

    # Given two people who register while accounts need approval
    bob = await browser_factory()
    await bob.register("bob")
    home = await bob.get("/")
    assert "waiting for an admin's approval" in home.text
    carol = await browser_factory()
    await carol.register("carol")
    nodeinfo, _ = await documents(bob)
    assert nodeinfo["openRegistrations"] is False

    # Then they cannot post meanwhile: starting a group is refused with the reason
    page = await bob.post("/groups/new", {"slug": "bobs", "name": "Bob's", "visibility": "public"})
    assert page.status == 403
    assert "waiting for an admin's approval" in page.text
    # And the admins see them waiting
    members_page = await admin.get("/admin/members")
    assert "Waiting for approval" in members_page.text
    assert "@bob" in members_page.text and "@carol" in members_page.text

    # When an admin approves bob and declines carol
    page = await admin.post("/admin/members/bob/approve")
    assert page.status == 200 and page.path == "/admin/members"
    page = await admin.post("/admin/members/carol/decline")
    assert page.status == 200

    # Then bob can post, and carol's account is gone (she cannot sign in again)
    assert "waiting for an admin" not in (await bob.get("/")).text
    page = await bob.post(
        "/groups/new",
        {"slug": "bobs", "name": "Bob's group", "visibility": "public", "tags": ""},
    )
    assert page.status == 200, page.text[:300]
    again = await browser_factory()
    await again.get("/login")
    page = await again.post("/login", {"username": "carol", "password": DEFAULT_PASSWORD})
    assert page.status == 400
    async with web_node.transaction() as session:
        carol_row = await members.find_member(session, "carol")
        assert carol_row is not None and carol_row.erased_at is not None
    actions = await log_actions(web_node)
    assert ModAction.APPROVE_ACCOUNT in actions and ModAction.DECLINE_ACCOUNT in actions
    assert "Waiting for approval" not in (await admin.get("/admin/members")).text


async def test_admin_pages_do_not_exist_for_anyone_else(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    anonymous = await browser_factory()
    member = await browser_factory()
    await member.register("plain")
    for browser in (anonymous, member):
        missing = await browser.get("/admin/no-such-page")
        for path in ("/admin/settings", "/admin/members", "/admin/members/admin"):
            page = await browser.get(path)
            assert (page.status, page.text) == (missing.status, missing.text), path
        for path in ("/admin/members/admin/demote", "/admin/members/plain/promote"):
            page = await browser.post(path, {"reason": "because"})
            assert page.status == 404, path
        page = await browser.post("/admin/settings", {"name": "Taken over"})
        assert page.status == 404
    async with web_node.transaction() as session:
        roles = dict((await session.execute(select(Member.username, Member.role))).all())
    assert roles == {"admin": "admin", "plain": "member"}
    assert "Taken over" not in (await anonymous.get("/about")).text


async def test_members_are_listed_by_page_and_found_by_name(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    now = web_node.clock.now()
    async with web_node.transaction() as session:
        for number in range(60):
            session.add(
                Member(
                    username=f"m{number:02d}", display_name=f"Person {number:02d}", bio="",
                    password_hash="!", role="member", created_at=now, last_active_at=now,
                )
            )  # fmt: skip
        session.add(
            Member(
                username="sunny", display_name="Sunflower_100%", bio="", password_hash="!",
                role="member", created_at=now - timedelta(days=1), last_active_at=now,
            )
        )  # fmt: skip
    admin = await admin_browser(browser_factory)
    first = await admin.get("/admin/members")
    assert "62 members" in first.text and "Page 1 of 2" in first.text
    assert "@admin" in first.text and "@m48" in first.text and "@m49" not in first.text
    second = await admin.get("/admin/members?page=2")
    assert "@m49" in second.text and "@sunny" in second.text and "@admin" not in second.text
    assert "Page 2 of 2" in second.text
    # A page past the end is empty, a malformed one is the first
    assert "@m" not in (await admin.get("/admin/members?page=9")).text
    for malformed in ("x", "0", "-1", "99999999999"):
        assert "Page 1 of 2" in (await admin.get(f"/admin/members?page={malformed}")).text

    # Search by display name or username, ignoring case; LIKE's wildcards are plain text
    found = await admin.get("/admin/members?q=SUNFLOWER")
    assert "1 member matching" in found.text and "@sunny" in found.text
    assert "1 member matching" in (await admin.get("/admin/members?q=100%25")).text
    assert "0 members" in (await admin.get("/admin/members?q=m0_")).text
    assert "0 members" in (await admin.get("/admin/members?q=%25%25%25x")).text
    assert "10 members" in (await admin.get("/admin/members?q=person 1")).text


async def test_suspend_unsuspend_promote_demote_each_in_the_audit_log(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    dana = await browser_factory()
    await dana.register("dana")
    admin = await admin_browser(browser_factory)
    page = await admin.get("/admin/members/dana")
    assert page.status == 200
    assert 'href="/admin/members/dana/reset-link"' in page.html

    # A suspension needs a reason, and signs dana out at once
    page = await admin.post("/admin/members/dana/suspend", {"reason": " "})
    assert page.status == 400 and "Give a reason" in page.text
    page = await admin.post("/admin/members/dana/suspend", {"reason": "spam"})
    assert page.status == 200 and "Suspended" in page.text
    assert (await dana.get("/account/password")).path.startswith("/login")
    page = await admin.post("/admin/members/dana/unsuspend", {"reason": "appealed"})
    assert "Suspended" not in page.text
    await dana.login("dana")
    assert (await dana.get("/account/password")).status == 200

    # Promotion and demotion, and the last admin is kept
    page = await admin.post("/admin/members/dana/promote", {"reason": "new volunteer"})
    assert "An admin of this node" in page.text
    page = await admin.post("/admin/members/dana/demote", {"reason": "stepped down"})
    assert "An admin of this node" not in page.text
    page = await admin.post("/admin/members/admin/demote", {"reason": "tired"})
    assert page.status == 409
    assert "only admin" in page.text
    # An admin cannot suspend their own account
    page = await admin.post("/admin/members/admin/suspend", {"reason": "oops"})
    assert page.status == 409

    actions = await log_actions(web_node)
    for action in (
        ModAction.SUSPEND_ACCOUNT,
        ModAction.UNSUSPEND_ACCOUNT,
        ModAction.PROMOTE_ADMIN,
        ModAction.DEMOTE_ADMIN,
    ):
        assert action in actions
    audit = await admin.get("/admin/audit")
    assert "lifted a suspension" in audit.text and "appealed" in audit.text


async def test_member_actions_need_the_forms_token_and_an_existing_member(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    erin = await browser_factory()
    await erin.register("erin")
    admin = await admin_browser(browser_factory)
    page = await admin.post("/admin/members/erin/suspend", {"reason": "x"}, csrf=False)
    assert page.status in (400, 403)
    page = await admin.post("/admin/members/erin/suspend", {"reason": "x", "csrf_token": "forged"})
    assert page.status in (400, 403)
    async with web_node.transaction() as session:
        suspended = await session.scalar(
            select(func.count()).select_from(Member).where(Member.suspended_at.is_not(None))
        )
    assert suspended == 0
    assert (await admin.post("/admin/members/nobody/suspend", {"reason": "x"})).status == 404
    assert (await admin.post("/admin/members/erin/delete", {"reason": "x"})).status in (404, 405)


async def test_the_admin_navigation_lists_every_admin_page(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    admin = await admin_browser(browser_factory)
    page = await admin.get("/admin/members")
    for path in (
        "/admin",
        "/admin/members",
        "/admin/settings",
        "/admin/federation",
        "/admin/reports",
        "/admin/audit",
        "/admin/privacy",
        "/admin/professionals",
        "/admin/crisis",
    ):
        assert f'href="{path}"' in page.html, path
    assert 'aria-current="page"' in page.html
    # Other pages carry only the header's one Admin link
    assert 'aria-label="Admin"' not in (await admin.get("/")).html
