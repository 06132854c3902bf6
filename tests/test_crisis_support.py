"""Crisis support: the admins' resources, phrases and notices, the help link on every page, the
resources shown before a matching draft is published, and the crisis report it files."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from node import crisis, groups, members, posts
from node.config import CrisisDefaults
from node.crisis import PhraseMatcher, parse_crisis_line, parse_phrases, words_of
from node.errors import Invalid
from node.policy import Viewer
from node.reports import ReportCategory
from node.runtime import NodeContext
from node.storage.models import Member, ModerationLogEntry, Post, Report, Thread
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import eventually
from tests.peers import PUBLIC, FakeRemote, Hospital, join, post_signed, processed
from tests.test_browser import CHROMIUM, PHONE, chromium, site  # noqa: F401
from tests.test_forgery import create_of, page_by
from web.app import create_app

PHRASES = ["kill myself", "suicide", "overdose", "can't go on", "Selbstmörder"]

# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "text",
    [
        "I want to KILL   myself.",
        "i want to kill\nmyself",
        "kill... myself",
        "kill—myself",
        "Kill Myself",
        "**kill** _myself_",  # Markdown around the words
        "kill_myself",  # an underscore separates words
        "thinking about suicide",
        "Suicide.",
        "(suicide)",
        "SUİCİDE",  # Turkish dotted capital I: folds to i plus a combining dot, dropped
        "ｓｕｉｃｉｄｅ",  # fullwidth letters unfold (NFKD)
        "sui\u200bcide",  # a zero-width space does not split the word
        "sui\u00adcide",  # nor does a soft hyphen
        "I took an overdose",
        "I can’t go on",  # a curly apostrophe separates words as a straight one does
        "I can't  go  on",
        "selbstmorder",  # accents are ignored
        "SELBSTMÖRDER",
    ],
)
def test_a_phrase_matches_whole_words_whatever_the_case_accents_and_spacing(text: str) -> None:
    assert PhraseMatcher.of(PHRASES).matches(text)


@pytest.mark.parametrize(
    "text",
    [
        "I have the skill myself",  # "kill" inside "skill" is not the word kill
        "killed myself laughing",  # another form of the word is another word
        "kill yourself",
        "myself kill",  # the words in another order
        "kill my self",
        "suicidesquad",  # a phrase inside a longer word does not match
        "suicides",  # nor does its plural: the admins list the forms they want
        "antisuicide",
        "overdosed",  # "overdose" does not match "overdosed" unless it is listed too
        "overdoses",
        "cant go on",  # without the apostrophe it is another word: list both if wanted
        "I can't go online",
        "",
    ],
)
def test_a_phrase_does_not_match_inside_words_or_other_forms(text: str) -> None:
    assert PhraseMatcher.of(PHRASES).matches(text) == []


def test_matching_reports_which_phrases_matched_across_several_texts() -> None:
    matcher = PhraseMatcher.of(PHRASES)
    assert matcher.matches("A title", "an overdose", "and suicide") == ["suicide", "overdose"]
    assert PhraseMatcher.of([]).matches("suicide") == []
    assert words_of("Ça   VA? l'été") == ("ca", "va", "l", "ete")


def test_phrases_are_one_a_line_deduplicated_and_need_a_word() -> None:
    assert parse_phrases("kill myself\n\n  Kill   MYSELF \r\nsuicide\n") == [
        "kill myself",
        "suicide",
    ]
    with pytest.raises(Invalid, match="Line 2 has no letter or digit"):
        parse_phrases("suicide\n...!\n")
    with pytest.raises(Invalid, match="longer than"):
        parse_phrases("x" * 201)


# ---------------------------------------------------------------- a node with people


async def seed(node: NodeContext, phrases: list[str] | None = None) -> str:
    """An admin, alice who owns the public group "carers", bob a plain member; the phrases, if
    given, set by the admin. Returns the id of a thread in the group."""
    now = node.clock.now()
    async with node.transaction() as session:
        admin = await members.create_member(
            session, node.passwords, node.settings.limits, username="admin",
            password=DEFAULT_PASSWORD, display_name="Admin", now=now, is_admin=True,
        )  # fmt: skip
        alice = await members.create_member(
            session, node.passwords, node.settings.limits, username="alice",
            password=DEFAULT_PASSWORD, display_name="Alice", now=now,
        )  # fmt: skip
        await members.create_member(
            session, node.passwords, node.settings.limits, username="bob",
            password=DEFAULT_PASSWORD, display_name="Bob", now=now,
        )  # fmt: skip
        await groups.create_group(
            session, node.settings.limits, owner_id=alice.id, slug="carers",
            name="Carers", description="For people caring for someone.", now=now,
        )  # fmt: skip
        view = await groups.view_group(session, "carers", Viewer(alice.id))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title="Bad days",
            draft=posts.Draft("What helps you on bad days?"), now=now,
        )  # fmt: skip
        if phrases:
            await crisis.set_phrases(session, admin, "\n".join(phrases), now)
    return thread.id


async def signed_in(browser_factory: BrowserFactory, username: str) -> Browser:
    browser = await browser_factory()
    await browser.login(username)
    return browser


async def crisis_reports(node: NodeContext) -> list[Report]:
    async with node.transaction() as session:
        query = select(Report).where(Report.category == ReportCategory.CRISIS.value)
        return list(await session.scalars(query.order_by(Report.id)))


async def post_with_source(node: NodeContext, text: str) -> Post | None:
    async with node.transaction() as session:
        return (await session.scalars(select(Post).where(Post.source == text))).first()


# ---------------------------------------------------------------- the admins' page


async def test_the_admin_sets_resources_phrases_and_notices_and_others_are_refused(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    admin = await signed_in(browser_factory, "admin")

    # When the admin adds a resource, the phrases and the notices
    page = await admin.get("/admin/crisis")
    assert page.status == 200 and "None yet" in page.text
    page = await admin.post(
        "/admin/crisis/resources",
        {"name": "Samaritans", "line": "116 123", "url": "https://www.samaritans.org/",
         "region": "UK and Ireland"},
    )  # fmt: skip
    assert page.status == 200 and page.path == "/admin/crisis"
    page = await admin.post("/admin/crisis/phrases", {"phrases": "kill myself\nsuicide\n"})
    assert page.status == 200
    page = await admin.post(
        "/admin/crisis/notices",
        {"guidelines": "Be kind. No selling.", "emergency_notice": "Not medical advice. Call 999."},
    )
    assert page.status == 200

    # Then the page shows them
    assert "Samaritans (UK and Ireland) · 116 123" in page.text
    assert "kill myself\nsuicide</textarea>" in page.html
    assert "Be kind. No selling." in page.text and "Call 999." in page.text
    # And the help page lists the resource, the notice and the guidelines
    help_page = await (await browser_factory()).get("/help")
    assert help_page.status == 200
    assert "Samaritans (UK and Ireland) 116 123 https://www.samaritans.org/" in help_page.text
    assert '<a href="https://www.samaritans.org/" rel="noopener">' in help_page.html
    assert "Not medical advice. Call 999." in help_page.text
    assert "Be kind. No selling." in help_page.text
    # And each change is in the node-wide audit log
    async with web_node.transaction() as session:
        logged = list(await session.scalars(select(ModerationLogEntry)))
    assert [(e.action, e.group_id, e.actor_label) for e in logged] == [
        ("crisis_settings", None, "admin")
    ] * 3
    assert "Samaritans" in logged[0].reason

    # When the admin removes the resource, it is gone
    resource_id = re.search(r'/admin/crisis/resources/(\d+)/delete"', page.html)
    assert resource_id
    page = await admin.post(f"/admin/crisis/resources/{resource_id.group(1)}/delete")
    assert page.status == 200 and "Remove Samaritans" not in page.text and "None yet" in page.text
    assert (await admin.post("/admin/crisis/resources/999/delete")).status == 404

    # And anyone else is told there is no such page, and changes nothing
    for browser in (await browser_factory(), await signed_in(browser_factory, "bob")):
        assert (await browser.get("/admin/crisis")).status == 404
        await browser.get("/")
        for path, fields in (
            ("/admin/crisis/resources", {"name": "Fake", "line": "1"}),
            ("/admin/crisis/phrases", {"phrases": ""}),
            ("/admin/crisis/notices", {"guidelines": "", "emergency_notice": "x"}),
            ("/admin/crisis/resources/1/delete", {}),
        ):
            # (a stranger's form fails its CSRF check first: 403; a member's reaches the page)
            assert (await browser.post(path, fields)).status in (403, 404), path
    assert "kill myself" in (await admin.get("/admin/crisis")).html


async def test_bad_resources_and_phrases_are_refused_with_a_reason(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    admin = await signed_in(browser_factory, "admin")
    await admin.get("/admin/crisis")
    page = await admin.post("/admin/crisis/resources", {"name": "Helpline"})
    assert page.status == 400
    assert "Give a phone or text line, a web address, or both." in page.text
    assert 'value="Helpline"' in page.html  # kept
    page = await admin.post("/admin/crisis/resources", {"name": "X", "url": "javascript:alert(1)"})
    assert page.status == 400 and "starting with https://" in page.text
    page = await admin.post("/admin/crisis/phrases", {"phrases": "suicide\n!!!"})
    assert page.status == 400 and "Line 2 has no letter or digit" in page.text
    page = await admin.post("/admin/crisis/notices", {"guidelines": "x" * 10_001})
    assert page.status == 400 and "too long" in page.text
    async with web_node.transaction() as session:
        assert list(await session.scalars(select(ModerationLogEntry))) == []


# ---------------------------------------------------------------- the help link


HELP_LINK = re.compile(
    r'<header class="site-header">\s*<p class="help-bar"><a id="help-link" href="/help">'
    r"Crisis help</a></p>\s*<nav"
)


def assert_help_link_first_in_header(page: Page) -> None:
    assert page.html.count('id="help-link"') == 1, page.path
    assert HELP_LINK.search(page.html), f"the help link is not first in the header of {page.path}"


async def test_every_page_has_the_help_link_first_in_its_header(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    thread_id = await seed(web_node)
    anonymous = await browser_factory()
    bob = await signed_in(browser_factory, "bob")
    admin = await signed_in(browser_factory, "admin")
    pages = [
        await anonymous.get("/"),
        await anonymous.get("/login"),
        await anonymous.get("/register"),
        await anonymous.get("/help"),
        await anonymous.get("/g/carers"),
        await anonymous.get(f"/t/{thread_id}"),
        await anonymous.get("/u/alice"),
        await anonymous.get("/no/such/page"),  # 404
        await anonymous.get("/g/nosuchgroup"),  # 404 from the domain
        await anonymous.post("/help", {}),  # 405
        await anonymous.post("/login", {"username": "x", "password": "y"}, csrf=False),
        await bob.get("/"),
        await bob.get("/g/carers/new"),
        await bob.get(f"/t/{thread_id}"),
        await bob.get("/settings/profile"),
        await admin.get("/admin/crisis"),
        await admin.get("/admin/federation"),
    ]
    assert {page.status for page in pages} >= {200, 400, 404, 405}
    for page in pages:
        assert_help_link_first_in_header(page)


async def test_the_help_page_without_resources_says_to_call_the_local_emergency_number(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    page = await (await browser_factory()).get("/help")
    assert page.status == 200
    assert "have not listed crisis lines yet" in page.text
    assert "If you are in danger now, call your local emergency number." in page.text
    assert crisis.DEFAULT_EMERGENCY_NOTICE in page.text


needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed",
)


@needs_chromium
async def test_the_help_link_stands_in_the_same_place_in_a_real_browser(
    site: tuple[str, str],  # noqa: F811
    chromium: Any,  # noqa: F811
) -> None:
    base, thread_id = site
    page = await chromium.new_page(viewport=PHONE)
    boxes = []
    for path in ("/", "/login", f"/t/{thread_id}", "/no/such/page"):
        await page.goto(base + path)
        link = page.locator("#help-link")
        assert await link.inner_text() == "Crisis help"
        box = await link.bounding_box()
        assert box is not None and box["height"] >= 24, box  # a target a thumb can hit
        boxes.append((path, round(box["x"]), round(box["y"])))
        # It is reached from the keyboard right after the skip link
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "help-link"
    assert len({(x, y) for _, x, y in boxes}) == 1, boxes


# ---------------------------------------------------------------- drafts that match


async def test_a_new_thread_that_matches_shows_the_resources_then_publishes_and_reports(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node, PHRASES)
    async with web_node.transaction() as session:
        admin = (await session.scalars(select(Member).where(Member.username == "admin"))).one()
        await crisis.add_resource(
            session, admin, name="Samaritans", line="116 123", url="https://samaritans.org/",
            region="UK", now=web_node.clock.now(),
        )  # fmt: skip
    bob = await signed_in(browser_factory, "bob")
    await bob.post("/g/carers/join")
    await bob.get("/g/carers/new")
    draft = {"title": "Tonight", "body": "I can't go on & I want to KILL myself.",
             "content_warning": "self-harm"}  # fmt: skip

    # When bob sends a draft that says a crisis phrase
    page = await bob.post("/g/carers/new", draft)

    # Then he sees the resources, his draft is kept, and nothing is published yet
    assert page.status == 200 and page.path == "/g/carers/new"
    assert "you do not have to face this alone" in page.text
    assert "Samaritans (UK) 116 123" in page.text
    assert "If you are in danger now, call your local emergency number." in page.text
    assert "I can&#39;t go on &amp; I want to KILL myself.</textarea>" in page.html
    assert 'value="Tonight"' in page.html and 'value="self-harm"' in page.html
    assert '<input type="hidden" name="crisis_seen" value="yes">' in page.html
    assert '<button type="submit">Publish</button>' in page.html
    assert await post_with_source(web_node, draft["body"]) is None
    assert await crisis_reports(web_node) == []

    # When he presses Publish
    page = await bob.post("/g/carers/new", draft | {"crisis_seen": "yes"})

    # Then the thread is published
    assert page.status == 200 and page.path.startswith("/t/"), page.text
    post = await post_with_source(web_node, draft["body"])
    assert post is not None
    # And a crisis report, by nobody, waits for the group's moderators
    [report] = await crisis_reports(web_node)
    async with web_node.transaction() as session:
        carers = await groups.view_group(session, "carers", Viewer(None))
    assert (report.post_id, report.group_id, report.reporter_id) == (
        post.id,
        carers.group.id,
        None,
    )
    assert (report.comment, report.state, report.origin_domain) == (
        crisis.CRISIS_REPORT_COMMENT,
        "open",
        "",
    )


async def test_a_reply_that_matches_shows_the_resources_then_publishes_and_reports(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    thread_id = await seed(web_node, PHRASES)
    alice = await signed_in(browser_factory, "alice")
    await alice.get(f"/t/{thread_id}")
    reply = {"body": "Thinking about an OVERDOSE tonight.", "content_warning": "", "parent": ""}

    page = await alice.post(f"/t/{thread_id}/reply", reply)
    assert page.status == 200
    assert "you do not have to face this alone" in page.text
    assert "have not listed" not in page.text
    assert "Thinking about an OVERDOSE tonight.</textarea>" in page.html
    assert '<a href="#reply">below</a>' in page.html
    assert 'id="send-reply">Publish</button>' in page.html
    assert await post_with_source(web_node, reply["body"]) is None

    page = await alice.post(f"/t/{thread_id}/reply", reply | {"crisis_seen": "yes"})
    assert page.status == 200 and page.path == f"/t/{thread_id}", page.text
    post = await post_with_source(web_node, reply["body"])
    assert post is not None
    assert [(r.post_id, r.reporter_id) for r in await crisis_reports(web_node)] == [(post.id, None)]


async def test_a_draft_that_does_not_match_is_published_at_once_without_a_report(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    thread_id = await seed(web_node, PHRASES)
    alice = await signed_in(browser_factory, "alice")
    await alice.get(f"/t/{thread_id}")
    for text in (
        "My skill at pacing improved myself",
        "Watched #SuicideSquad: overdosed on popcorn",
    ):
        page = await alice.post(f"/t/{thread_id}/reply", {"body": text, "parent": ""})
        assert page.status == 200 and "face this alone" not in page.text
        assert await post_with_source(web_node, text) is not None
    assert await crisis_reports(web_node) == []


async def test_with_no_phrases_nothing_matches(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    thread_id = await seed(web_node)
    alice = await signed_in(browser_factory, "alice")
    await alice.get(f"/t/{thread_id}")
    page = await alice.post(f"/t/{thread_id}/reply", {"body": "suicide", "parent": ""})
    assert page.status == 200 and "face this alone" not in page.text
    assert await crisis_reports(web_node) == []


# ---------------------------------------------------------------- notices


async def test_the_notice_and_guidelines_are_on_sign_up_and_group_pages(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    anonymous = await browser_factory()
    # Before the admins write anything, the default notice is shown
    for path in ("/register", "/g/carers"):
        page = await anonymous.get(path)
        assert crisis.DEFAULT_EMERGENCY_NOTICE in page.text, path
        assert "Community guidelines" not in page.text
    async with web_node.transaction() as session:
        admin = (await session.scalars(select(Member).where(Member.username == "admin"))).one()
        await crisis.set_notices(
            session, admin, guidelines="Be kind.\nNo selling.",
            emergency_notice="Not medical advice: call 112.", now=web_node.clock.now(),
        )  # fmt: skip
    for path in ("/register", "/g/carers"):
        page = await anonymous.get(path)
        assert page.status == 200, path
        assert "Not medical advice: call 112." in page.text, path
        assert "<summary>Community guidelines</summary>" in page.html, path
        assert "Be kind.\nNo selling." in page.html, path
    # And a sign-up form sent back with a mistake still shows them
    page = await anonymous.post("/register", {"username": "x"})
    assert page.status == 400 and "Not medical advice: call 112." in page.text


# ---------------------------------------------------------------- from other servers


async def test_a_post_from_another_server_in_our_group_that_matches_is_reported(
    hospital: Hospital, remote: FakeRemote
) -> None:
    node = hospital.running.node
    async with node.transaction() as session:
        await members.create_member(
            session, node.passwords, node.settings.limits, username="admin",
            password=DEFAULT_PASSWORD, display_name="Admin", now=node.clock.now(), is_admin=True,
        )  # fmt: skip
        admin = (await session.scalars(select(Member).where(Member.username == "admin"))).one()
        await crisis.set_phrases(session, admin, "\n".join(PHRASES), node.clock.now())
    # Given mallory, on another server, is a member of our public group
    await join(hospital, remote)

    # When she starts a thread there saying a crisis phrase, and another saying none
    tag = uuid.uuid4().hex
    matching = page_by(remote, "mallory", hospital.group_iri, f"I want to kill myself {tag}")
    plain = page_by(remote, "mallory", hospital.group_iri, f"I have the skill myself {tag}")
    for note in (matching, plain):
        create = create_of(remote, "mallory", note, hospital.group_iri)
        assert (await post_signed(hospital, remote, create)).status == 202
        state = await eventually(lambda c=create: processed(hospital, c["id"]), "processed")
        assert state == "done"

    # Then the matching one, and only it, is reported to the group's moderators
    [report] = await crisis_reports(node)
    async with node.transaction() as session:
        post = (await session.scalars(select(Post).where(Post.ap_id == matching["id"]))).one()
        plain_post = (await session.scalars(select(Post).where(Post.ap_id == plain["id"]))).one()
        group = await groups.view_group(session, "t1d", Viewer(None))
    assert (report.post_id, report.group_id, report.reporter_id) == (post.id, group.group.id, None)

    # When she replies to the plain thread with a crisis phrase
    mallory = remote.actor("mallory")
    note = {"id": f"{mallory}/notes/{tag}", "type": "Note", "attributedTo": mallory,
            "content": "<p>Honestly: SUICIDE crosses my mind.</p>",
            "inReplyTo": f"{hospital.base_url}/t/{plain_post.thread_id}",
            "to": [PUBLIC], "cc": [hospital.group_iri], "audience": hospital.group_iri}  # fmt: skip
    create = create_of(remote, "mallory", note, hospital.group_iri)
    assert (await post_signed(hospital, remote, create)).status == 202
    assert await eventually(lambda: processed(hospital, create["id"]), "processed") == "done"

    # Then the reply is reported too
    async with node.transaction() as session:
        reply = (await session.scalars(select(Post).where(Post.ap_id == note["id"]))).one()
    assert [r.post_id for r in await crisis_reports(node)] == [post.id, reply.id]


async def test_replies_stored_together_are_each_checked(node: NodeContext) -> None:
    # Given the phrases, and a thread in a local group
    thread_id = await seed(node, PHRASES)
    async with node.transaction() as session:
        alice = (await session.scalars(select(Member).where(Member.username == "alice"))).one()
        # When replies are stored together (the inbox's fast path for plain replies)
        results = await posts.reply_many(
            session,
            node.settings.limits,
            [
                posts.NewReply(Viewer(alice.id), thread_id, None, posts.Draft(text))
                for text in ("fine today", "Sometimes I think of suicide", "a skilled nurse")
            ],
            node.clock.now(),
        )
    # Then only the matching one is reported
    assert [r.post_id for r in await crisis_reports(node)] == [results[1]]


async def test_other_servers_posts_in_their_own_groups_are_theirs_to_watch(
    node: NodeContext,
) -> None:
    thread_id = await seed(node, PHRASES)
    async with node.transaction() as session:
        post = await posts.first_post(session, thread_id)
        thread = await session.get(Thread, thread_id)
        assert thread is not None

        def written(group_is_local: bool, written_here: bool) -> crisis.WrittenPost:
            return crisis.WrittenPost(
                post.id, thread.group_id, group_is_local, written_here, ("suicide",)
            )

        # A post from another server in another server's group is not ours to report
        await crisis.report_crisis_posts(session, [written(False, False)], node.clock.now())
        assert await session.scalar(select(func.count()).select_from(Report)) == 0
        # One our member wrote there is, as is anything in our own groups
        for group_is_local, written_here in ((False, True), (True, False), (True, True)):
            await crisis.report_crisis_posts(
                session, [written(group_is_local, written_here)], node.clock.now()
            )
        assert await session.scalar(select(func.count()).select_from(Report)) == 3


# ---------------------------------------------------------------- the configuration's defaults


async def test_the_configurations_resources_and_notice_show_until_the_admins_set_their_own(
    make_node: NodeFactory, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    # Given a node whose configuration names a crisis line and an emergency notice
    defaults = CrisisDefaults(
        resources=(parse_crisis_line("NHS 111 | 111 | https://111.nhs.uk/ | England"),),
        emergency_notice="Peer support only. In an emergency call 999.",
    )
    node = await make_node("configured", crisis=defaults)
    await seed(node)
    client = await aiohttp_client(TestServer(create_app(node)))
    visitor, admin = Browser(client), Browser(await aiohttp_client(client.server))

    # Then the help page and sign-up show them
    page = await visitor.get("/help")
    assert "NHS 111" in page.text and "https://111.nhs.uk/" in page.text
    assert "Peer support only. In an emergency call 999." in page.text
    assert "Peer support only." in (await visitor.get("/register")).text
    # And the admins see where they come from, with nothing to remove
    await admin.login("admin")
    page = await admin.get("/admin/crisis")
    assert "come from the node's configuration" in page.text and "NHS 111" in page.text
    assert "Remove NHS 111" not in page.text

    # When an admin adds a resource and a notice of their own, theirs replace the defaults
    await admin.post(
        "/admin/crisis/resources",
        {"name": "Samaritans", "line": "116 123", "url": "", "region": ""},
    )
    await admin.post(
        "/admin/crisis/notices", {"guidelines": "", "emergency_notice": "Call 112 in danger."}
    )
    page = await visitor.get("/help")
    assert "Samaritans" in page.text and "NHS 111" not in page.text
    assert "Call 112 in danger." in page.text and "Peer support only." not in page.text


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "The name"),
        ("Samaritans", "Give a phone or text line, a web address, or both."),
        ("Samaritans | | ftp://x.example", "Give a full web address starting with https://"),
        ("a | b | https://x.example | d | e", "more than four parts"),
    ],
)
def test_a_configured_crisis_line_is_checked_as_an_added_one(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_crisis_line(line)
