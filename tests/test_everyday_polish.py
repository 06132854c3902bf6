"""Everyday polish, as a member meets it: times in their zone, linked addresses and tables,
a pressed Helpful that shows without colour, the error summary, tombstones, registration that
keeps what was typed and where the person was going, and friendly 403 and 405 pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from node.runtime import NodeContext
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.clock import ManualClock
from tests.conftest import BrowserFactory
from tests.test_web_flows import create_group


def times(page: Page) -> list[tuple[str, str, str]]:
    """Each <time> of the page's posts: (datetime, title, text)."""
    return re.findall(r'<time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>', page.html)


async def thread_by(browser: Browser, body: str, title: str = "Night hypos") -> str:
    page = await browser.post("/g/t1d/new", {"title": title, "body": body})
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
    return page.path


def post_ids(page: Page) -> list[str]:
    return re.findall(r'<li id="post-([0-9a-z]+)" class="post">', page.html)


async def test_times_read_as_how_long_ago_in_the_readers_zone(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a thread started at 12:00 UTC, read two hours later
    clock = node.clock
    assert isinstance(clock, ManualClock)
    alice = await browser_factory()
    await alice.register("alice")
    await create_group(alice, "t1d", "Type 1 diabetes")
    path = await thread_by(alice, "Anyone else wake at 3am?")
    clock.advance(timedelta(hours=2))

    # Then a reader whose browser sent no zone reads UTC, and gets the script that sends it
    reader = await browser_factory()
    page = await reader.get(path)
    assert times(page) == [("2026-11-01T12:00:00+00:00", "1 Nov 2026, 12:00 UTC", "2 hours ago")]
    script_tag = re.search(
        r'<script src="(/static/time-zone\.[0-9a-f]+\.js)" defer></script>', page.html
    )
    assert script_tag, "the time-zone script, by its fingerprinted name"
    async with reader.client.get(script_tag.group(1)) as script:
        assert script.status == 200
        assert "resolvedOptions().timeZone" in await script.text()

    # A browser in India reads Indian time, and is not sent the script again
    page = await reader.get(path, Cookie="tz=Asia/Kolkata")
    assert times(page)[0][1:] == ("1 Nov 2026, 17:30 IST", "2 hours ago")
    assert "time-zone.js" not in page.html

    # A zone that does not exist is ignored: UTC
    for made_up in ("Mars/Olympus_Mons", "../../etc/passwd", "x" * 300):
        page = await reader.get(path, Cookie=f"tz={made_up}")
        assert page.status == 200
        assert times(page)[0][1] == "1 Nov 2026, 12:00 UTC"

    # A member's own choice in the profile settings wins over the browser's
    await alice.get("/settings/profile")
    page = await alice.post(
        "/settings/profile",
        {"display_name": "alice", "bio": "", "time_zone": "Not/A_Zone"},
    )
    assert page.status == 400
    assert "Europe/London" in page.text and 'value="Not/A_Zone"' in page.html
    page = await alice.post(
        "/settings/profile",
        {"display_name": "alice", "bio": "", "time_zone": "Europe/Paris"},
    )
    assert page.status == 200
    page = await alice.get(path, Cookie="tz=Asia/Kolkata")
    assert times(page)[0][1] == "1 Nov 2026, 13:00 CET"
    assert 'value="Europe/Paris"' in (await alice.get("/settings/profile")).html

    # A month and more later, the date stands instead of "ago"
    clock.advance(timedelta(days=40))
    page = await reader.get(path)
    assert times(page)[0][2] == "1 Nov 2026"


async def test_bare_addresses_are_linked_and_tables_rendered(
    browser_factory: BrowserFactory,
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await create_group(alice, "t1d", "Type 1 diabetes")
    body = (
        "See https://www.nhs.uk/conditions/type-1-diabetes/. Or `https://in.code.example`.\n\n"
        "| Time | Reading |\n|---|--:|\n| 3am | 3.1 |\n| <b>7am</b> | https://log.example/x |\n"
    )
    page = await alice.get(await thread_by(alice, body))
    assert (
        '<a href="https://www.nhs.uk/conditions/type-1-diabetes/" rel="nofollow ugc noopener">'
        "https://www.nhs.uk/conditions/type-1-diabetes/</a>." in page.html
    )
    assert "<code>https://in.code.example</code>" in page.html  # code stays code
    assert "<table>" in page.html and "<th>Reading</th>" in page.html
    assert "<td>3.1</td>" in page.html
    assert "<td>&lt;b&gt;7am&lt;/b&gt;</td>" in page.html  # raw HTML stays text
    assert '<a href="https://log.example/x" rel="nofollow ugc noopener">' in page.html
    assert "style=" not in page.html.split('<ol class="posts">')[1]


async def test_a_pressed_helpful_shows_without_colour(browser_factory: BrowserFactory) -> None:
    alice, bob = await browser_factory(), await browser_factory()
    await alice.register("alice")
    await bob.register("bob")
    await create_group(alice, "t1d", "Type 1 diabetes")
    path = await thread_by(alice, "Glucose tabs by the bed help me.")
    await bob.post("/g/t1d/join")
    page = await bob.get(path)
    first = post_ids(page)[0]
    assert 'aria-pressed="false"' in page.html and "✓" not in page.html

    page = await bob.post(f"/p/{first}/helpful", {"helpful": "yes"})
    assert page.status == 200
    assert 'aria-pressed="true"' in page.html
    assert "✓" in page.html and "You marked this helpful" in page.text
    assert "Helpful (1)" in page.text

    page = await bob.post(f"/p/{first}/helpful", {"helpful": "no"})
    assert 'aria-pressed="false"' in page.html and "You marked this helpful" not in page.text


async def test_a_failed_reply_shows_an_error_summary_linking_to_its_field(
    browser_factory: BrowserFactory,
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await create_group(alice, "t1d", "Type 1 diabetes")
    path = await thread_by(alice, "Anyone else?")
    page = await alice.post(f"{path}/reply", {"body": "   "})
    assert page.status == 400
    summary = page.html.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    assert "autofocus" in summary and 'tabindex="-1"' in summary
    assert "There is a problem" in summary
    assert '<a href="#f-body">' in summary and 'id="f-body"' in page.html
    # At the top: before the thread's title
    assert page.html.index('id="error-summary"') < page.html.index("<h1>")


async def test_a_deleted_opening_post_names_nobody(browser_factory: BrowserFactory) -> None:
    alice, bob = await browser_factory(), await browser_factory()
    await alice.register("alice", display_name="Alice Quill")
    await bob.register("bob", display_name="Bob Reed")
    await create_group(alice, "t1d", "Type 1 diabetes")
    path = await thread_by(alice, "Something I regret saying.")
    await bob.post("/g/t1d/join")
    await bob.post(f"{path}/reply", {"body": "I hear you."})
    first = post_ids(await alice.get(path))[0]
    await alice.get(f"/p/{first}/delete")
    page = await alice.post(f"/p/{first}/delete", {})
    assert page.status == 200

    reader = await browser_factory()
    page = await reader.get(path)
    assert "This post was deleted." in page.text
    assert "Alice Quill" not in page.text and "@alice" not in page.text
    assert "Something I regret" not in page.text
    assert "Bob Reed" in page.text  # the reply still names its author


async def test_registration_shows_every_mistake_and_keeps_what_was_typed(
    browser_factory: BrowserFactory,
) -> None:
    visitor = await browser_factory()
    await visitor.get("/register")
    page = await visitor.post(
        "/register",
        {"username": "No Spaces!", "display_name": "Kit", "password": "short",
         "password_again": "other"},
    )  # fmt: skip
    assert page.status == 400
    summary = page.html.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    for field in ("username", "password", "consent"):
        assert f'<a href="#f-{field}">' in summary, field
    assert 'value="No Spaces!"' in page.html and 'value="Kit"' in page.html
    assert "short" not in page.html  # passwords are never sent back

    # With the box ticked and only the passwords wrong, the tick stays
    page = await visitor.post(
        "/register",
        {"username": "kit", "password": DEFAULT_PASSWORD, "password_again": "different!!",
         "consent": "yes"},
    )  # fmt: skip
    assert page.status == 400
    assert "The two passwords are not the same." in page.text
    assert re.search(r'id="f-consent" name="consent" value="yes" checked', page.html)
    assert 'value="kit"' in page.html


async def test_a_join_link_survives_creating_an_account(
    browser_factory: BrowserFactory,
) -> None:
    # Given a private group's join link, opened by someone without an account
    alice = await browser_factory()
    await alice.register("alice")
    await alice.get("/groups/new")
    page = await alice.post(
        "/groups/new",
        {"slug": "hush", "name": "Quiet group", "visibility": "private", "join_policy": "request"},
    )
    moderation = await alice.get(f"{page.path}/moderation")
    link = re.search(r"https?://[^\s\"<]+/g/[^/]+/ask/[A-Za-z0-9_-]+", moderation.html)
    assert link, moderation.text[:800]
    ask_path = "/" + link.group().split("/", 3)[3]
    visitor = await browser_factory()
    page = await visitor.get(ask_path)
    register_link = re.search(r'href="(/register\?next=[^"]+)"', page.html)
    assert register_link

    # When they create an account from it, and a mistake on the way
    page = await visitor.get(register_link.group(1).replace("&amp;", "&"))
    assert f'name="next" value="{ask_path}"' in page.html
    sign_in = re.search(r'href="(/login\?next=[^"]+)"', page.html)
    assert sign_in and "/ask/" in sign_in.group(1)
    fields = {"username": "kit", "password": DEFAULT_PASSWORD, "next": ask_path}
    page = await visitor.post("/register", fields | {"password_again": DEFAULT_PASSWORD})
    assert page.status == 400 and f'name="next" value="{ask_path}"' in page.html

    # Then they land back on the join link, signed in, and can ask to join
    fields |= {"password_again": DEFAULT_PASSWORD, "consent": "yes"}
    page = await visitor.post("/register", fields)
    assert page.status == 200 and page.path == ask_path
    assert "Ask to join" in page.text


@pytest.mark.parametrize(
    "target", ["//evil.example", "https://evil.example", "/\\evil.example", "/%2F/evil.example"]
)
async def test_registration_never_redirects_to_another_site(
    browser_factory: BrowserFactory, target: str
) -> None:
    visitor = await browser_factory()
    page = await visitor.get(f"/register?next={target}")
    assert "evil.example" not in page.html
    await visitor.get("/register")
    fields = {"username": "kit", "password": DEFAULT_PASSWORD, "password_again": DEFAULT_PASSWORD,
              "consent": "yes", "next": target}  # fmt: skip
    async with visitor.client.post(
        "/register", data=fields | {"csrf_token": visitor.token}, allow_redirects=False
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
    page = await visitor.get(f"/login?next={target}")
    assert "evil.example" not in page.html


async def test_405_and_403_pages_speak_plainly(browser_factory: BrowserFactory) -> None:
    visitor = await browser_factory()
    async with visitor.client.get("/logout") as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
        page = Page(405, "/logout", await response.text())
    assert "Method Not Allowed" not in page.text
    assert "This address cannot be used like that." in page.text
    assert 'class="site-header"' in page.html  # the site's own page, as for a 404

    alice, bob = await browser_factory(), await browser_factory()
    await alice.register("alice")
    await bob.register("bob")
    await create_group(alice, "t1d", "Type 1 diabetes")
    page = await bob.get("/g/t1d/moderation")
    assert page.status == 403
    assert "<h1>Not allowed</h1>" in page.html and "Forbidden" not in page.text


async def test_a_server_that_cannot_be_reached_is_named_in_plain_words(
    browser_factory: BrowserFactory,
) -> None:
    alice = await browser_factory()
    await alice.register("alice")
    await alice.get("/authorize_interaction")
    page = await alice.post("/groups/follow", {"handle": "diabetes@127.0.0.1:9"})
    assert page.status == 400
    assert (
        "That group could not be found on 127.0.0.1:9, or we could not reach 127.0.0.1:9."
        in page.text
    )
    for raw in ("Errno", "Connect call failed", "Cannot connect", "cannot reach http"):
        assert raw not in page.text


async def test_a_reply_to_a_deleted_reply_does_not_name_its_author(
    browser_factory: BrowserFactory,
) -> None:
    alice, bob = await browser_factory(), await browser_factory()
    await alice.register("alice", display_name="Alice Quill")
    await bob.register("bob", display_name="Bob Reed")
    await create_group(alice, "t1d", "Type 1 diabetes")
    path = await thread_by(alice, "Anyone else?")
    await bob.post("/g/t1d/join")
    await bob.post(f"{path}/reply", {"body": "Me, sadly."})
    bobs = post_ids(await bob.get(path))[1]
    page = await alice.post(f"{path}/reply", {"body": "Sorry to hear.", "parent": bobs})
    assert "In reply to" in page.text and "Bob Reed" in page.text
    await bob.get(f"/p/{bobs}/delete")
    await bob.post(f"/p/{bobs}/delete", {})

    page = await (await browser_factory()).get(path)
    assert "In reply to a deleted post" in page.text
    assert "Bob Reed" not in page.text and "@bob" not in page.text
