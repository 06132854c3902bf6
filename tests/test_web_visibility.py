"""Who sees and does what in a condition group, asked over HTTP of the real served app.

Each test seeds a fresh world (a public and a private group, each with a thread, its owner, a
fellow member and two bystanders: one pending, one banned) and one viewer in one standing, with
their own browser. The viewer tries one action on the public group, then on the private one, and
the test checks both the pages they get and the rows in the database.

The expectations are written out by hand from node/policy.py's docstring, not recomputed from
it, so a change of the rules has to change a line of this table on purpose:

- a public group is readable and listed to anyone, its members listed only to its members and
  admins (others see its moderators); only active members post, reply and react (others are
  refused, anonymous people are sent to sign in);
- a private group exists only for its active members, its pending people (who see its name and
  their own standing, nothing else) and the node's admins; everyone else gets exactly the answer
  a group that does not exist gets: the same 404 page, byte for byte;
- admins read and list a private group and see its members, but post only where they are active
  members; banned people never post, reply or react, and a private group vanishes for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node import auth, groups, membership, posts
from node.ids import new_object_id
from node.members import create_member
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Member, Membership, Post, Reaction, Thread
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.conftest import BrowserFactory
from web.cookies import SESSION_COOKIE

VIEWERS = ("anonymous", "non_member", "pending", "member", "moderator", "banned", "admin")
VISIBILITIES = ("public", "private")
COLUMNS = ("list", "read", "post", "reply", "react", "members")

# What each answer means:
#   list:    listed   = the group is in the directory's "All groups" listing on "/"
#            absent   = its name appears nowhere on "/"
#            own      = not in the listing; only under "Your groups" as a waiting request
#   read:    shown    = GET /g/{slug} lists the thread titles, GET /t/{id} shows the posts
#            outside  = GET /g/{slug} shows the name and the viewer's standing, no titles;
#                       GET /t/{id} is the 404 of a thread that does not exist
#            hidden   = both are the 404 pages of a group and a thread that do not exist
#   post, reply, react (POST /g/{slug}/new, /t/{id}/reply, /p/{id}/helpful):
#            done     = the thread, reply or helpful mark is stored and shown
#            login    = redirected to the sign-in page, nothing stored
#            refused  = 403, nothing stored
#            hidden   = the 404 of a group, thread or post that does not exist, nothing stored
#   members: shown    = GET /g/{slug}/members lists the active members, and only them
#            mods     = GET /g/{slug}/members lists the moderators only, and says only members
#                       can see who else belongs
#            hidden   = the 404 page of a group that does not exist
# (For the public group "pending" does not arise: that viewer has no row in it, a non-member.)
# fmt: off
EXPECTED: dict[tuple[str, str], tuple[str, str, str, str, str, str]] = {
    #                          list      read       post       reply      react      members
    ("public", "anonymous"):  ("listed", "shown",   "login",   "login",   "login",   "mods"),
    ("public", "non_member"): ("listed", "shown",   "refused", "refused", "refused", "mods"),
    ("public", "pending"):    ("listed", "shown",   "refused", "refused", "refused", "mods"),
    ("public", "member"):     ("listed", "shown",   "done",    "done",    "done",    "shown"),
    ("public", "moderator"):  ("listed", "shown",   "done",    "done",    "done",    "shown"),
    ("public", "banned"):     ("listed", "shown",   "refused", "refused", "refused", "mods"),
    ("public", "admin"):      ("listed", "shown",   "refused", "refused", "refused", "shown"),
    ("private", "anonymous"): ("absent", "hidden",  "login",   "login",   "login",   "hidden"),
    ("private", "non_member"):("absent", "hidden",  "hidden",  "hidden",  "hidden",  "hidden"),
    ("private", "pending"):   ("own",    "outside", "hidden",  "hidden",  "hidden",  "hidden"),
    ("private", "member"):    ("listed", "shown",   "done",    "done",    "done",    "shown"),
    ("private", "moderator"): ("listed", "shown",   "done",    "done",    "done",    "shown"),
    ("private", "banned"):    ("absent", "hidden",  "hidden",  "hidden",  "hidden",  "hidden"),
    ("private", "admin"):     ("listed", "shown",   "refused", "refused", "refused", "shown"),
}
# fmt: on


# --- the world ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """One seeded group and its one thread (opened by the owner, answered by the fellow)."""

    visibility: str
    group_id: int
    slug: str
    name: str
    tag: str
    title: str
    opening: str
    reply: str
    thread_id: str
    post_id: str  # the owner's opening post
    join_code: str

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.name, self.title, self.opening, self.reply)


@dataclass(frozen=True)
class Person:
    username: str
    display_name: str


OWNER = Person("olive", "Olive Owner")
FELLOW = Person("fern", "Fern Fellow")
PENDING_BYSTANDER = Person("pam", "Pam Pending")
BANNED_BYSTANDER = Person("ben", "Ben Banned")
VIEWER_PEOPLE = {
    "non_member": Person("nia", "Nia Nonmember"),
    "pending": Person("pat", "Pat Waiting"),
    "member": Person("mia", "Mia Member"),
    "moderator": Person("moe", "Moe Moderator"),
    "banned": Person("bea", "Bea Barred"),
    "admin": Person("ada", "Ada Admin"),
}
GROUPS = {  # slug, name, condition tag, thread title
    "public": ("open_asthma", "Open Asthma Circle", "asthma", "Inhaler spacer tips"),
    "private": ("quiet_lupus", "Quiet Lupus Circle", "lupus", "Flare diary confidences"),
}
MISSING_SLUG = "does_not_exist"


@dataclass(frozen=True)
class World:
    node: NodeContext
    viewer: str
    person: Person | None
    member_id: int | None
    browser: Browser
    spaces: dict[str, Space]


async def _add_person(
    node: NodeContext, session: AsyncSession, person: Person, admin: bool
) -> Member:
    return await create_member(
        session,
        node.passwords,
        node.settings.limits,
        username=person.username,
        password=DEFAULT_PASSWORD,
        display_name=person.display_name,
        now=node.clock.now(),
        is_admin=admin,
    )


async def build_world(node: NodeContext, browser_factory: BrowserFactory, viewer: str) -> World:
    """Seed both groups and the viewer's session through the domain services; a pending viewer
    then asks to join the private group through its join link, in their browser."""
    now = node.clock.now()
    limits = node.settings.limits
    person = VIEWER_PEOPLE.get(viewer)
    spaces: dict[str, Space] = {}
    async with node.transaction() as session:
        owner = await _add_person(node, session, OWNER, False)
        fellow = await _add_person(node, session, FELLOW, False)
        pam = await _add_person(node, session, PENDING_BYSTANDER, False)
        ben = await _add_person(node, session, BANNED_BYSTANDER, False)
        me = await _add_person(node, session, person, viewer == "admin") if person else None
        token = await auth.open_session(session, me, node.settings, now) if me else None

        for visibility, (slug, name, tag, title) in GROUPS.items():
            private = visibility == "private"
            group = await groups.create_group(
                session,
                limits,
                owner_id=owner.id,
                slug=slug,
                name=name,
                description=f"About {name}",
                tags=tag,
                private=private,
                join_policy="request" if private else None,
                now=now,
            )
            slug = group.slug  # a private group's is random, not the one typed

            async def as_owner(slug: str = slug) -> groups.GroupView:
                return await groups.view_group(session, slug, Viewer(owner.id))

            async def make_active(who: Member, private: bool = private, slug: str = slug) -> None:
                if private:
                    await membership.invite(session, await as_owner(), who.username, now)
                view = await groups.view_group(session, slug, Viewer(who.id))
                await membership.join(session, view, now)

            await make_active(fellow)
            await make_active(ben)
            await membership.ban(session, await as_owner(), ben.username, now)
            if private:
                await membership.request_to_join(
                    session, slug, group.join_code, Viewer(pam.id), now
                )
            if me is not None and viewer in ("member", "moderator", "banned"):
                await make_active(me)
                if viewer == "moderator":
                    await membership.set_role(
                        session, await as_owner(), me.username, "moderator", now
                    )
                if viewer == "banned":
                    await membership.ban(session, await as_owner(), me.username, now)

            opening = f"{visibility} opening words about {title.lower()}"
            reply = f"{visibility} fellow answer about {title.lower()}"
            thread = await posts.start_thread(
                session,
                limits,
                await as_owner(),
                title=title,
                draft=posts.Draft(opening),
                now=now,
            )
            await posts.reply(
                session,
                limits,
                Viewer(fellow.id),
                thread_id=thread.id,
                parent_id=None,
                draft=posts.Draft(reply),
                now=now,
            )
            first = await posts.first_post(session, thread.id)
            spaces[visibility] = Space(
                visibility=visibility,
                group_id=group.id,
                slug=slug,
                name=name,
                tag=tag,
                title=title,
                opening=opening,
                reply=reply,
                thread_id=thread.id,
                post_id=first.id,
                join_code=group.join_code,
            )

    browser = await browser_factory()
    if person is None:
        await browser.get("/login")  # a page with a form: the anonymous CSRF token
        assert browser.token, "the anonymous browser holds a CSRF token"
    else:  # signed in as the login page would: a session opened for them, held in a cookie
        assert token is not None
        browser.client.session.cookie_jar.update_cookies(
            {SESSION_COOKIE: token}, response_url=browser.client.make_url("/")
        )
        page = await browser.get("/")
        assert page.status == 200 and person.display_name in page.text, "the viewer is signed in"
        assert browser.token, "the signed-in browser holds a CSRF token"
    if viewer == "pending":
        private = spaces["private"]
        link = f"/g/{private.slug}/ask/{private.join_code}"
        page = await browser.get(link)
        assert page.status == 200 and "Ask to join" in page.text, page.text
        page = await browser.post(link)
        assert page.status == 200 and page.path == f"/g/{private.slug}", page.text
    world = World(node, viewer, person, me.id if me else None, browser, spaces)
    assert await _standings(world) == _expected_standings(viewer)
    return world


def _expected_standings(viewer: str) -> dict[str, tuple[str, str] | None]:
    rows: dict[str, dict[str, tuple[str, str] | None]] = {
        "anonymous": {"public": None, "private": None},
        "non_member": {"public": None, "private": None},
        "pending": {"public": None, "private": ("pending", "member")},
        "member": {"public": ("active", "member"), "private": ("active", "member")},
        "moderator": {"public": ("active", "moderator"), "private": ("active", "moderator")},
        "banned": {"public": ("banned", "member"), "private": ("banned", "member")},
        "admin": {"public": None, "private": None},
    }
    return rows[viewer]


async def _standings(world: World) -> dict[str, tuple[str, str] | None]:
    found: dict[str, tuple[str, str] | None] = {}
    async with world.node.transaction() as session:
        for visibility, space in world.spaces.items():
            row = (
                await session.get(Membership, (space.group_id, world.member_id))
                if world.member_id is not None
                else None
            )
            found[visibility] = (row.state, row.role) if row else None
    return found


async def _count(node: NodeContext, model: type, *where: object) -> int:
    async with node.transaction() as session:
        statement = select(func.count()).select_from(model).where(*where)  # type: ignore[arg-type]
        return (await session.execute(statement)).scalar_one()


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def _between(html: str, start: str, end: str) -> str:
    assert start in html, f"{start!r} is not on the page"
    return html.split(start, 1)[1].split(end, 1)[0]


def assert_no_crash(page: Page) -> None:
    assert page.status != 500, f"{page.path} answered 500: {page.text[:80]!r}"


async def assert_like_missing(hidden: Page, missing: Page, space: Space) -> None:
    """The hidden answer is the 404 of a thing that does not exist, and tells nothing more."""
    for secret in space.secrets:
        assert secret not in hidden.text, f"{secret!r} leaked on {hidden.path}"
    assert_no_crash(hidden)
    assert hidden.status == 404, f"expected 404 (not 403 or 200), got {hidden.status}"
    assert_no_crash(missing)
    assert missing.status == 404, missing.text
    assert hidden.html == missing.html, (
        f"{hidden.path} answers differently from {missing.path}:\n"
        f"  hidden:  {hidden.text!r}\n  missing: {missing.text!r}"
    )


def assert_sent_to_login(page: Page) -> None:
    """Followed the redirect of an anonymous write: the sign-in form, nothing else."""
    assert page.status == 200, page.text
    assert page.path.split("?")[0] == "/login", page.path
    assert 'name="password"' in page.html


# --- one check per action ---------------------------------------------------------------------


async def check_list(world: World, space: Space, expected: str) -> None:
    page = await world.browser.get("/")
    assert page.status == 200
    listing = _text(_between(page.html, "<h2>All groups</h2>", "</ul>"))
    assert GROUPS["public"][1] in listing, "the listing itself works"
    if expected == "listed":
        assert space.name in listing
    elif expected == "absent":
        assert space.name not in page.text
    elif expected == "own":
        assert space.name not in listing
        mine = _text(_between(page.html, 'id="mine-heading"', "</section>"))
        assert space.name in mine
        assert "Request waiting" in mine
    else:
        raise AssertionError(f"unknown expectation {expected!r}")


async def check_read(world: World, space: Space, expected: str) -> None:
    browser = world.browser
    group_page = await browser.get(f"/g/{space.slug}")
    thread_page = await browser.get(f"/t/{space.thread_id}")
    if expected == "shown":
        assert group_page.status == 200, group_page.text
        assert space.title in group_page.text
        assert thread_page.status == 200, thread_page.text
        for text in (space.title, space.opening, space.reply):
            assert text in thread_page.text
        return
    missing_thread = await browser.get(f"/t/{new_object_id()}")
    if expected == "outside":
        assert group_page.status == 200, group_page.text
        assert space.name in group_page.text
        assert "Your request to join is waiting for a moderator" in group_page.text
        for text in (space.title, space.opening, space.reply):
            assert text not in group_page.text
        await assert_like_missing(thread_page, missing_thread, space)
    elif expected == "hidden":
        missing_group = await browser.get(f"/g/{MISSING_SLUG}")
        await assert_like_missing(group_page, missing_group, space)
        await assert_like_missing(thread_page, missing_thread, space)
    else:
        raise AssertionError(f"unknown expectation {expected!r}")


async def check_post(world: World, space: Space, expected: str) -> None:
    node, browser = world.node, world.browser
    title = f"Fresh {space.visibility} question from {world.viewer}"
    fields = {"title": title, "body": f"fresh {space.visibility} body from {world.viewer}"}
    threads_before = await _count(node, Thread)
    posts_before = await _count(node, Post)
    page = await browser.post(f"/g/{space.slug}/new", fields)
    if expected == "done":
        assert page.status == 200, page.text
        async with node.transaction() as session:
            made = (await session.execute(select(Thread).where(Thread.title == title))).scalar_one()
        assert (made.group_id, made.author_id) == (space.group_id, world.member_id)
        assert page.path == f"/t/{made.id}"
        assert fields["body"] in page.text
        assert await _count(node, Thread) == threads_before + 1
        assert await _count(node, Post) == posts_before + 1
        assert title in (await browser.get(f"/g/{space.slug}")).text
        return
    assert await _count(node, Thread) == threads_before, "a refused thread was stored"
    assert await _count(node, Post) == posts_before, "a refused post was stored"
    if expected == "login":
        assert_sent_to_login(page)
    elif expected == "refused":
        assert_no_crash(page)
        assert page.status == 403, page.text
        assert page.path == f"/g/{space.slug}/new"
    elif expected == "hidden":
        missing = await browser.post(f"/g/{MISSING_SLUG}/new", fields)
        await assert_like_missing(page, missing, space)
    else:
        raise AssertionError(f"unknown expectation {expected!r}")


async def check_reply(world: World, space: Space, expected: str) -> None:
    node, browser = world.node, world.browser
    body = f"{space.visibility} reply words from {world.viewer}"
    posts_before = await _count(node, Post)
    page = await browser.post(f"/t/{space.thread_id}/reply", {"body": body})
    stored = await _count(node, Post, Post.source == body)
    if expected == "done":
        assert page.status == 200, page.text
        assert page.path == f"/t/{space.thread_id}"
        assert body in page.text
        assert stored == 1
        assert await _count(node, Post) == posts_before + 1
        assert (
            await _count(
                node,
                Post,
                Post.source == body,
                Post.thread_id == space.thread_id,
                Post.author_id == world.member_id,
                Post.parent_id == space.post_id,
            )
            == 1
        )
        return
    assert stored == 0, "a refused reply was stored"
    assert await _count(node, Post) == posts_before
    if expected == "login":
        assert_sent_to_login(page)
    elif expected == "refused":
        assert_no_crash(page)
        assert page.status == 403, page.text
    elif expected == "hidden":
        missing = await browser.post(f"/t/{new_object_id()}/reply", {"body": body})
        await assert_like_missing(page, missing, space)
    else:
        raise AssertionError(f"unknown expectation {expected!r}")


async def check_react(world: World, space: Space, expected: str) -> None:
    node, browser = world.node, world.browser
    reactions_before = await _count(node, Reaction)
    assert await _count(node, Reaction, Reaction.post_id == space.post_id) == 0
    page = await browser.post(f"/p/{space.post_id}/helpful", {"helpful": "yes"})
    on_post = await _count(node, Reaction, Reaction.post_id == space.post_id)
    if expected == "done":
        assert page.status == 200, page.text
        assert page.path == f"/t/{space.thread_id}"
        assert on_post == 1
        mine = (Reaction.member_id == world.member_id, Reaction.kind == "helpful")
        assert await _count(node, Reaction, Reaction.post_id == space.post_id, *mine) == 1
        thread_page = await browser.get(f"/t/{space.thread_id}")
        opening = _between(thread_page.html, f'id="post-{space.post_id}"', "</li>")
        assert 'aria-pressed="true"' in opening
        assert "Helpful (1)" in _text(opening)
        return
    assert on_post == 0, "a refused helpful mark was stored"
    assert await _count(node, Reaction) == reactions_before
    if expected == "login":
        assert_sent_to_login(page)
    elif expected == "refused":
        assert_no_crash(page)
        assert page.status == 403, page.text
    elif expected == "hidden":
        missing = await browser.post(f"/p/{new_object_id()}/helpful", {"helpful": "yes"})
        await assert_like_missing(page, missing, space)
    else:
        raise AssertionError(f"unknown expectation {expected!r}")


async def check_members(world: World, space: Space, expected: str) -> None:
    browser = world.browser
    page = await browser.get(f"/g/{space.slug}/members")
    if expected == "shown":
        assert page.status == 200, page.text
        listed = _text(_between(page.html, '<ul class="people">', "</ul>"))
        assert OWNER.display_name in listed
        assert FELLOW.display_name in listed
        assert PENDING_BYSTANDER.display_name not in listed, "pending people are not members"
        assert BANNED_BYSTANDER.display_name not in listed, "banned people are not members"
        if world.person is not None:
            active = world.viewer in ("member", "moderator")
            assert (world.person.display_name in listed) is active
    elif expected == "mods":
        assert page.status == 200, page.text
        listed = _text(_between(page.html, '<ul class="moderators">', "</ul>"))
        assert OWNER.display_name in listed
        assert FELLOW.display_name not in page.text, "a member is listed to an outsider"
        assert "Only this group's members can see who else belongs to it" in page.text
    elif expected == "hidden":
        missing = await browser.get(f"/g/{MISSING_SLUG}/members")
        await assert_like_missing(page, missing, space)
    else:
        raise AssertionError(f"unknown expectation {expected!r}")


CHECKS = {
    "list": check_list,
    "read": check_read,
    "post": check_post,
    "reply": check_reply,
    "react": check_react,
    "members": check_members,
}


# --- the tests --------------------------------------------------------------------------------


def test_the_table_covers_every_viewer_group_and_action() -> None:
    assert set(EXPECTED) == {(v, p) for v in VISIBILITIES for p in VIEWERS}
    assert set(CHECKS) == set(COLUMNS)


@pytest.mark.parametrize("action", COLUMNS)
@pytest.mark.parametrize("viewer", VIEWERS)
async def test_visibility_matrix(
    node: NodeContext, browser_factory: BrowserFactory, viewer: str, action: str
) -> None:
    """Both groups' cells of the table for one viewer and action, in one world."""
    world = await build_world(node, browser_factory, viewer)
    for visibility in VISIBILITIES:
        expected = EXPECTED[(visibility, viewer)][COLUMNS.index(action)]
        try:
            await CHECKS[action](world, world.spaces[visibility], expected)
        except AssertionError as failure:
            raise AssertionError(
                f"{visibility} group, expected {expected!r}: {failure}"
            ) from failure


