"""Bad input through the real app: a 4xx with a clear message, the form again, and no row written.

Every scenario counts the rows of every table before and after, so a refused request that left
half of its writes behind fails here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from urllib.parse import quote, urlsplit

import pytest
from markupsafe import escape
from sqlalchemy import func, select

from node.config import Limits
from node.runtime import NodeContext
from node.storage.models import Base, Member, Post
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.clock import ManualClock
from tests.conftest import BrowserFactory
from web.pages import STALE_FORM

LIMITS = Limits()
CSRF_EXPIRED = "This form had expired or came from another page, so nothing was done."
GROUP_NOT_FOUND = "There is no group at this address."

# --- helpers ---------------------------------------------------------------------------------


async def row_counts(node: NodeContext) -> dict[str, int]:
    """The number of rows in every table, to prove a refused request wrote nothing."""
    async with node.transaction() as session:
        return {
            table.name: (
                await session.execute(select(func.count()).select_from(table))
            ).scalar_one()
            for table in Base.metadata.sorted_tables
        }


def shown(text: str) -> str:
    """How typed text appears inside the HTML of a re-rendered form (jinja2 autoescape)."""
    return str(escape(text))


def assert_refused(page: Page, status: int, *messages: str) -> None:
    assert page.status == status, f"{page.status} on {page.path}: {page.text[:500]}"
    for message in messages:
        assert message in page.text, f"{message!r} not on {page.path}: {page.text[:800]}"


async def member(browser_factory: BrowserFactory, username: str) -> Browser:
    browser = await browser_factory()
    await browser.register(username)
    return browser


async def create_group(
    browser: Browser, slug: str, name: str, visibility: str = "public", **fields: str
) -> Page:
    await browser.get("/groups/new")
    return await browser.post(
        "/groups/new",
        {"slug": slug, "name": name, "visibility": visibility, "join_policy": "request", **fields},
    )


async def start_thread(browser: Browser, slug: str, title: str, body: str) -> str:
    """Start a thread and return its path, /t/ID."""
    page = await browser.post(f"/g/{slug}/new", {"title": title, "body": body})
    assert page.status == 200, page.text
    assert page.path.startswith("/t/"), page.path
    return page.path


async def first_post_id(node: NodeContext, thread_path: str) -> str:
    thread_id = thread_path.removeprefix("/t/")
    async with node.transaction() as session:
        rows = await session.execute(
            select(Post.id).where(Post.thread_id == thread_id, Post.parent_id.is_(None))
        )
        return rows.scalar_one()


async def replies_in(node: NodeContext, thread_path: str) -> list[str]:
    thread_id = thread_path.removeprefix("/t/")
    async with node.transaction() as session:
        rows = await session.execute(
            select(Post.id)
            .where(Post.thread_id == thread_id, Post.parent_id.is_not(None))
            .order_by(Post.created_at, Post.id)
        )
        return list(rows.scalars())


@pytest.fixture
async def alice(browser_factory: BrowserFactory) -> Browser:
    """A member who owns the public group t1d."""
    browser = await member(browser_factory, "alice")
    page = await create_group(browser, "t1d", "Type 1 diabetes")
    assert page.path == "/g/t1d", page.text
    return browser


# --- registration ----------------------------------------------------------------------------

GOOD_REGISTRATION = {
    "username": "carol",
    "display_name": "Carol",
    "password": DEFAULT_PASSWORD,
    "password_again": DEFAULT_PASSWORD,
    "consent": "yes",
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"username": "car ol!"},
            "A username is 1 to 30 characters: lowercase letters, digits and underscores only.",
            id="invalid-characters",
        ),
        pytest.param(
            {"username": "carol-b"},
            "A username is 1 to 30 characters: lowercase letters, digits and underscores only.",
            id="hyphen",
        ),
        pytest.param(
            {"username": "c" * (LIMITS.username_max + 1)},
            "A username is 1 to 30 characters",
            id="over-long-username",
        ),
        pytest.param({"username": "   "}, "Choose a username.", id="empty-username"),
        pytest.param(
            {"password_again": DEFAULT_PASSWORD + "!"},
            "The two passwords are not the same.",
            id="mismatched-passwords",
        ),
        pytest.param(
            {"consent": None},
            "Please confirm that you agree to this node storing what you share about health.",
            id="no-consent",
        ),
        pytest.param(
            {"password": "short", "password_again": "short"},
            f"Choose a password of at least {LIMITS.password_min} characters.",
            id="short-password",
        ),
        pytest.param(
            {"display_name": "d" * (LIMITS.display_name_max + 1)},
            f"Display name is too long: {LIMITS.display_name_max + 1} characters",
            id="over-long-display-name",
        ),
    ],
)
async def test_registration_refuses_bad_input(
    browser_factory: BrowserFactory,
    node: NodeContext,
    changes: dict[str, str | None],
    message: str,
) -> None:
    browser = await browser_factory()
    await browser.get("/register")
    fields = {
        key: value for key, value in (GOOD_REGISTRATION | changes).items() if value is not None
    }
    before = await row_counts(node)

    page = await browser.post("/register", fields)

    assert_refused(page, 400, message)
    assert 'action="/register"' in page.html
    assert f'value="{shown(fields["username"])}"' in page.html
    assert DEFAULT_PASSWORD not in page.html  # passwords are never sent back
    assert await row_counts(node) == before
    assert "Sign out" not in page.text


async def test_duplicate_username_differing_only_in_case_is_refused(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    await member(browser_factory, "alice")
    before = await row_counts(node)
    for attempt in ("ALICE", " Alice "):
        browser = await browser_factory()
        await browser.get("/register")

        page = await browser.post("/register", GOOD_REGISTRATION | {"username": attempt})

        assert_refused(page, 400, "The username “alice” is not available. Choose another.")
        assert 'action="/register"' in page.html
        assert await row_counts(node) == before


async def test_username_colliding_with_a_group_slug_is_refused(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser
) -> None:
    before = await row_counts(node)
    browser = await browser_factory()
    await browser.get("/register")

    page = await browser.post("/register", GOOD_REGISTRATION | {"username": "T1D"})

    assert_refused(page, 400, "The username “t1d” is not available. Choose another.")
    assert await row_counts(node) == before


async def test_registration_records_consent_time_and_policy_version(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    assert isinstance(node.clock, ManualClock)
    node.clock.advance(timedelta(days=3, minutes=7))
    registered_at = node.clock.now()

    await member(browser_factory, "dana")
    node.clock.advance(timedelta(hours=1))  # later requests must not move the consent time

    async with node.transaction() as session:
        row = (await session.execute(select(Member).where(Member.username == "dana"))).scalar_one()
    assert row.consent_at == registered_at
    # The node's policy version joined to a digest of the privacy text shown (node/privacy.py).
    assert row.consent_policy_version
    assert row.consent_policy_version.startswith(node.settings.consent_policy_version + "+")


# --- groups ----------------------------------------------------------------------------------


async def test_duplicate_group_slug_is_refused_whatever_its_case(
    node: NodeContext, alice: Browser
) -> None:
    before = await row_counts(node)

    page = await create_group(alice, "T1D", "Another diabetes group", description="Kept text")

    assert_refused(page, 400, "The group address “t1d” is not available. Choose another.")
    assert 'action="/groups/new"' in page.html
    assert 'value="Another diabetes group"' in page.html
    assert "Kept text" in page.html
    assert await row_counts(node) == before


async def test_group_slug_colliding_with_a_username_is_refused(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser
) -> None:
    await member(browser_factory, "bob")
    before = await row_counts(node)

    page = await create_group(alice, "Bob", "Bob's group")

    assert_refused(page, 400, "The group address “bob” is not available. Choose another.")
    assert 'action="/groups/new"' in page.html
    assert await row_counts(node) == before


# --- threads and replies ---------------------------------------------------------------------

TYPED_TITLE = "Night hypos & <lows>"
TYPED_BODY = 'Blood sugar < 4 & "shaky"\nsecond line'


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"title": "  \t "}, "The title cannot be empty.", id="empty-title"),
        pytest.param(
            {"title": "t" * (LIMITS.title_max + 1)},
            f"The title is too long: {LIMITS.title_max + 1} characters, "
            f"the limit is {LIMITS.title_max}.",
            id="over-long-title",
        ),
        pytest.param({"body": " \r\n \n"}, "The post cannot be empty.", id="empty-post"),
        pytest.param(
            {"body": "b" * (LIMITS.post_max + 1)},
            f"The post is too long: {LIMITS.post_max + 1} characters, "
            f"the limit is {LIMITS.post_max}.",
            id="over-long-post",
        ),
        pytest.param(
            {"content_warning": "c" * (LIMITS.content_warning_max + 1)},
            f"The content warning is too long: {LIMITS.content_warning_max + 1} characters, "
            f"the limit is {LIMITS.content_warning_max}.",
            id="over-long-content-warning",
        ),
        pytest.param(
            {"title": "nul\x00title"},
            "The title contains a character that cannot be stored.",
            id="nul-in-title",
        ),
    ],
)
async def test_new_thread_refuses_bad_input_and_keeps_the_text(
    node: NodeContext, alice: Browser, fields: dict[str, str], message: str
) -> None:
    await alice.get("/g/t1d/new")
    typed = {"title": TYPED_TITLE, "body": TYPED_BODY, "content_warning": "hypos"} | fields
    before = await row_counts(node)

    page = await alice.post("/g/t1d/new", typed)

    assert_refused(page, 400, message)
    assert 'action="/g/t1d/new"' in page.html
    for value in typed.values():
        if value.strip() and "\x00" not in value:
            assert shown(value) in page.html
    assert await row_counts(node) == before


async def test_limits_are_inclusive(node: NodeContext, alice: Browser) -> None:
    """Exactly at each limit is accepted: the refusals above are about the limit, not luck."""
    page = await alice.post(
        "/g/t1d/new",
        {
            "title": "t" * LIMITS.title_max,
            "body": "b" * LIMITS.post_max,
            "content_warning": "c" * LIMITS.content_warning_max,
        },
    )
    assert page.status == 200, page.text[:500]
    assert page.path.startswith("/t/")
    page = await alice.post(
        f"{page.path}/reply",
        {"body": "r" * LIMITS.post_max, "content_warning": "w" * LIMITS.content_warning_max},
    )
    assert page.status == 200, page.text[:500]
    assert (await row_counts(node))["posts"] == 2


@pytest.mark.parametrize("history", ["never-joined", "left"])
async def test_thread_in_a_group_one_is_not_an_active_member_of_is_refused(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser, history: str
) -> None:
    # Given bob, who never joined t1d or joined and left it
    bob = await member(browser_factory, "bob")
    if history == "left":
        assert (await bob.post("/g/t1d/join")).status == 200
        assert (await bob.post("/g/t1d/leave")).status == 200
    page = await bob.get("/g/t1d")
    assert "Start a thread" not in page.text
    before = await row_counts(node)

    # When he posts a thread to it anyway
    page = await bob.post("/g/t1d/new", {"title": TYPED_TITLE, "body": TYPED_BODY})

    # Then he is told to join first, his text is kept, and nothing is written
    assert_refused(page, 403, "Only active members of this group can start threads. Join it first.")
    assert shown(TYPED_TITLE) in page.html
    assert shown(TYPED_BODY) in page.html
    assert await row_counts(node) == before


@pytest.mark.parametrize("what", ["missing", "other-thread"])
async def test_reply_to_a_post_that_does_not_exist_is_refused(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser, what: str
) -> None:
    # Given a thread, and a post that is not in it (missing, or in another thread)
    thread = await start_thread(alice, "t1d", "Pumps", "Which pump do you use?")
    other = await start_thread(alice, "t1d", "Sensors", "Which sensor?")
    await alice.post(f"{other}/reply", {"body": "Libre here."})
    parent = "0000000000zzzzzzzzzz" if what == "missing" else (await replies_in(node, other))[0]
    await alice.get(thread)
    before = await row_counts(node)

    # When alice replies to it
    page = await alice.post(f"{thread}/reply", {"body": TYPED_BODY, "parent": parent})

    # Then the thread page comes back with the message and her text, and nothing is written
    assert_refused(page, 400, "The post you are replying to does not exist.")
    assert f'action="{thread}/reply"' in page.html
    assert shown(TYPED_BODY) in page.html
    assert await row_counts(node) == before


async def test_reply_to_a_deleted_post_is_refused(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser
) -> None:
    # Given bob's reply in alice's thread, which bob then deleted
    thread = await start_thread(alice, "t1d", "Pumps", "Which pump do you use?")
    bob = await member(browser_factory, "bob")
    assert (await bob.post("/g/t1d/join")).status == 200
    assert (await bob.post(f"{thread}/reply", {"body": "An old one."})).status == 200
    [bobs_reply] = await replies_in(node, thread)
    page = await bob.post(f"/p/{bobs_reply}/delete")
    assert page.status == 200
    assert "This post was deleted." in page.text
    await alice.get(f"{thread}?reply_to={bobs_reply}")
    before = await row_counts(node)

    # When alice replies to the deleted post
    page = await alice.post(f"{thread}/reply", {"body": TYPED_BODY, "parent": bobs_reply})

    # Then she is told, her text is kept, and nothing is written
    assert_refused(page, 400, "The post you are replying to has been deleted.")
    assert shown(TYPED_BODY) in page.html
    assert await row_counts(node) == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"body": "   "}, "The post cannot be empty.", id="empty"),
        pytest.param({"body": "b" * (LIMITS.post_max + 1)}, "The post is too long", id="over-long"),
        pytest.param(
            {"body": "fine", "content_warning": "c" * (LIMITS.content_warning_max + 1)},
            "The content warning is too long",
            id="over-long-content-warning",
        ),
    ],
)
async def test_reply_refuses_bad_input_and_keeps_the_text(
    node: NodeContext, alice: Browser, fields: dict[str, str], message: str
) -> None:
    thread = await start_thread(alice, "t1d", "Pumps", "Which pump do you use?")
    before = await row_counts(node)

    page = await alice.post(f"{thread}/reply", fields)

    assert_refused(page, 400, message)
    assert f'action="{thread}/reply"' in page.html
    for value in fields.values():
        if value.strip():
            assert shown(value) in page.html
    assert await row_counts(node) == before


# --- CSRF ------------------------------------------------------------------------------------


async def wrong_token(kind: str, browser_factory: BrowserFactory) -> dict[str, str] | None:
    """Fields that make the CSRF check fail: None means the field is left out."""
    if kind == "missing":
        return None
    if kind == "forged":
        return {"csrf_token": "0" * 64}
    stranger = await browser_factory()
    await stranger.get("/register")
    return {"csrf_token": stranger.token}  # valid, but for another browser


async def post_with(
    browser: Browser, path: str, fields: dict[str, str], token: dict[str, str] | None
) -> Page:
    if token is None:
        return await browser.post(path, fields, csrf=False)
    return await browser.post(path, fields | token)


@pytest.mark.parametrize("kind", ["missing", "forged", "another-browser"])
async def test_register_with_a_bad_csrf_token_keeps_the_form(
    browser_factory: BrowserFactory, node: NodeContext, kind: str
) -> None:
    browser = await browser_factory()
    await browser.get("/register")
    token = await wrong_token(kind, browser_factory)
    before = await row_counts(node)

    page = await post_with(browser, "/register", GOOD_REGISTRATION, token)

    assert_refused(page, 400, STALE_FORM)
    assert 'value="carol"' in page.html
    assert await row_counts(node) == before
    # The form that came back carries a fresh token and goes through.
    page = await browser.post("/register", GOOD_REGISTRATION)
    assert page.status == 200, page.text
    assert (await row_counts(node))["members"] == before["members"] + 1


async def test_new_thread_with_a_stale_csrf_token_keeps_the_typed_text(
    node: NodeContext, alice: Browser
) -> None:
    # Given alice opened the new-thread form, then signed out and in again elsewhere
    await alice.get("/g/t1d/new")
    stale = alice.token
    await alice.logout()
    await alice.login("alice")
    assert alice.token != stale
    typed = {"title": TYPED_TITLE, "body": TYPED_BODY, "content_warning": "hypos"}
    before = await row_counts(node)

    # When she sends the old form
    page = await alice.post("/g/t1d/new", typed | {"csrf_token": stale})

    # Then it comes back with everything she typed, and nothing is written
    assert_refused(page, 400, STALE_FORM)
    assert 'action="/g/t1d/new"' in page.html
    for value in typed.values():
        assert shown(value) in page.html
    assert await row_counts(node) == before

    # And the same text without any token is kept just as well
    page = await alice.post("/g/t1d/new", typed, csrf=False)
    assert_refused(page, 400, STALE_FORM)
    assert shown(TYPED_BODY) in page.html
    assert await row_counts(node) == before

    # And the re-rendered form, sent again, goes through
    page = await alice.post("/g/t1d/new", typed)
    assert page.status == 200
    assert page.path.startswith("/t/")


@pytest.mark.parametrize("kind", ["missing", "forged", "another-browser"])
async def test_reply_with_a_bad_csrf_token_keeps_the_typed_text(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser, kind: str
) -> None:
    thread = await start_thread(alice, "t1d", "Pumps", "Which pump do you use?")
    await alice.get(thread)
    token = await wrong_token(kind, browser_factory)
    before = await row_counts(node)

    page = await post_with(alice, f"{thread}/reply", {"body": TYPED_BODY}, token)

    assert_refused(page, 400, STALE_FORM)
    assert f'action="{thread}/reply"' in page.html
    assert shown(TYPED_BODY) in page.html
    assert await row_counts(node) == before


@pytest.mark.parametrize("kind", ["missing", "forged", "another-browser"])
async def test_button_forms_with_a_bad_csrf_token_do_nothing(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser, kind: str
) -> None:
    bob = await member(browser_factory, "bob")
    await bob.get("/g/t1d")
    token = await wrong_token(kind, browser_factory)
    before = await row_counts(node)

    page = await post_with(bob, "/g/t1d/join", {}, token)

    assert_refused(page, 403, CSRF_EXPIRED)
    assert await row_counts(node) == before
    page = await post_with(bob, "/logout", {}, token)
    assert_refused(page, 403, CSRF_EXPIRED)
    assert "Sign out" in (await bob.get("/")).text  # still signed in
    assert await row_counts(node) == before


async def test_joining_a_group_twice_changes_nothing_and_is_no_error(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser
) -> None:
    """A second click, or a second tab, joins not twice: joining is idempotent."""
    bob = await member(browser_factory, "bob")
    assert (await bob.post("/g/t1d/join")).status == 200
    before = await row_counts(node)

    page = await bob.post("/g/t1d/join")

    assert page.status == 200 and page.path == "/g/t1d"
    assert await row_counts(node) == before


# --- private groups --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "viewer",
    [
        "anonymous",
        "signed-in",
    ],
)
async def test_private_group_answers_exactly_like_a_missing_group(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser, viewer: str
) -> None:
    # Given a private group with a thread in it
    page = await create_group(alice, "hush", "Quiet condition", visibility="private")
    assert page.path.startswith("/g/") and page.path != "/g/hush", page.text
    hush = page.path.removeprefix("/g/")  # a private group's address is random
    thread = await start_thread(alice, hush, "Private matters", "Only for us.")
    signed_in = viewer == "signed-in"
    outsider = await (member(browser_factory, "bob") if signed_in else browser_factory())
    before = await row_counts(node)

    # When someone outside it opens its addresses, and those of a group that does not exist
    for suffix in ("", "/members", *(["/new"] if signed_in else [])):
        private = await outsider.get(f"/g/{hush}{suffix}")
        missing = await outsider.get(f"/g/nosuchgroup{suffix}")

        # Then both answer the same 404 page, which names nothing of the private group
        assert_refused(private, 404, GROUP_NOT_FOUND)
        assert private.text == missing.text
        assert "Quiet condition" not in private.html
    if signed_in:
        private = await outsider.post(f"/g/{hush}/join")
        missing = await outsider.post("/g/nosuchgroup/join")
        assert_refused(private, 404, GROUP_NOT_FOUND)
        assert private.text == missing.text
    private = await outsider.get(f"/p/{(await first_post_id(node, thread))}")
    missing = await outsider.get("/p/0000000000zzzzzzzzzz")
    assert_refused(private, 404, "There is no post at this address.")
    assert private.text == missing.text
    assert await row_counts(node) == before


async def test_private_thread_answers_exactly_like_a_missing_thread(
    browser_factory: BrowserFactory, node: NodeContext, alice: Browser
) -> None:
    # Given a thread in a private group
    page = await create_group(alice, "hush", "Quiet condition", visibility="private")
    thread = await start_thread(
        alice, page.path.removeprefix("/g/"), "Private matters", "Only for us."
    )
    outsider = await browser_factory()

    # When an outsider opens it, and a thread that does not exist
    private = await outsider.get(thread)
    missing = await outsider.get("/t/0000000000zzzzzzzzzz")

    # Then both answer the same 404 page
    assert_refused(missing, 404, "There is no thread at this address.")
    assert_refused(private, 404, "There is no thread at this address.")
    assert private.text == missing.text
    assert "Private matters" not in private.html


# --- signing in ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/steal",
        "//evil.example/steal",
        "/\\evil.example/steal",
        "\\\\evil.example/steal",
        "/\t/evil.example/steal",
        "https:evil.example",
        "javascript:alert(1)",
        "evil.example",
    ],
)
async def test_login_next_pointing_at_another_host_is_not_followed(
    browser_factory: BrowserFactory, target: str
) -> None:
    await member(browser_factory, "alice")
    browser = await browser_factory()

    page = await browser.get(f"/login?next={quote(target, safe='')}")
    assert page.status == 200
    hidden = NEXT_FIELD.search(page.html)
    assert hidden, page.html
    assert not urlsplit(unescape(hidden.group(1))).netloc
    assert not urlsplit(unescape(hidden.group(1))).scheme

    location = await login_location(browser, target)
    assert landing_host(location) is None, location
    assert location.startswith("/"), location


async def test_login_next_on_this_site_is_followed(browser_factory: BrowserFactory) -> None:
    """The control for the test above: a same-site path is where signing in lands."""
    await member(browser_factory, "alice")
    browser = await browser_factory()

    page = await browser.get(f"/login?next={quote('/u/alice?tab=1', safe='')}")

    assert 'name="next" value="/u/alice?tab=1"' in page.html
    assert await login_location(browser, "/u/alice?tab=1") == "/u/alice?tab=1"


@pytest.mark.parametrize(
    "target",
    [
        "/..//evil.example/steal",
        "/%2e%2e//evil.example/steal",
        "/u/..//evil.example/steal",
        "/.//evil.example/steal",
        "/%2F%2Fevil.example/steal",
        "/%5Cevil.example/steal",
        "/\x0b/evil.example/steal",
    ],
)
async def test_login_next_never_lands_on_a_path_read_as_another_host(
    browser_factory: BrowserFactory, target: str
) -> None:
    """Dot segments and encoded slashes resolve, in a browser or behind a proxy that decodes,
    to "//evil.example/steal": a path that the next redirect would send off the site."""
    await member(browser_factory, "alice")
    browser = await browser_factory()
    location = await login_location(browser, target)
    assert location == "/", location


async def test_the_remote_follow_form_never_redirects_off_the_site(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given alice, signed in, and a group here (the control: a link to it is followed home)
    alice = await member(browser_factory, "alice")
    await alice.post("/groups/new", {"slug": "t1d", "name": "Type 1", "visibility": "public"})
    base = node.settings.base_url
    async with alice.client.post(
        "/groups/follow", data={"handle": base + "/g/t1d", "csrf_token": alice.token},
        allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.status == 303 and response.headers["Location"] == "/g/t1d"
    # When she follows addresses on this node whose paths read as another host
    for path in ("//evil.example/x", "/\\evil.example/x", "/..//evil.example/x", "/%2F/evil"):
        await alice.get(f"/authorize_interaction?uri={quote(base + path, safe='')}")
        async with alice.client.post(
            "/groups/follow", data={"handle": base + path, "csrf_token": alice.token},
            allow_redirects=False,
        ) as response:  # fmt: skip
            # Then she is told it cannot be followed; never sent elsewhere
            assert response.status == 400, (path, response.headers.get("Location"))


async def login_location(browser: Browser, target: str) -> str:
    """Sign in as alice with `next`, and return where the answer sends the browser."""
    await browser.get("/login")
    fields = {
        "username": "alice",
        "password": DEFAULT_PASSWORD,
        "next": target,
        "csrf_token": browser.token,
    }
    async with browser.client.post("/login", data=fields, allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        return response.headers["Location"]


NEXT_FIELD = re.compile(r'name="next" value="([^"]*)"')


def landing_host(location: str) -> str | None:
    """The host a browser would go to: backslashes count as slashes, as browsers read them."""
    parts = urlsplit(location.replace("\\", "/").replace("\t", ""))
    return parts.netloc or (parts.scheme or None)


# --- size and markup -------------------------------------------------------------------------


async def test_over_large_form_body_gets_a_413_page(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    browser = await browser_factory()
    await browser.get("/register")
    before = await row_counts(node)

    page = await browser.post(
        "/register", GOOD_REGISTRATION | {"display_name": "x" * (LIMITS.form_body_max + 1)}
    )

    assert_refused(page, 413, "Too large", "What you sent is larger than this node accepts.")
    assert await row_counts(node) == before


async def test_over_large_thread_from_a_member_gets_a_413_page(
    node: NodeContext, alice: Browser
) -> None:
    await alice.get("/g/t1d/new")
    before = await row_counts(node)

    page = await alice.post(
        "/g/t1d/new", {"title": "Long", "body": "x" * (LIMITS.form_body_max + 1)}
    )

    assert_refused(page, 413, "What you sent is larger than this node accepts.")
    assert await row_counts(node) == before


HOSTILE_MARKDOWN = """\
<script>alert("body")</script>

