"""The admins' dashboard (/admin) and a group's (/g/{slug}/dashboard): exact weekly figures
over twelve weeks seeded by the injected clock, small counts never shown, access as private."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from node import community_figures, groups, members, membership, moderation, posts
from node.community_figures import Series, Unit
from node.ids import ADMIN_DASHBOARD_PAGE, group_dashboard_path, new_object_id
from node.policy import Viewer, viewer_for
from node.runtime import NodeContext
from node.storage.models import Member, Post, Report
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.clock import ManualClock
from tests.conftest import BrowserFactory, NodeFactory
from web.charts import bar_chart

T0 = datetime(2026, 9, 7, 12, 0, tzinfo=UTC)  # the start of the first of the twelve weeks
WEEK = timedelta(days=7)
NOW = T0 + 12 * WEEK
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass
class Seeded:
    people: dict[str, Member]
    heart: str  # slugs
    lungs: str
    hidden: str  # a private group


def at(week: int, offset: timedelta = timedelta()) -> datetime:
    return T0 + week * WEEK + offset


@pytest.fixture
async def web_node(make_node: NodeFactory) -> NodeContext:
    return await make_node(clock=ManualClock(T0 - timedelta(days=60)))


def move_to(node: NodeContext, moment: datetime) -> datetime:
    clock = node.clock
    assert isinstance(clock, ManualClock) and moment >= clock.now()
    clock.advance(moment - clock.now())
    return moment


async def seed(node: NodeContext) -> Seeded:
    """Given, week by week (week 0 is the oldest of the twelve, 11 the past seven days):
    4 accounts and 3 groups long before; 12 new members in week 3, 4 in week 9; threads in
    weeks 5, 7 (the other group) and 10; replies, helpful marks and reports as commented."""
    limits = node.settings.limits
    people: dict[str, Member] = {}

    async def person(
        session: AsyncSession, username: str, now: datetime, admin: bool = False
    ) -> None:
        people[username] = await members.create_member(
            session, node.passwords, limits, username=username, password=DEFAULT_PASSWORD,
            display_name=username.title(), now=now, is_admin=admin,
        )  # fmt: skip

    async def join(session: AsyncSession, slug: str, username: str, now: datetime) -> None:
        view = await groups.view_group(session, slug, Viewer())
        await membership.put_membership(
            session, None, view.group.id, people[username].id, "active", now
        )

    def viewer(username: str) -> Viewer:
        return viewer_for(people[username].id, people[username].role)

    async def thread(session: AsyncSession, slug: str, username: str, now: datetime) -> str:
        view = await groups.view_group(session, slug, viewer(username))
        started = await posts.start_thread(
            session, limits, view, title=f"Thread by {username}", draft=posts.Draft("Hello"),
            now=now,
        )  # fmt: skip
        return started.id

    async def reply(session: AsyncSession, thread_id: str, username: str, now: datetime) -> str:
        post = await posts.reply(
            session, limits, viewer(username), thread_id=thread_id, parent_id=None,
            draft=posts.Draft(f"Reply by {username}"), now=now,
        )  # fmt: skip
        return post.id

    now = node.clock.now()
    async with node.transaction() as session:
        for username in ("admin", "owner", "mod", "outsider"):
            await person(session, username, now, admin=username == "admin")
        heart = await groups.create_group(
            session, limits, owner_id=people["owner"].id, slug="heart", name="Heart", now=now
        )
        lungs = await groups.create_group(
            session, limits, owner_id=people["owner"].id, slug="lungs", name="Lungs", now=now
        )
        hidden = await groups.create_group(
            session, limits, owner_id=people["owner"].id, slug="ignored", name="Hidden",
            private=True, now=now,
        )  # fmt: skip
        await join(session, "heart", "mod", now)
    async with node.transaction() as session:
        owner_view = await groups.view_group(session, "heart", viewer("owner"))
        await membership.set_role(session, owner_view, "mod", "moderator", now)
        # The outsider belongs to the private group, without moderating it.
        await membership.put_membership(
            session, None, hidden.id, people["outsider"].id, "active", now
        )

    async with node.transaction() as session:  # week 3: twelve new members join heart
        now = move_to(node, at(3, HOUR))
        for index in range(12):
            await person(session, f"p{index}", now)
            await join(session, "heart", f"p{index}", now)
    async with node.transaction() as session:  # week 5: threads A and B, 4 replies
        a = await thread(session, "heart", "owner", move_to(node, at(5)))
        await reply(session, a, "owner", move_to(node, at(5, HOUR)))  # the author's own
        await reply(session, a, "p0", move_to(node, at(5, 2 * HOUR)))  # first answer: 2 h
        await reply(session, a, "p1", move_to(node, at(5, 5 * HOUR)))
        b = await thread(session, "heart", "owner", move_to(node, at(5, 10 * HOUR)))
        b_reply = await reply(session, b, "p2", move_to(node, at(5, 16 * HOUR)))  # 6 h
    async with node.transaction() as session:  # week 6: a report, resolved in week 8
        now = move_to(node, at(6))
        first_report = await moderation.report_post(
            session, viewer("p5"), post_id=b_reply, category="spam", comment="", now=now
        )
    async with node.transaction() as session:  # week 7: a thread in lungs, answered in 1 h
        await join(session, "lungs", "p3", move_to(node, at(7)))
        d = await thread(session, "lungs", "owner", node.clock.now())
        await reply(session, d, "p3", move_to(node, at(7, HOUR)))
    async with node.transaction() as session:
        await session.execute(
            update(Report)
            .where(Report.id == first_report.id)
            .values(state="resolved", resolved_at=move_to(node, at(8, HOUR)))
        )
    async with node.transaction() as session:  # week 9: four new members
        now = move_to(node, at(9, HOUR))
        for index in range(4):
            await person(session, f"q{index}", now)
            await join(session, "heart", f"q{index}", now)
    async with node.transaction() as session:  # week 10: thread C, 13 replies, 5 marks
        c = await thread(session, "heart", "mod", move_to(node, at(10, HOUR)))
        answer = await reply(session, c, "q0", move_to(node, at(10, 4 * HOUR)))  # 3 h
        move_to(node, at(10, 5 * HOUR))
        p0_reply = ""
        for index in range(12):
            written = await reply(session, c, f"p{index}", node.clock.now())
            p0_reply = p0_reply or written
        move_to(node, at(10, 20 * HOUR))
        for index in range(5):
            await posts.set_helpful(
                session, viewer(f"p{index}"), post_id=answer, helpful=True, now=node.clock.now()
            )
    async with node.transaction() as session:  # week 11: two reports, still open
        for post_id, reporter, when in ((answer, "p6", at(11)), (p0_reply, "p7", at(11, DAY))):
            await moderation.report_post(
                session, viewer(reporter), post_id=post_id, category="other", comment="",
                now=move_to(node, when),
            )  # fmt: skip
    return Seeded(people, heart.slug, lungs.slug, hidden.slug)


def counts(*pairs: tuple[int, float], default: float = 0) -> list[float | None]:
    values: list[float | None] = [default] * 12
    for week, value in pairs:
        values[week] = value
    return values


def spans(*pairs: tuple[int, timedelta]) -> list[float | None]:
    values: list[float | None] = [None] * 12
    for week, value in pairs:
        values[week] = value.total_seconds()
    return values


REPORTS = {
    "open_reports": counts((6, 1), (7, 1), (11, 2)),
    "oldest_report": spans((6, 7 * DAY), (7, 14 * DAY), (11, 7 * DAY)),
    # At the end: one report a week old, one six days old.
    "median_report": spans((6, 7 * DAY), (7, 14 * DAY), (11, timedelta(days=6.5))),
}
NODE_FIGURES = {
    "members": [4.0] * 3 + [16.0] * 6 + [20.0] * 3,
    # In the past week: the twelve who registered in week 3; owner, p0-p2 (week 5); owner and
    # p3 (week 7); the four of week 9; mod, q0 and p0-p11 (week 10); the admin signing in.
    "active_week": counts((3, 12), (5, 4), (7, 2), (9, 4), (10, 14), (11, 1)),
    "active_month": [0, 0, 0, 12, 12, 13, 13, 5, 5, 6, 18, 18],
    "new_members": counts((3, 12), (9, 4)),
    "threads": counts((5, 2), (7, 1), (10, 1)),
    "replies": counts((5, 4), (7, 1), (10, 13)),
    "helpful": counts((10, 5)),
    "first_reply": spans((5, 4 * HOUR), (7, HOUR), (10, 3 * HOUR)),
    **REPORTS,
    "remote_posts": counts(),
}
GROUP_FIGURES = {
    "members": [2.0] * 3 + [14.0] * 6 + [18.0] * 3,
    "active_week": counts((5, 4), (10, 14)),
    "active_month": [0, 0, 0, 0, 0, 4, 4, 4, 4, 0, 14, 14],
    "new_members": counts((3, 12), (9, 4)),
    "threads": counts((5, 2), (10, 1)),
    "replies": counts((5, 4), (10, 13)),
    "helpful": counts((10, 5)),
    "first_reply": spans((5, 4 * HOUR), (10, 3 * HOUR)),
    **REPORTS,
}


async def signed_in_at_now(node: NodeContext, browser: Browser, username: str) -> None:
    """Sign in a minute before NOW (activity at NOW itself falls after the last week)."""
    move_to(node, NOW - timedelta(minutes=1))
    await browser.login(username)
    move_to(node, NOW)


async def test_every_figure_of_the_node_and_of_a_group_is_exact_week_by_week(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    await signed_in_at_now(web_node, await browser_factory(), "admin")  # week 11's activity
    async with web_node.transaction(reading=True) as session:
        admin = viewer_for(seeded.people["admin"].id, "admin")
        node_figures = await community_figures.node_figures(session, admin, NOW)
        view = await groups.view_group(session, seeded.heart, admin)
        group_figures = await community_figures.group_figures(session, view, NOW)
    assert node_figures.weeks[0].start == T0 and node_figures.weeks[-1].end == NOW
    assert {s.key: s.values for s in node_figures.series} == NODE_FIGURES
    assert {s.key: s.values for s in group_figures.series} == GROUP_FIGURES


class _Figure(HTMLParser):
    """What a person or a screen reader gets from one figure's HTML: its text and every
    attribute that is read out or shown, without dates (<time>) or drawing coordinates."""

    SHOWN = frozenset({"aria-label", "title", "alt", "value", "content"})

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []
        self._in_time = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_time += tag == "time"
        self.read += [value or "" for name, value in attrs if name in self.SHOWN]
        self.read += [value or "" for name, value in attrs if name.startswith("data-")]

    def handle_endtag(self, tag: str) -> None:
        self._in_time -= tag == "time"

    def handle_data(self, data: str) -> None:
        if not self._in_time:
            self.read.append(data)


def figure_html(page: Page, key: str) -> str:
    match = re.search(rf'<section class="figure" id="figure-{key}".*?</section>', page.html, re.S)
    assert match, f"no figure {key} on {page.path}"
    return match.group(0)


def read_out(html: str) -> str:
    parser = _Figure()
    parser.feed(html)
    return " ".join(parser.read)


SMALL_NUMBER = re.compile(r"(?<![\d.,])[1-9](?![\d.,])")


def assert_no_small_count(page: Page, key: str) -> str:
    """No number from 1 to 9 anywhere a person could read in this figure."""
    words = read_out(figure_html(page, key))
    assert not SMALL_NUMBER.search(words), f"{key}: {words}"
    return words


async def test_pages_show_small_counts_only_as_fewer_than_ten(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    admin = await browser_factory()
    await signed_in_at_now(web_node, admin, "admin")
    page = await admin.get(ADMIN_DASHBOARD_PAGE)
    assert page.status == 200
    # Figures whose every non-zero week is 1 to 9, now or before: never a digit from 1 to 9.
    for key in ("threads", "helpful", "open-reports"):
        assert "fewer than 10" in assert_no_small_count(page, key)
    # Exact from 10 up, "fewer than 10" below, 0 as 0 (and no week's size drawn).
    replies = assert_no_small_count(page, "replies")
    assert "13" in replies and "fewer than 10" in replies and " 0 " in f" {replies} "
    assert "12" in assert_no_small_count(page, "new-members")
    active = assert_no_small_count(page, "active-week")  # the admin alone this week
    assert "fewer than 10 now" in re.sub(r"\s+", " ", active)
    assert "20" in assert_no_small_count(page, "members")
    # Durations are not counts: the median time to a first reply is shown as it is.
    assert "3 hours" in read_out(figure_html(page, "first-reply"))
    assert "6 days 12 hours" in read_out(figure_html(page, "median-report"))
    # The federation summary: nothing waits, nothing failed, nothing paused.
    assert "Deliveries waiting to be sent: 0" in page.text
    for key in ("threads", "replies", "members"):  # charts are accessible images
        assert re.search(r'<svg [^>]*role="img"[^>]*aria-labelledby=', figure_html(page, key))

    moderator = await browser_factory()
    await moderator.login("mod")
    page = await moderator.get(group_dashboard_path(seeded.heart))
    assert page.status == 200 and "Heart" in page.text
    for key in ("threads", "helpful", "open-reports", "active-week"):
        assert_no_small_count(page, key)
    assert "13" in read_out(figure_html(page, "replies"))
    assert "18" in read_out(figure_html(page, "members"))
    assert "figure-remote-posts" not in page.html and "Other servers" not in page.text


def values(figures: community_figures.Figures, key: str) -> list[float | None]:
    return next(series.values for series in figures.series if series.key == key)


def series(values: list[float | None], unit: Unit = Unit.COUNT) -> Series:
    return Series("replies", "Replies", "", unit, values)


def test_a_small_count_draws_the_same_band_whatever_its_size() -> None:
    three = bar_chart(series(counts((2, 3), (5, 40), (7, 1))), "c")
    seven = bar_chart(series(counts((2, 7), (5, 40), (7, 9))), "c")
    assert three == seven
    assert three != bar_chart(series(counts((2, 0), (5, 40), (7, 9))), "c")  # 0 is no band
    # The scale is set by the counts shown exactly, never by a small one.
    alone = bar_chart(series(counts((2, 3))), "c")
    assert alone == bar_chart(series(counts((2, 8))), "c")
    assert not SMALL_NUMBER.search(read_out(str(alone)))
    assert "stroke-dasharray" in alone  # drawn distinctly from exact bars, not by colour alone


async def test_only_admins_see_the_node_dashboard_and_others_get_a_missing_page(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    anonymous = await browser_factory()
    missing = await anonymous.get("/admin/no-such-page")
    page = await anonymous.get(ADMIN_DASHBOARD_PAGE)
    assert (page.status, page.text) == (missing.status, missing.text) == (404, missing.text)
    for username in ("mod", "owner", "p0"):
        browser = await browser_factory()
        await browser.login(username)
        missing = await browser.get("/admin/no-such-page")
        page = await browser.get(ADMIN_DASHBOARD_PAGE)
        assert page.status == missing.status == 404
        assert page.text == missing.text


async def test_a_group_dashboard_is_for_its_moderators_and_missing_for_everyone_else(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    for username in ("owner", "mod", "admin"):
        browser = await browser_factory()
        await browser.login(username)
        page = await browser.get(group_dashboard_path(seeded.heart))
        assert page.status == 200, username
        assert "Median time to a first reply" in page.text
    # Members who do not moderate, people of other groups, and strangers signed in or not:
    # the same answer as a group that does not exist, for public and private groups alike.
    anonymous = await browser_factory()
    cases: list[tuple[Browser, str]] = [(anonymous, seeded.heart), (anonymous, seeded.hidden)]
    for username, slug in (("p0", seeded.heart), ("outsider", seeded.hidden),
                           ("outsider", seeded.heart), ("p0", seeded.hidden),
                           ("mod", seeded.lungs), ("mod", seeded.hidden)):  # fmt: skip
        browser = await browser_factory()
        await browser.login(username)
        cases.append((browser, slug))
    for browser, slug in cases:
        missing = await browser.get(group_dashboard_path("nosuchgroup"))
        page = await browser.get(group_dashboard_path(slug))
        assert missing.status == page.status == 404, slug
        assert page.text == missing.text


async def test_held_replies_wait_and_people_of_other_servers_count_in_their_group(
    web_node: NodeContext,
) -> None:
    """A reply still held for review is no first reply; a reply from another server is,
    and its author is active in the group (not on the node, which counts its own accounts)."""
    node, limits = web_node, web_node.settings.limits
    now = node.clock.now()
    async with node.transaction() as session:
        made = [
            await members.create_member(
                session, node.passwords, limits, username=name, password=DEFAULT_PASSWORD,
                display_name=name.title(), now=now, is_admin=name == "owner",
            )
            for name in ("owner", "helper")
        ]  # fmt: skip
        owner, helper = made
        heart = await groups.create_group(
            session, limits, owner_id=owner.id, slug="heart", name="Heart", now=now
        )
        await membership.put_membership(session, None, heart.id, helper.id, "active", now)
        remote = Member(
            username="rita", domain="remote.example", actor_iri="https://remote.example/u/rita",
            display_name="Rita", password_hash="", created_at=now, last_active_at=now,
        )  # fmt: skip
        session.add(remote)
    async with node.transaction() as session:
        view = await groups.view_group(session, "heart", viewer_for(owner.id, owner.role))
        started = await posts.start_thread(
            session, limits, view, title="Sleep", draft=posts.Draft("How?"),
            now=move_to(node, at(10)),
        )  # fmt: skip
        held = await posts.reply(
            session, limits, viewer_for(helper.id, helper.role), thread_id=started.id,
            parent_id=None, draft=posts.Draft("Tea"), now=move_to(node, at(10, HOUR)),
        )  # fmt: skip
        held.held_at = node.clock.now()
        opening = await posts.first_post(session, started.id)
        session.add(
            Post(
                id=new_object_id(), thread_id=started.id, parent_id=opening.id,
                author_id=remote.id, source="Walks", content_html="<p>Walks</p>",
                created_at=move_to(node, at(10, 5 * HOUR)),
            )
        )  # fmt: skip
    async with node.transaction(reading=True) as session:
        admin = viewer_for(owner.id, owner.role)
        on_node = await community_figures.node_figures(session, admin, NOW)
        view = await groups.view_group(session, "heart", admin)
        in_group = await community_figures.group_figures(session, view, NOW)
    for figures in (on_node, in_group):
        assert values(figures, "first_reply") == spans((10, 5 * HOUR))
        assert values(figures, "replies") == counts((10, 2))  # held or not, both were written
    assert values(on_node, "remote_posts") == counts((10, 1))
    assert values(on_node, "active_week") == counts((10, 2))  # owner and helper
    assert values(in_group, "active_week") == counts((10, 3))  # and Rita