@pytest.mark.parametrize("viewer", ["anonymous", "non_member", "banned"])
async def test_the_private_group_leaves_no_trace_for_outsiders(
    node: NodeContext, browser_factory: BrowserFactory, viewer: str
) -> None:
    """Its other addresses answer like a missing group's, and its name is nowhere to be read."""
    world = await build_world(node, browser_factory, viewer)
    browser, space = world.browser, world.spaces["private"]
    for path in ("/", f"/?q={space.name.split()[0]}", f"/u/{OWNER.username}"):
        page = await browser.get(path)
        assert page.status == 200, page.text
        assert space.name not in page.text, f"the private group's name is on {path}"
    assert GROUPS["public"][1] in (await browser.get(f"/?tag={GROUPS['public'][2]}")).text
    assert space.name not in (await browser.get(f"/?tag={space.tag}")).text
    pairs = [
        (f"/g/{space.slug}/moderation", f"/g/{MISSING_SLUG}/moderation"),
        (f"/g/{space.slug}/reports", f"/g/{MISSING_SLUG}/reports"),
        (f"/g/{space.slug}/moderation/log", f"/g/{MISSING_SLUG}/moderation/log"),
        (
            f"/g/{space.slug}/moderation/ban?username=x",
            f"/g/{MISSING_SLUG}/moderation/ban?username=x",
        ),
        (f"/g/{space.slug}/ask/wrong-code", f"/g/{MISSING_SLUG}/ask/wrong-code"),
        (f"/p/{space.post_id}", f"/p/{new_object_id()}"),
    ]
    if viewer != "anonymous":  # anonymous people are sent to sign in first, whatever the address
        fake_post = new_object_id()
        pairs += [
            (f"/g/{space.slug}/new", f"/g/{MISSING_SLUG}/new"),
            (f"/p/{space.post_id}/edit", f"/p/{fake_post}/edit"),
            (f"/p/{space.post_id}/delete", f"/p/{fake_post}/delete"),
            (f"/p/{space.post_id}/report", f"/p/{fake_post}/report"),
        ]
    for hidden_path, missing_path in pairs:
        missing = await browser.get(missing_path)
        hidden = await browser.get(hidden_path)
        await assert_like_missing(hidden, missing, space)
