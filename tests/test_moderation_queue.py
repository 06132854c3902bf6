"""Reports and the moderation queue over real HTTP: members report, moderators and admins act
with a reason, everything lands in the moderation log, and the reporter is told the outcome
without being told who acted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select, text

from federation.origins import received_origin
from node import groups, members, moderation, remote
from node.config import Limits, Rate, RateLimits
from node.errors import Forbidden
from node.policy import Viewer
from node.reports import ReportCategory, file_report
from node.runtime import NodeContext
from node.storage.models import ModerationLogEntry, Post, Report, Thread
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.clock import ManualClock
from tests.conftest import BrowserFactory
from tests.test_web_flows import create_group
from web.app import create_app


async def scalar(node: NodeContext, statement: Any) -> Any:
    async with node.transaction(reading=True) as session:
        return (await session.execute(statement)).scalar()


async def post_of(node: NodeContext, body: str) -> Post:
    async with node.transaction(reading=True) as session:
        return (await session.execute(select(Post).where(Post.source == body))).scalar_one()


async def open_reports(node: NodeContext, post_id: str | None = None) -> int:
    where = Report.state == "open"
    if post_id is not None:
        where = where & (Report.post_id == post_id)
    return int(await scalar(node, select(func.count()).select_from(Report).where(where)))


async def report_ids(node: NodeContext, post_id: str) -> list[int]:
    async with node.transaction(reading=True) as session:
        rows = await session.execute(
            select(Report.id).where(Report.post_id == post_id).order_by(Report.id)
        )
        return list(rows.scalars())


@dataclass
class Group:
    """A public group: olga owns it, bob writes in it, carla and dan read and report."""

    node: NodeContext
    clock: ManualClock
    olga: Browser
    bob: Browser
    carla: Browser
    dan: Browser
    admin: Browser
    thread: str  # the path of bob's thread
    opening: str  # bob's opening post
    reply: str  # bob's reply


@pytest.fixture
async def web_node(make_node: Any) -> NodeContext:
    return await make_node(clock=ManualClock())


@pytest.fixture
async def group(web_node: NodeContext, browser_factory: BrowserFactory) -> Group:
    node = web_node
    async with node.transaction() as session:
        await members.create_member(
            session, node.passwords, node.settings.limits, username="root",
            password=DEFAULT_PASSWORD, display_name="Root", now=node.clock.now(), is_admin=True,
        )  # fmt: skip
    people = {}
    for name in ("olga", "bob", "carla", "dan"):
        people[name] = await browser_factory()
        await people[name].register(name, display_name=name.title())
    admin = await browser_factory()
    await admin.login("root")
    await create_group(people["olga"], "t1d", "Type 1 diabetes")
    for name in ("bob", "carla", "dan"):
        assert (await people[name].post("/g/t1d/join")).status == 200
    page = await people["bob"].post("/g/t1d/new", {"title": "Pumps", "body": "Buy cheap pills"})
    assert page.path.startswith("/t/")
    thread = page.path
    await people["bob"].post(f"{thread}/reply", {"body": "I feel like ending it"})
    opening = (await post_of(node, "Buy cheap pills")).id
    reply = (await post_of(node, "I feel like ending it")).id
    clock = node.clock
    assert isinstance(clock, ManualClock)
    return Group(node, clock, admin=admin, thread=thread, opening=opening, reply=reply, **people)


async def report(browser: Browser, post_id: str, category: str, comment: str = "") -> str:
    form = await browser.get(f"/p/{post_id}/report")
    assert form.status == 200 and "What is wrong?" in form.text
    page = await browser.post(f"/p/{post_id}/report", {"category": category, "comment": comment})
    assert page.status == 200, page.text[:400]
    return page.text


async def act(browser: Browser, report_id: int, **fields: str) -> Any:
    await browser.get(f"/reports/{report_id}")
    return await browser.post(f"/reports/{report_id}/act", fields)


async def test_reports_queue_crisis_first_then_oldest_grouped_by_target(group: Group) -> None:
    # Given two reports of bob's opening post, an hour apart, the second sent twice
    thanks = await report(group.carla, group.opening, "spam", "Selling pills")
    assert "Thank you" in thanks
    group.clock.advance(timedelta(hours=1))
    await report(group.dan, group.opening, "misinformation")
    again = await report(group.dan, group.opening, "misinformation")
    assert again == (await report(group.dan, group.opening, "misinformation"))
    assert await open_reports(group.node, group.opening) == 2  # the repeat made no second row
    # And, later, a crisis report of the reply, by a member and by the node itself, and a Flag
    group.clock.advance(timedelta(hours=1))
    await report(group.carla, group.reply, "crisis")
    async with group.node.transaction() as session:
        group_id = (await session.get(Thread, group.thread.removeprefix("/t/"))).group_id  # type: ignore[union-attr]
        await file_report(
            session, category=ReportCategory.CRISIS, now=group.clock.now(), group_id=group_id,
            post_id=group.reply,
        )  # fmt: skip
        await file_report(
            session, category=ReportCategory.HARASSMENT, now=group.clock.now(),
            group_id=group_id, post_id=group.opening, origin_domain="peer.example",
            flag_activity_id="https://peer.example/flags/1",
        )  # fmt: skip
    group.clock.advance(timedelta(minutes=5))

    # When the owner opens the group's queue
    page = await group.olga.get("/g/t1d/reports")

    # Then the crisis target comes first although it is newer, each target once with its count
    assert page.status == 200
    queue = page.text
    crisis, spam = queue.index("Self-harm or crisis"), queue.index("Selling pills")
    assert crisis < spam
    assert "3 reports" in queue and "2 reports" in queue
    assert "first reported 2 hours ago" in queue  # the opening post's oldest report
    assert "by this node (automatic)" in queue
    assert "by the server peer.example" in queue
    assert "by carla" in queue
    # And admins see the same in the node's queue
    node_queue = (await group.admin.get("/admin/reports")).text
    assert node_queue.index("Self-harm or crisis") < node_queue.index("Selling pills")


async def test_who_may_see_queues_logs_and_reports(
    group: Group, browser_factory: BrowserFactory
) -> None:
    await report(group.carla, group.opening, "spam")
    (report_id, *_) = await report_ids(group.node, group.opening)
    missing = await group.dan.get("/reports/999999")
    assert missing.status == 404
    # A member who does not moderate: the group pages say no, a report is like a missing one
    assert (await group.dan.get("/g/t1d/reports")).status == 403
    assert (await group.dan.get("/g/t1d/moderation/log")).status == 403
    hidden = await group.dan.get(f"/reports/{report_id}")
    assert (hidden.status, hidden.text) == (missing.status, missing.text)
    page = await group.dan.post(f"/reports/{report_id}/act", {"action": "dismiss", "reason": "x"})
    assert page.status == 404
    assert await open_reports(group.node) == 1
    # Node-wide pages do not exist for anyone but admins
    for path in ("/admin/reports", "/admin/audit"):
        assert (await group.olga.get(path)).status == 404
        assert (await group.admin.get(path)).status == 200
    # Anonymous people are sent to sign in, and may not report
    anonymous = await browser_factory()
    page = await anonymous.get(f"/p/{group.opening}/report")
    assert page.path.startswith("/login")
    # A report of a post one may not read is refused like a missing post
    assert (await group.dan.get("/p/zzzzzz/report")).status == 404
    page = await group.dan.post("/p/zzzzzz/report", {"category": "spam"})
    assert page.status == 404
    # A report needs a category
    page = await group.dan.post(f"/p/{group.opening}/report", {"category": "nonsense"})
    assert page.status == 400 and "Choose what is wrong" in page.text


async def test_each_action_needs_a_reason_and_is_logged(group: Group) -> None:
    # Given reports of bob's opening post (two) and of his reply (a crisis)
    await report(group.carla, group.opening, "spam")
    await report(group.dan, group.opening, "spam")
    await report(group.carla, group.reply, "crisis")
    first, second = await report_ids(group.node, group.opening)
    (crisis,) = await report_ids(group.node, group.reply)

    # When the owner acts without a reason, or removes without confirming: nothing happens
    page = await act(group.olga, first, action="remove_post", reason="", confirm="yes")
    assert page.status == 400 and "Give a reason" in page.text
    page = await act(group.olga, first, action="remove_post", reason="Spam")
    assert page.status == 400 and "Tick the box" in page.text
    assert await open_reports(group.node, group.opening) == 2
    assert "Buy cheap pills" in (await group.dan.get(group.thread)).text

    # When she removes it with a reason and confirms
    page = await act(
        group.olga, first, action="remove_post", reason="Selling drugs", confirm="yes",
        back="/g/t1d/reports",
    )  # fmt: skip
    assert page.status == 200 and page.path == "/g/t1d/reports"
    # Then the post is gone, and both reports of it are resolved
    thread_page = await group.dan.get(group.thread)
    assert "Buy cheap pills" not in thread_page.text
    assert "This post was deleted." in thread_page.text
    assert await open_reports(group.node, group.opening) == 0
    page = await act(group.olga, second, action="dismiss", reason="Done already")
    assert page.status == 409 and "handled already" in page.text

    # When she locks the thread from the crisis report
    page = await act(group.olga, crisis, action="lock_thread", reason="Calming things down")
    assert page.status == 200
    # Then nobody can reply any more
    page = await group.dan.post(f"{group.thread}/reply", {"body": "Hello?"})
    assert page.status == 409
    assert "A moderator locked this thread" in (await group.dan.get(group.thread)).text

    # And the reporter sees each outcome in plain words, never who acted
    mine = (await group.carla.get("/reports/mine")).text
    assert "The post was removed." in mine
    assert "The thread was locked to new replies." in mine
    assert "olga" not in mine.lower()

    # And bob is told of both, with the reasons and never who acted; carla, who only
    # reported, is told nothing among her notifications
    told = (await group.bob.get("/notifications")).text
    assert "A moderator removed your post" in told and "Selling drugs" in told
    assert "A moderator locked your thread to replies" in told and "Calming things down" in told
    assert "olga" not in told.lower()
    assert "moderator" not in (await group.carla.get("/notifications")).text

    # And the group's log says who, what, when and why
    log = (await group.olga.get("/g/t1d/moderation/log")).text
    assert "removed a post" in log and "Selling drugs" in log
    assert "locked a thread" in log and "Calming things down" in log
    assert log.count("olga") >= 2
    audit = (await group.admin.get("/admin/audit")).text
    assert "Selling drugs" in audit and "Type 1 diabetes" in audit


async def test_a_warning_reaches_the_member_in_plain_words(group: Group) -> None:
    # Given a report of bob as a member, which only admins see
    form = await group.carla.get("/u/bob/report")
    assert form.status == 200
    page = await group.carla.post("/u/bob/report", {"category": "harassment", "comment": "DMs"})
    assert page.status == 200
    assert "DMs" not in (await group.olga.get("/g/t1d/reports")).text
    queue = (await group.admin.get("/admin/reports")).text
    assert "DMs" in queue
    report_id = int(await scalar(group.node, select(Report.id).where(Report.post_id.is_(None))))
    # Reporting oneself is refused
    page = await group.bob.post("/u/bob/report", {"category": "other"})
    assert page.status == 400

    # When the admin warns him
    page = await act(group.admin, report_id, action="warn_member", reason="Be kind to others.")
    assert page.status == 200

    # Then every page counts it in the header, his notifications say why, not who
    home = await group.bob.get("/")
    assert "Notifications (1 new)" in home.text
    notices = await group.bob.get("/notifications")
    assert "The moderators sent you a warning" in notices.text
    assert "Be kind to others." in notices.text
    assert "root" not in notices.text.lower()
    await group.bob.post("/notifications/read")
    assert "(1 new)" not in (await group.bob.get("/")).text
    assert "The member was warned." in (await group.carla.get("/reports/mine")).text


async def test_an_expired_ban_lets_the_member_join_again(group: Group) -> None:
    await report(group.carla, group.opening, "spam")
    (report_id,) = await report_ids(group.node, group.opening)
    # A ban needs a confirmation, and a sensible length
    page = await act(group.olga, report_id, action="ban", reason="Spam", days="2")
    assert page.status == 400 and "Tick the box" in page.text
    page = await act(group.olga, report_id, action="ban", reason="Spam", days="-1", confirm="yes")
    assert page.status == 400 and "1 to 3650 days" in page.text

    # When the owner bans bob for two days
    page = await act(group.olga, report_id, action="ban", reason="Spam", days="2", confirm="yes")
    assert page.status == 200
    # Then he can neither reply nor join again
    assert (await group.bob.post(f"{group.thread}/reply", {"body": "hi"})).status == 403
    assert (await group.bob.post("/g/t1d/join")).status == 403
    assert (
        "The member was banned from the group until 3 Nov 2026"
        in (await group.carla.get("/reports/mine")).text
    )

    # When the two days have passed
    group.clock.advance(timedelta(days=2, minutes=1))
    page = await group.bob.get("/g/t1d")
    assert "Your ban from this group has ended" in page.text
    # Then he may join again, and post
    assert (await group.bob.post("/g/t1d/join")).status == 200
    page = await group.bob.post(f"{group.thread}/reply", {"body": "Sorry about that."})
    assert page.status == 200


async def test_a_suspended_member_cannot_sign_in_or_post(group: Group) -> None:
    await report(group.carla, group.opening, "spam")
    (report_id,) = await report_ids(group.node, group.opening)
    # A group's owner may not suspend an account: only admins may
    page = await act(group.olga, report_id, action="suspend", reason="Spam", confirm="yes")
    assert page.status == 403
    assert await open_reports(group.node) == 1

    # When an admin suspends bob
    page = await act(group.admin, report_id, action="suspend", reason="Spam bot", confirm="yes")
    assert page.status == 200

    # Then his open session has ended, and he cannot sign in, post or report
    page = await group.bob.post(f"{group.thread}/reply", {"body": "still here"})
    assert page.path.startswith("/login")
    page = await group.bob.login("bob")
    assert page.status == 400 and "suspended" in page.text
    assert (await group.bob.get(f"/p/{group.reply}/report")).path.startswith("/login")
    audit = (await group.admin.get("/admin/audit")).text
    assert "suspended an account" in audit and "Spam bot" in audit


async def test_ban_and_removal_pages_ask_for_a_reason_and_confirmation(group: Group) -> None:
    # The moderation page's ban asks first
    page = await group.olga.get("/g/t1d/moderation/ban?username=bob")
    assert page.status == 200 and "Ban" in page.text
    page = await group.olga.post("/g/t1d/moderation/ban", {"username": "bob", "reason": "Spam"})
    assert page.status == 400 and "Tick the box" in page.text
    page = await group.olga.post("/g/t1d/moderation/ban", {"username": "bob", "confirm": "yes"})
    assert page.status == 400 and "Give a reason" in page.text
    assert (await group.bob.post(f"{group.thread}/reply", {"body": "hi"})).status == 200
    fields = {"username": "bob", "reason": "Spam", "confirm": "yes"}
    assert (await group.olga.post("/g/t1d/moderation/ban", fields)).status == 200
    assert (await group.bob.post(f"{group.thread}/reply", {"body": "hi"})).status == 403
    # Lifting a ban also gives a reason
    page = await group.olga.post("/g/t1d/moderation/unban", {"username": "bob"})
    assert page.status == 400
    page = await group.olga.post("/g/t1d/moderation/unban", {"username": "bob", "reason": "Ok"})
    assert page.status == 200
    assert (await group.bob.post("/g/t1d/join")).status == 200

    # A moderator's removal of someone else's post asks for a reason and a confirmation
    form = await group.olga.get(f"/p/{group.reply}/delete")
    assert "Reason" in form.text
    page = await group.olga.post(f"/p/{group.reply}/delete", {"reason": "Off topic"})
    assert page.status == 400 and "Tick the box" in page.text
    page = await group.olga.post(f"/p/{group.reply}/delete", {"confirm": "yes"})
    assert page.status == 400 and "Give a reason" in page.text
    assert "I feel like ending it" in (await group.dan.get(group.thread)).text
    fields = {"reason": "Off topic", "confirm": "yes"}
    assert (await group.olga.post(f"/p/{group.reply}/delete", fields)).status == 200
    assert "I feel like ending it" not in (await group.dan.get(group.thread)).text
    # The author deletes their own post with one confirmation, as before
    await group.dan.post(f"{group.thread}/reply", {"body": "My own words"})
    own = (await post_of(group.node, "My own words")).id
    assert (await group.dan.post(f"/p/{own}/delete")).status == 200
    log = (await group.olga.get("/g/t1d/moderation/log")).text
    for words in ("banned a member", "lifted a ban", "removed a post", "Off topic"):
        assert words in log


async def test_moderators_lock_and_pin_threads_from_the_thread_page(group: Group) -> None:
    group.clock.advance(timedelta(minutes=1))
    page = await group.carla.post("/g/t1d/new", {"title": "Newer thread", "body": "Hi all"})
    assert page.status == 200
    listing = (await group.dan.get("/g/t1d")).text
    assert listing.index("Newer thread") < listing.index("Pumps")
    # Members see no moderation tools, and may not use them
    assert "Moderate this thread" not in (await group.dan.get(group.thread)).text
    page = await group.dan.post(f"{group.thread}/pin", {"pinned": "yes", "reason": "x"})
    assert page.status == 403

    # When the owner pins bob's older thread, without and then with a reason
    assert "Moderate this thread" in (await group.olga.get(group.thread)).text
    page = await group.olga.post(f"{group.thread}/pin", {"pinned": "yes"})
    assert page.status == 400 and "Give a reason" in page.text
    page = await group.olga.post(f"{group.thread}/pin", {"pinned": "yes", "reason": "FAQ"})
    assert page.status == 200

    # Then it is listed first
    listing = (await group.dan.get("/g/t1d")).text
    assert listing.index("Pumps") < listing.index("Newer thread")
    # And locking and unlocking work the same way
    await group.olga.post(f"{group.thread}/lock", {"locked": "yes", "reason": "Heated"})
    assert (await group.dan.post(f"{group.thread}/reply", {"body": "x"})).status == 409
    await group.olga.post(f"{group.thread}/lock", {"locked": "no", "reason": "Calm now"})
    assert (await group.dan.post(f"{group.thread}/reply", {"body": "x"})).status == 200
    log = (await group.olga.get("/g/t1d/moderation/log")).text
    for words in ("pinned a thread", "locked a thread", "unlocked a thread", "Heated"):
        assert words in log


async def test_the_moderation_log_is_append_only_in_the_database(group: Group) -> None:
    await group.olga.post(f"{group.thread}/pin", {"pinned": "yes", "reason": "FAQ"})
    async with group.node.transaction(reading=True) as session:
        entry_id = (await session.execute(select(ModerationLogEntry.id))).scalar_one()
    for statement in (
        "UPDATE moderation_log SET reason = 'nothing happened'",
        "UPDATE moderation_log SET actor_id = NULL, reason = 'nothing happened'",
        "DELETE FROM moderation_log",
    ):
        with pytest.raises(Exception, match="append-only"):
            async with group.node.transaction() as session:
                await session.execute(text(statement))
    # Erasing who acted (what ON DELETE SET NULL does) is the one change allowed
    async with group.node.transaction() as session:
        await session.execute(text("UPDATE moderation_log SET actor_id = NULL"))
    async with group.node.transaction(reading=True) as session:
        entry = await session.get(ModerationLogEntry, entry_id)
        assert entry is not None and entry.actor_id is None
        assert (entry.reason, entry.actor_label) == ("FAQ", "olga")


async def test_an_ended_ban_lets_a_remote_member_follow_again(group: Group) -> None:
    """Another server's member comes back by following the group again (not through /join)."""
    # Given a member of another server, banned from the group for a day
    now = group.clock.now()
    async with group.node.transaction() as session:
        facts = remote.RemoteActorFacts(
            iri="https://peer.example/users/eve", username="eve", domain="peer.example",
            display_name="Eve", summary="", inbox="https://peer.example/users/eve/inbox",
            shared_inbox=None, profile_url=None,
        )  # fmt: skip
        eve = await remote.upsert_remote_member(session, facts, now)
        owner = await members.find_member(session, "olga")
        assert owner is not None
        view = await groups.view_group(session, "t1d", Viewer(owner.id))
        await moderation.ban(session, view, eve, reason="Spam", days=1, now=now)
        group_row = view.group

    async def follow(activity: str) -> Any:
        raw = {"id": activity, "type": "Follow", "actor": facts.iri}
        async with group.node.transaction() as session:
            return await remote.accept_remote_follow(
                session, group_row, eve, received_origin(session, raw), group.clock.now()
            )

    # When she follows again during the ban, she is refused
    with pytest.raises(Forbidden):
        await follow("https://peer.example/follows/1")
    # And once it has ended, she is a member again
    group.clock.advance(timedelta(days=1))
    assert (await follow("https://peer.example/follows/2")).state == "active"


async def test_reports_past_the_members_limit_answer_429_with_the_wait(
    make_node: Any, aiohttp_client: Any
) -> None:
    """The report pages pass the node's configured limit: past it, a page with the wait,
    and nothing more filed."""
    limited = Limits(rates=RateLimits(reports_per_member=Rate(1, timedelta(hours=1))))
    node = await make_node("limited", clock=ManualClock(), limits=limited)
    server = TestServer(create_app(node))
    await server.start_server()
    people = {}
    for name in ("olga", "bob", "carla"):
        people[name] = Browser(await aiohttp_client(server))
        await people[name].register(name, display_name=name.title())
    carla = people["carla"]
    assert (await carla.get("/u/olga/report")).status == 200
    filed = await carla.post("/u/olga/report", {"category": "spam", "comment": ""})
    assert filed.status == 200, filed.text[:400]
    await carla.get("/u/bob/report")
    refused = await carla.post("/u/bob/report", {"category": "spam", "comment": ""})
    assert refused.status == 429, refused.text[:400]
    assert "try again" in refused.text
    assert await scalar(node, select(func.count()).select_from(Report)) == 1