<img src=x onerror="alert('img')">

<a href="javascript:alert('raw')">raw link</a>

[md link](javascript:alert('md'))

[mixed case](JaVaScRiPt:alert('case'))

[entity](&#106;avascript:alert('entity'))

<javascript:alert('autolink')>

![image](x" onerror="alert('image'))

<svg onload="alert('svg')"></svg>

**still bold** and [a safe link](https://example.org/info)
"""

# Only real tags count: the same text escaped as &lt;...&gt; is harmless and may stay visible.
ACTIVE_MARKUP = [
    re.compile(r"<\s*script", re.IGNORECASE),
    re.compile(r"<\s*(img|svg|iframe|object|embed|style|form|input)\b", re.IGNORECASE),
    re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE),
    re.compile(r"""<[^>]*\b(href|src)\s*=\s*["']?\s*(javascript|data|vbscript):""", re.I),
]


async def test_hostile_markdown_is_rendered_inert(
    browser_factory: BrowserFactory, alice: Browser
) -> None:
    # Given a thread and a reply written to run script in readers' browsers
    thread = await start_thread(alice, "t1d", "<script>alert('title')</script>", HOSTILE_MARKDOWN)
    page = await alice.post(
        f"{thread}/reply",
        {"body": HOSTILE_MARKDOWN, "content_warning": "<img src=x onerror=alert('cw')>"},
    )
    assert page.status == 200

    # When anyone reads the thread
    page = await (await browser_factory()).get(thread)

    # Then nothing in it is active but the node's own static script (the browser's time
    # zone), and the harmless formatting still works
    assert page.status == 200
    html = re.sub(r'<script src="/static/time-zone\.[0-9a-f]+\.js" defer></script>', "", page.html)
    for pattern in ACTIVE_MARKUP:
        assert not pattern.search(html), pattern.search(html)
    assert "<strong>still bold</strong>" in page.html
    assert 'href="https://example.org/info"' in page.html
    assert 'rel="nofollow ugc noopener"' in page.html
    assert 'alert("body")' in page.text  # shown as text, not run


# --- NUL characters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/?q=a%00b", "/?tag=a%00b", "/g/a%00b", "/u/a%00b", "/t/a%00b", "/p/a%00b"]
)
async def test_nul_character_in_an_address_is_not_a_server_error(
    browser_factory: BrowserFactory, path: str
) -> None:
    page = await (await browser_factory()).get(path)
    assert 200 <= page.status < 500, page.text[:300]
    assert "Something went wrong" not in page.text


async def test_nul_character_in_a_login_username_is_refused(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    browser = await browser_factory()
    await browser.get("/login")
    page = await browser.post("/login", {"username": "ali\x00ce", "password": "wrong-one"})
    assert_refused(page, 400, "That username and password do not match.")


@pytest.mark.parametrize(
    "path",
    [
        "/t/" + "9" * 5000,
        "/p/" + "9" * 5000,
        "/activities/" + "9" * 5000,
        "/t/%F0%9F%92%A9",
        "/p/%FF",
        "/g/t1d/outbox?page=99999999999999999999999",
        "/admin/federation/inbox/99999999999999999999999/retry",
    ],
)
async def test_a_malformed_id_in_an_address_is_not_found(
    browser_factory: BrowserFactory, path: str
) -> None:
    browser = await browser_factory()
    await browser.register("alice")
    for method in ("GET", "POST"):
        data = {"csrf_token": browser.token}
        async with browser.client.request(method, path, data=data) as response:
            assert response.status in (404, 405), (method, path[:80], response.status)
