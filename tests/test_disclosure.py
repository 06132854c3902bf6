"""Nothing that discloses a condition by default, over HTTP, for anonymous visitors, signed-in
non-members and members: profiles list groups only when their member chose to, a public group's
member list is for its members (its moderators stay public), small counts read "fewer than 10",
search engines index nothing but the groups an admin opened (profiles never), and the privacy
notice and a member's consent record."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import func, select

from node import groups, members, membership, posts, privacy
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import ConsentText, ModerationLogEntry
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.conftest import BrowserFactory

NOINDEX_META = '<meta name="robots" content="noindex">'


async def seed(node: NodeContext) -> str:
    """An admin; alice owns the public group "carers" and opened a thread in it; bob is a
    member of it; carol has an account and is in no group. Returns the thread's id."""
    now = node.clock.now()
    async with node.transaction() as session:

        async def person(username: str, is_admin: bool = False) -> int:
            created = await members.create_member(
                session, node.passwords, node.settings.limits, username=username,
                password=DEFAULT_PASSWORD, display_name=username.title(), now=now,
                is_admin=is_admin,
            )  # fmt: skip
            return created.id

        await person("admin", is_admin=True)
        alice = await person("alice")
        bob = await person("bob")
        await person("carol")
        await groups.create_group(
            session, node.settings.limits, owner_id=alice, slug="carers", name="Carers",
            description="For people caring for someone.", now=now,
        )  # fmt: skip
        await membership.join(session, await groups.view_group(session, "carers", Viewer(bob)), now)
        view = await groups.view_group(session, "carers", Viewer(alice))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Bad days",
            draft=posts.Draft("What helps you on bad days?"), now=now,
        )  # fmt: skip
    return thread.id


async def add_members(node: NodeContext, count: int) -> None:
    now = node.clock.now()
    async with node.transaction() as session:
        for number in range(count):
            added = await members.create_member(
                session, node.passwords, node.settings.limits, username=f"extra{number}",
                password=DEFAULT_PASSWORD, display_name=f"Extra {number}", now=now,
            )  # fmt: skip
            view = await groups.view_group(session, "carers", Viewer(added.id))
            await membership.join(session, view, now)


async def viewers(browser_factory: BrowserFactory) -> dict[str, Browser]:
    """An anonymous visitor, a signed-in non-member and a member of "carers"."""
    anonymous = await browser_factory()
    non_member = await browser_factory()
    await non_member.login("carol")
    member = await browser_factory()
    await member.login("bob")
    return {"anonymous": anonymous, "non_member": non_member, "member": member}


async def robots_header(browser: Browser, path: str) -> str:
    async with browser.client.get(path) as response:
        return response.headers.get("X-Robots-Tag", "")


# ---------------------------------------------------------------- profiles


