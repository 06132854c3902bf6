"""Moderators' and admins' work lists are paged (node/paging.py), never cut short: the posts
held for approval, a group's report queue, the node's report queue, and a member's own
reports. Each is walked through the real app by its "next" links to the end, on a real
migrated database.

Rows are seeded through the domain (reports with file_report), or straight into the database
where the forms would only test the rate limits (held posts, as tests/test_feed.py seeds
threads); everything a person looks at goes through HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select

from federation.health import FAILED_KEYS
from node import groups, members, membership
from node.config import RateLimits
from node.ids import MAX_ROW_ID, new_object_id
from node.moderation import MY_REPORT_KEYS, QUEUE_KEYS, REPORTS_SHOWN_PER_TARGET
from node.paging import PAGE_SIZE, KeyKind
from node.policy import Viewer
from node.posts import HELD_KEYS
from node.reports import ReportCategory, file_report
from node.runtime import NodeContext
from node.storage.models import InboxItem, Post, Thread
from node.storage.states import InboxItemState
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.conftest import BrowserFactory
from tests.test_feed import add_threads, group_of, link, person, signed_in

SECOND = timedelta(seconds=1)
FLAG_LINE = re.compile(r"<li>([^<,]+), by the server flags\.example, ")
NO_REPORT_LIMIT = RateLimits(reports_per_member=None)
OVER_RANGE: dict[KeyKind, str] = {"number": str(MAX_ROW_ID + 1), "moment": "1", "id": "a"}
BAD_CURSORS = ("?before=zzz", "?after=1", "?before=1.1.1&after=1.1.1", "?before=" + "9" * 70)
QUEUE_ENTRY = re.compile(r'href="/reports/(\d+)\?back=')
HELD_POST = re.compile(r'<li id="held-([0-9a-z]+)">')
MY_REPORT = re.compile(r'You reported <a href="/p/([0-9a-z]+)">')
FAILED_ITEM = re.compile(r'action="/admin/federation/inbox/(\d+)/retry"')


async def walk(
    browser: Browser, path: str, earlier: str, later: str, item: re.Pattern[str]
) -> list[str]:
    """Every item of a paged list, following its `later` links from the first page; checks
    each page's links on the way (the last page has no `later` one, and its `earlier` one
    leads back to the page before it)."""
    page = await browser.get(path)
    assert page.status == 200
    assert link(page, earlier) is None
    pages: list[list[str]] = [item.findall(page.html)]
    while (after := link(page, later)) is not None:
        assert page.html.count('<nav class="pages" aria-label="') == 1  # the one page_links
        page = await browser.get(path + after)
        assert page.status == 200
        assert len(pages[-1]) == PAGE_SIZE
        pages.append(item.findall(page.html))
    assert len(pages) > 2, "the seed fills more than two pages"
    before = link(page, earlier)
    assert before is not None
    assert item.findall((await browser.get(path + before)).html) == pages[-2]
    return [found for items in pages for found in items]


async def assert_bad_cursors_refused(
    browser: Browser, path: str, keys: tuple[KeyKind, ...] = ()
) -> None:
    """Malformed cursors, and one whose numbers are past the integer columns they are
    compared with (asyncpg would refuse to send it: a 500 on PostgreSQL before)."""
    past_the_columns = ".".join(OVER_RANGE[kind] for kind in keys)
    for query in (*BAD_CURSORS, *([f"?before={past_the_columns}"] if "number" in keys else [])):
        page = await browser.get(path + query)
        assert page.status == 400, query
        assert "This page link is not valid" in page.text, query


async def status_of(browser: Browser, path: str) -> int:
    page: Page = await browser.get(path)
    return page.status


@dataclass
class Moderated:
    """A public group olga owns and bob belongs to, and an admin, root."""

    node: NodeContext
    slug: str
    group_id: int
    olga: int
    bob: int


@pytest.fixture
async def moderated(web_node: NodeContext) -> Moderated:
    olga = await person(web_node, "olga")
    bob = await person(web_node, "bob")
    async with web_node.transaction() as session:
        await members.create_member(
            session, web_node.passwords, web_node.settings.limits, username="root",
            password=DEFAULT_PASSWORD, display_name="Root", now=web_node.clock.now(),
            is_admin=True,
        )  # fmt: skip
    slug = await group_of(web_node, olga, "checked")
    async with web_node.transaction() as session:
        view = await groups.view_group(session, slug, Viewer(bob))
        await membership.join(session, view, web_node.clock.now())
        group_id = view.group.id
    return Moderated(web_node, slug, group_id, olga, bob)


async def opening_posts(node: NodeContext, thread_ids: list[str]) -> list[str]:
    """The opening post of each thread, in the order of `thread_ids`."""
    async with node.transaction(reading=True) as session:
        rows = await session.execute(
            select(Post.thread_id, Post.id).where(Post.thread_id.in_(thread_ids))
        )
        by_thread = {thread_id: post_id for thread_id, post_id in rows.all()}
    return [by_thread[thread_id] for thread_id in thread_ids]


async def test_held_posts_page_oldest_first_to_the_end(
    moderated: Moderated, browser_factory: BrowserFactory
) -> None:
    # Given a thread with 2 pages and a bit of replies held for approval, three to a moment
    node, start = moderated.node, moderated.node.clock.now()
    made: list[tuple[datetime, str]] = []
    async with node.transaction() as session:
        thread = Thread(
            id=new_object_id(), group_id=moderated.group_id, title="Waiting room",
            author_id=moderated.bob, created_at=start, last_activity_at=start,
        )  # fmt: skip
        session.add(thread)
        await session.flush()
        for number in range(2 * PAGE_SIZE + 7):
            held_at = start + SECOND * (number // 3)
            post = Post(
                id=new_object_id(), thread_id=thread.id, parent_id=None, author_id=moderated.bob,
                source=f"Held {number}", content_html=f"<p>Held {number}</p>",
                content_warning="", created_at=held_at, anonymous=False, held_at=held_at,
            )  # fmt: skip
            session.add(post)
            made.append((held_at, post.id))
    olga = await signed_in(browser_factory, "olga")
    path = f"/g/{moderated.slug}/held"

    # When olga follows "More posts" to the end, then every held post was listed once, oldest first
    assert await walk(olga, path, "Earlier posts", "More posts", HELD_POST) == [
        post_id for _, post_id in sorted(made)
    ]
    await assert_bad_cursors_refused(olga, path, HELD_KEYS)

    # And bob, a member, is refused as before, whatever the page link says
    bob = await signed_in(browser_factory, "bob")
    assert await status_of(bob, path) == 403
    assert await status_of(bob, path + BAD_CURSORS[0]) == 403


async def test_report_queues_page_crisis_first_then_longest_waiting(
    moderated: Moderated, browser_factory: BrowserFactory
) -> None:
    # Given 2 pages and a bit of reported posts, a few of them reported as a crisis, some
    # reported twice (the second time, for some, as a crisis: that moves them up)
    node, start = moderated.node, moderated.node.clock.now()
    threads = await add_threads(node, moderated.slug, moderated.bob, 2 * PAGE_SIZE + 5, start)
    reported = await opening_posts(node, threads)
    # Each target's place in the queue: (crisis first, first reported, first report's id)
    group_targets: dict[str, tuple[int, datetime, int]] = {}
    node_targets: dict[str, tuple[int, datetime, int]] = {}
    someone = [await person(node, f"someone{number}") for number in range(6)]
    async with node.transaction() as session:
        for number, post_id in enumerate(reported):
            crisis = number % 7 == 0
            at = start + SECOND * (number // 3)
            first = await file_report(
                session, category=ReportCategory.CRISIS if crisis else ReportCategory.SPAM,
                now=at, group_id=moderated.group_id, post_id=post_id, member_id=moderated.bob,
            )  # fmt: skip
            group_targets[post_id] = (0 if crisis else 1, at, first.id)
        for number, post_id in enumerate(reported):
            if number % 5 == 0:
                later_crisis = number % 10 == 5
                await file_report(
                    session,
                    category=ReportCategory.CRISIS if later_crisis else ReportCategory.HARASSMENT,
                    now=start + timedelta(hours=1), group_id=moderated.group_id, post_id=post_id,
                    member_id=moderated.bob,
                )  # fmt: skip
                if later_crisis:
                    _, at, first_id = group_targets[post_id]
                    group_targets[post_id] = (0, at, first_id)
        # And members reported to the admins, reported between the posts
        node_targets |= group_targets
        for number, member_id in enumerate(someone):
            at = start + SECOND * (number * 7) + SECOND / 2
            first = await file_report(
                session, category=ReportCategory.HARASSMENT, now=at, group_id=None,
                member_id=member_id, reporter_id=moderated.olga, rates=NO_REPORT_LIMIT,
            )  # fmt: skip
            node_targets[f"member {member_id}"] = (1, at, first.id)

    def in_queue_order(targets: dict[str, tuple[int, datetime, int]]) -> list[str]:
        return [str(first_id) for _, _, first_id in sorted(targets.values())]

    # When olga walks her group's queue, then every reported post is there once, in order
    olga = await signed_in(browser_factory, "olga")
    path = f"/g/{moderated.slug}/reports"
    seen = await walk(olga, path, "Earlier reports", "More reports", QUEUE_ENTRY)
    assert seen == in_queue_order(group_targets)
    await assert_bad_cursors_refused(olga, path, QUEUE_KEYS)

    # And when root walks the node's queue, every post and member reported is there once
    root = await signed_in(browser_factory, "root")
    seen = await walk(root, "/admin/reports", "Earlier reports", "More reports", QUEUE_ENTRY)
    assert seen == in_queue_order(node_targets)
    await assert_bad_cursors_refused(root, "/admin/reports", QUEUE_KEYS)

    # And the answers to everyone else are the same as before, whatever the page link says
    bob = await signed_in(browser_factory, "bob")
    for query in ("", BAD_CURSORS[0]):
        assert await status_of(bob, path + query) == 403
        assert await status_of(bob, f"/g/{moderated.slug}/moderation/log" + query) == 403
        assert await status_of(bob, "/admin/reports" + query) == 404
        assert await status_of(olga, "/admin/reports" + query) == 404


async def test_own_reports_page_newest_first_to_the_end(
    moderated: Moderated, browser_factory: BrowserFactory
) -> None:
    # Given bob reported 2 pages and a bit of posts, three to a moment
    node, start = moderated.node, moderated.node.clock.now()
    threads = await add_threads(node, moderated.slug, moderated.olga, 2 * PAGE_SIZE + 3, start)
    filed: list[tuple[datetime, int, str]] = []
    async with node.transaction() as session:
        for number, post_id in enumerate(await opening_posts(node, threads)):
            at = start + SECOND * (number // 3)
            report = await file_report(
                session, category=ReportCategory.SPAM, now=at, group_id=moderated.group_id,
                post_id=post_id, member_id=moderated.olga, reporter_id=moderated.bob,
                rates=NO_REPORT_LIMIT,
            )  # fmt: skip
            filed.append((at, report.id, post_id))
    bob = await signed_in(browser_factory, "bob")

    # When bob follows "Older reports" to the end, then he sees each once, newest first
    seen = await walk(bob, "/reports/mine", "Newer reports", "Older reports", MY_REPORT)
    assert seen == [post_id for _, _, post_id in sorted(filed, reverse=True)]
    await assert_bad_cursors_refused(bob, "/reports/mine", MY_REPORT_KEYS)

    # And olga's own list is still empty, and a visitor signed out is sent to sign in
    olga = await signed_in(browser_factory, "olga")
    assert "You have not reported anything." in (await olga.get("/reports/mine")).text
    visitor = await browser_factory()
    assert (await visitor.get("/reports/mine")).path.startswith("/login")


async def test_failed_incoming_activities_page_newest_first_to_the_end(
    moderated: Moderated, browser_factory: BrowserFactory
) -> None:
    # Given exactly three pages of incoming activities that failed, three to a moment, among
    # others that did not (the last page full: no empty page after it)
    node, start = moderated.node, moderated.node.clock.now()
    rows = [
        {
            "activity_id": f"https://peer.example/activities/{number}",
            "actor_iri": "https://peer.example/users/eve",
            "body": "{}",
            "state": InboxItemState.FAILED if number % 4 else InboxItemState.DONE,
            "attempts": 1,
            "next_attempt_at": start,
            "received_at": start + SECOND * (number // 3),
            "error": "refused",
        }
        for number in range(4 * PAGE_SIZE)
    ]
    async with node.transaction() as session:
        await session.execute(insert(InboxItem), rows)
        found = await session.execute(
            select(InboxItem.received_at, InboxItem.id).where(
                InboxItem.state == InboxItemState.FAILED
            )
        )
        failed = sorted(((at, item_id) for at, item_id in found.all()), reverse=True)
    root = await signed_in(browser_factory, "root")

    # When root follows "Older failures" to the end, then each failed one is listed once
    seen = await walk(root, "/admin/federation", "Newer failures", "Older failures", FAILED_ITEM)
    assert seen == [str(item_id) for _, item_id in failed]
    await assert_bad_cursors_refused(root, "/admin/federation", FAILED_KEYS)

    # And the page is still nobody else's business, whatever the page link says
    olga = await signed_in(browser_factory, "olga")
    for query in ("", BAD_CURSORS[0]):
        assert await status_of(olga, "/admin/federation" + query) == 404


async def test_a_post_flagged_many_times_shows_a_bounded_number_of_its_reports(
    moderated: Moderated, browser_factory: BrowserFactory
) -> None:
    # Given one post flagged 60 times by another server, the 55th time as a crisis
    node, start = moderated.node, moderated.node.clock.now()
    [thread] = await add_threads(node, moderated.slug, moderated.bob, 1, start)
    [post_id] = await opening_posts(node, [thread])
    flags = 60
    async with node.transaction() as session:
        for number in range(flags):
            report = await file_report(
                session,
                category=ReportCategory.CRISIS if number == 54 else ReportCategory.SPAM,
                now=start + SECOND * number, group_id=moderated.group_id, post_id=post_id,
                member_id=moderated.bob, origin_domain="flags.example",
                flag_activity_id=f"https://flags.example/flag/{number}",
            )  # fmt: skip
            if number == 0:
                first_id = report.id
    shown, more = REPORTS_SHOWN_PER_TARGET, flags - REPORTS_SHOWN_PER_TARGET
    olga = await signed_in(browser_factory, "olga")

    # When olga opens her queue, then the post counts all 60 reports but lists 50, the crisis
    # among them (and the entry marked as one), and says how many more there are
    queue = await olga.get(f"/g/{moderated.slug}/reports")
    assert queue.status == 200
    assert f"· {flags} reports: Self-harm or crisis, Spam" in queue.text
    assert 'class="queue-entry crisis"' in queue.html
    assert len(FLAG_LINE.findall(queue.html)) == shown
    assert FLAG_LINE.findall(queue.html).count("Self-harm or crisis") == 1
    assert f"and {more} more, not shown here" in queue.text

    # And the review page lists as many, and says acting on one closes them all
    review = await olga.get(f"/reports/{first_id}")
    assert review.status == 200
    assert len(FLAG_LINE.findall(review.html)) == shown
    assert f"and {more} more open reports of it, not shown here" in review.text