async def test_a_profile_lists_the_members_groups_only_when_they_opt_in(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    seen_by = await viewers(browser_factory)
    for who, browser in seen_by.items():
        page = await browser.get("/u/bob")
        assert page.status == 200
        assert "Carers" not in page.text, f"bob's group is listed to {who} by default"

    bob = seen_by["member"]
    edit = await bob.get("/settings/profile")
    assert 'name="show_groups"' in edit.html
    assert not re.search(r'name="show_groups" value="yes"\s+checked', edit.html), "off by default"
    saved = await bob.post(
        "/settings/profile", {"display_name": "Bob", "bio": "", "show_groups": "yes"}
    )
    assert saved.status == 200 and saved.path == "/u/bob"
    assert re.search(
        r'name="show_groups" value="yes"\s+checked', (await bob.get("/settings/profile")).html
    )
    for who, browser in seen_by.items():
        assert "Carers" in (await browser.get("/u/bob")).text, f"opted in, shown to {who}"

    await bob.post("/settings/profile", {"display_name": "Bob", "bio": ""})  # unticked
    assert "Carers" not in (await seen_by["anonymous"].get("/u/bob")).text


# ---------------------------------------------------------------- member lists


async def test_a_public_groups_members_are_listed_to_its_members_and_its_moderators_to_all(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    seen_by = await viewers(browser_factory)
    for who in ("anonymous", "non_member"):
        page = await seen_by[who].get("/g/carers/members")
        assert page.status == 200, page.text
        assert "Alice" in page.text, f"the moderators (the owner) are public, also to {who}"
        assert "@<bdi>bob</bdi>" not in page.html, f"a member is listed to {who}"
        assert "Only this group's members can see who else belongs to it" in page.text
    page = await seen_by["member"].get("/g/carers/members")
    assert page.status == 200
    assert "@<bdi>alice</bdi>" in page.html and "@<bdi>bob</bdi>" in page.html

    # The followers collection that other servers read holds a count, never who.
    async with seen_by["anonymous"].client.get(
        "/g/carers/followers", headers={"Accept": "application/activity+json"}
    ) as response:
        followers = await response.json(content_type=None)
    assert followers.get("items", []) == [] and "orderedItems" not in followers
    assert "bob" not in str(followers)


# ---------------------------------------------------------------- counts


async def test_counts_from_1_to_9_read_fewer_than_10_and_exact_from_10(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    seen_by = await viewers(browser_factory)
    for who, browser in seen_by.items():
        text = (await browser.get("/")).text
        assert "fewer than 10 members" in text, who
        assert "2 members" not in text, who

    await add_members(web_node, 8)  # alice, bob and eight more: ten
    for who, browser in seen_by.items():
        text = (await browser.get("/")).text
        assert "10 members" in text and "fewer than" not in text, who

    # NodeInfo publishes the node's totals only, never a group's.
    async with seen_by["anonymous"].client.get("/nodeinfo/2.1") as response:
        nodeinfo = await response.json(content_type=None)
    assert set(nodeinfo["usage"]) == {"users", "localPosts"}
    assert "carers" not in str(nodeinfo).lower()


# ---------------------------------------------------------------- search engines


async def test_robots_txt_and_noindex_on_every_page_by_default(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    thread_id = await seed(web_node)
    seen_by = await viewers(browser_factory)
    robots = await seen_by["anonymous"].get("/robots.txt")
    assert robots.status == 200
    lines = robots.html.splitlines()
    assert "User-agent: *" in lines
    assert "Disallow: /u/" in lines, "member profiles are never crawled"
    assert "Allow: /g/" in lines and "Allow: /t/" in lines
    assert "Disallow: /" in lines

    pages = ["/", "/g/carers", f"/t/{thread_id}", "/g/carers/members", "/u/bob", "/help",
             "/privacy", "/login", "/register"]  # fmt: skip
    for who, browser in seen_by.items():
        for path in pages:
            page = await browser.get(path)
            assert page.status == 200, (who, path)
            assert NOINDEX_META in page.html, (who, path)
            assert await robots_header(browser, path) == "noindex", (who, path)


async def test_an_admin_opens_a_groups_threads_to_search_engines_and_profiles_stay_closed(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    thread_id = await seed(web_node)
    seen_by = await viewers(browser_factory)
    refused = await seen_by["member"].post(
        "/admin/search-engines", {"slug": "carers", "open": "yes"}
    )
    assert refused.status == 404
    assert NOINDEX_META in (await seen_by["anonymous"].get("/g/carers")).html

    admin = await browser_factory()
    await admin.login("admin")
    listing = await admin.get("/admin/search-engines")
    assert "Open Carers to search engines" in listing.text
    opened = await admin.post("/admin/search-engines", {"slug": "carers", "open": "yes"})
    assert opened.status == 200 and "Close Carers to search engines" in opened.text

    anonymous = seen_by["anonymous"]
    for path in ("/g/carers", f"/t/{thread_id}"):
        page = await anonymous.get(path)
        assert NOINDEX_META not in page.html, path
        assert await robots_header(anonymous, path) == "all", path
    for path in ("/u/alice", "/u/bob", "/g/carers/members", "/"):
        assert NOINDEX_META in (await anonymous.get(path)).html, path
        assert await robots_header(anonymous, path) == "noindex", path
    async with web_node.transaction() as session:
        logged = await session.scalars(
            select(ModerationLogEntry.action).where(ModerationLogEntry.action == "search_engines")
        )
        assert list(logged) == ["search_engines"]

    await admin.post("/admin/search-engines", {"slug": "carers", "open": "no"})
    assert NOINDEX_META in (await anonymous.get(f"/t/{thread_id}")).html


# ---------------------------------------------------------------- privacy and consent


async def test_the_privacy_page_is_linked_from_registration_and_edited_by_admins_only(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    seen_by = await viewers(browser_factory)
    register = await seen_by["anonymous"].get("/register")
    assert 'href="/privacy"' in register.html
    page = await seen_by["anonymous"].get("/privacy")
    assert page.status == 200
    for promise in ("What this node stores", "What federates", "cannot be recalled",
                    "What never leaves this node"):  # fmt: skip
        assert promise in page.text

    for who in ("anonymous", "non_member", "member"):
        browser = seen_by[who]
        assert (await browser.get("/admin/privacy")).status == 404, who
        refused = await browser.post("/admin/privacy", {"privacy": f"Rewritten by {who}"})
        assert refused.status == 404, who
    assert "Rewritten" not in (await seen_by["anonymous"].get("/privacy")).text

    admin = await browser_factory()
    await admin.login("admin")
    form = await admin.get("/admin/privacy")
    assert form.status == 200 and "cannot be recalled" in form.text
    saved = await admin.post("/admin/privacy", {"privacy": "We keep little.\nNothing leaves."})
    assert saved.status == 200 and saved.path == "/privacy"
    assert "We keep little." in (await seen_by["anonymous"].get("/privacy")).text
    await admin.post("/admin/privacy", {"privacy": ""})  # empty: the default again
    assert "cannot be recalled" in (await seen_by["anonymous"].get("/privacy")).text


async def test_a_member_reads_the_version_time_and_text_they_consented_to(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    assert (await (await browser_factory()).get("/account/consent")).path.startswith("/login")
    dora = await browser_factory()
    await dora.register("dora")
    page = await dora.get("/account/consent")
    assert page.status == 200
    version = re.search(r'<code id="consent-version">([^<]+)</code>', page.html)
    assert version and version.group(1).startswith(web_node.settings.consent_policy_version + "+")
    moment = web_node.clock.now().strftime("%-d %b %Y")
    assert moment in page.text
    assert "cannot be recalled" in page.text, "the text agreed to is shown"
    assert 'href="/account/delete"' in page.html

    admin = await browser_factory()
    await admin.login("admin")
    await admin.post("/admin/privacy", {"privacy": "A shorter notice."})
    again = await dora.get("/account/consent")
    assert version.group(1) in again.text and "cannot be recalled" in again.text
    assert "A shorter notice." not in again.text, "what dora agreed to does not change"

    erin = await browser_factory()
    await erin.register("erin")
    theirs = await erin.get("/account/consent")
    assert "A shorter notice." in theirs.text
    assert version.group(1) not in theirs.text
    assert "What this node stores" not in theirs.text


async def test_sign_ups_at_the_same_moment_keep_one_copy_of_the_text_consented_to(
    node: NodeContext,
) -> None:
    """Several sign-ups may each be the first to keep the privacy text's version: one row is
    kept and none of them fails (on PostgreSQL they really run at once)."""

    async def sign_up() -> str:
        async with node.transaction() as session:
            return await privacy.version_consented_to(
                session, node.settings.consent_policy_version, node.clock.now()
            )

    versions = await asyncio.gather(*(sign_up() for _ in range(6)))
    assert len(set(versions)) == 1
    async with node.transaction() as session:
        kept = await session.scalar(select(func.count()).select_from(ConsentText))
    assert kept == 1
