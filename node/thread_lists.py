"""Lists of threads, a page at a time: a group's threads, and a member's feed.

Both are keyset-paginated (node/paging.py), newest activity first, so a thread started while
someone pages through never shows a thread twice or hides one. Each thread comes with its
reply count, its last post (who wrote it and when) and, for a member of its group, its
unread posts (node/thread_reads.py).

What a viewer sees is decided as everywhere else: node.policy in the query (a private
group's threads only for its members), held threads only for their author and the group's
moderators, and nothing of a server the federation policy refuses. A thread whose opening
post was deleted stays listed only while a reply lives on in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from node.errors import NotFound
from node.groups import GROUP_NOT_FOUND, GroupView
from node.paging import KeyKind, Page, PageRequest, beyond, order, page_of
from node.policy import Action, Viewer, shown_by_federation_policy, visible_in_sql
from node.posts import Byline, byline_of
from node.storage.models import ConditionGroup, Member, Membership, Post, Thread, ThreadRead
from node.thread_reads import MUTE, Unread, unread_in

# The cursor of a group's list: pinned first, then newest activity, then the thread's id.
GROUP_KEYS: tuple[KeyKind, ...] = ("number", "moment", "id")
# The cursor of a feed: newest activity, then the thread's id.
FEED_KEYS: tuple[KeyKind, ...] = ("moment", "id")


@dataclass(frozen=True)
class LastPost:
    """A thread's newest published post: who wrote it (as the viewer's pages name them)
    and when."""

    byline: Byline
    at: datetime


@dataclass(frozen=True)
class ThreadSummary:
    thread: Thread
    group: ConditionGroup
    author: Member
    byline: Byline
    reply_count: int
    last: LastPost | None = None
    unread: Unread | None = None


def _opening_anonymous() -> ColumnElement[bool]:
    """Whether the thread's opening post (whose author is the thread's) is anonymous."""
    return (
        select(Post.anonymous)
        .where(Post.thread_id == Thread.id, Post.parent_id.is_(None))
        .correlate(Thread)
        .scalar_subquery()
    )


def held_threads_shown(view: GroupView | None, member_id: int | None = None) -> ColumnElement[bool]:
    """Threads the viewer sees: one whose opening post is held only if they started it or
    moderate its group (`view` None: a list across groups, where nobody moderates)."""
    if view is not None and view.may(Action.MODERATE):
        return true()
    member_id = view.viewer.member_id if view is not None else member_id
    held = select(Post.thread_id).where(Post.parent_id.is_(None), Post.held_at.is_not(None))
    if member_id is not None:
        held = held.where(Post.author_id != member_id)
    return Thread.id.not_in(held)


def not_deleted_or_answered() -> ColumnElement[bool]:
    """A thread whose opening post was deleted is listed only while a published reply to it
    is not deleted: an empty tombstone says nothing to anyone."""
    opening = aliased(Post)
    reply = aliased(Post)
    deleted_opening = exists().where(
        opening.thread_id == Thread.id,
        opening.parent_id.is_(None),
        opening.deleted_at.is_not(None),
    )
    live_reply = exists().where(
        reply.thread_id == Thread.id,
        reply.parent_id.is_not(None),
        reply.deleted_at.is_(None),
        reply.held_at.is_(None),
    )
    return or_(~deleted_opening, live_reply)


def _pinned() -> ColumnElement[int]:
    return case((Thread.pinned_at.is_(None), 0), else_=1)


async def group_threads(
    session: AsyncSession, view: GroupView, request: PageRequest
) -> Page[ThreadSummary]:
    """A page of a group's threads, pinned ones first, then newest activity first; NotFound
    if the viewer may not read them."""
    if not view.may(Action.READ):
        raise NotFound(GROUP_NOT_FOUND)
    keys = [_pinned(), Thread.last_activity_at, Thread.id]
    statement = (
        select(Thread, Member, _opening_anonymous(), _pinned())
        .join(Member, Member.id == Thread.author_id)
        .where(
            Thread.group_id == view.group.id,
            held_threads_shown(view),
            not_deleted_or_answered(),
            shown_by_federation_policy(Member.federation_hidden),
        )
    )
    rows = await _page_rows(session, statement, keys, request)
    page = page_of(rows, request, lambda row: (row[3], row[0].last_activity_at, row[0].id))
    member_id = view.viewer.member_id if view.standing.active else None
    return await _summaries(
        session,
        view.viewer,
        member_id,
        [(row[0], view.group, row[1], row[2]) for row in page.items],
        page,
    )


async def feed(session: AsyncSession, viewer: Viewer, request: PageRequest) -> Page[ThreadSummary]:
    """A page of the threads in every group the viewer is an active member of, here or on
    another server (a remote group they follow), newest activity first; threads they muted
    are left out."""
    if viewer.member_id is None:
        return Page([], None, None)
    keys = [Thread.last_activity_at, Thread.id]
    statement = (
        select(Thread, Member, _opening_anonymous(), ConditionGroup)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .join(Member, Member.id == Thread.author_id)
        .join(
            Membership,
            and_(
                Membership.group_id == ConditionGroup.id,
                Membership.member_id == viewer.member_id,
            ),
        )
        .outerjoin(
            ThreadRead,
            and_(ThreadRead.thread_id == Thread.id, ThreadRead.member_id == viewer.member_id),
        )
        .where(
            Membership.state == "active",
            visible_in_sql(viewer, Action.READ, ConditionGroup.visibility, Membership.state),
            or_(ThreadRead.subscription.is_(None), ThreadRead.subscription != MUTE),
            held_threads_shown(None, viewer.member_id),
            not_deleted_or_answered(),
            shown_by_federation_policy(Member.federation_hidden, ConditionGroup.federation_hidden),
        )
    )
    rows = await _page_rows(session, statement, keys, request)
    page = page_of(rows, request, lambda row: (row[0].last_activity_at, row[0].id))
    return await _summaries(
        session,
        viewer,
        viewer.member_id,
        [(row[0], row[3], row[1], row[2]) for row in page.items],
        page,
    )


async def _page_rows(
    session: AsyncSession,
    statement: Select,  # type: ignore[type-arg]
    keys: list[ColumnElement[object]],
    request: PageRequest,
) -> list:  # type: ignore[type-arg]
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer))
    rows = await session.execute(
        statement.order_by(*order(keys, request.newer)).limit(request.size + 1)
    )
    return list(rows.all())


async def _summaries(
    session: AsyncSession,
    viewer: Viewer,
    member_id: int | None,
    rows: list[tuple[Thread, ConditionGroup, Member, bool | None]],
    page: Page[object],
) -> Page[ThreadSummary]:
    """The page's threads with their reply counts, last posts and (for `member_id`, a
    member of their groups) unread posts: three queries for the whole page."""
    thread_ids = [thread.id for thread, _, _, _ in rows]
    counts = await _reply_counts(session, thread_ids)
    lasts = await _last_posts(session, thread_ids, viewer)
    unread = await unread_in(session, member_id, thread_ids) if member_id is not None else {}
    items = [
        ThreadSummary(
            thread,
            group,
            author,
            byline_of(bool(anonymous), author, viewer),
            counts.get(thread.id, 0),
            lasts.get(thread.id),
            unread.get(thread.id),
        )
        for thread, group, author, anonymous in rows
    ]
    return Page(items, page.older, page.newer)


async def _reply_counts(session: AsyncSession, thread_ids: list[str]) -> dict[str, int]:
    if not thread_ids:
        return {}
    rows = await session.execute(
        select(Post.thread_id, func.count())
        .where(
            Post.thread_id.in_(thread_ids),
            Post.parent_id.is_not(None),
            Post.held_at.is_(None),
        )
        .group_by(Post.thread_id)
    )
    return {thread_id: int(count) for thread_id, count in rows.all()}


async def _last_posts(
    session: AsyncSession, thread_ids: list[str], viewer: Viewer
) -> dict[str, LastPost]:
    """Each thread's newest published post and its author, in one query."""
    if not thread_ids:
        return {}
    numbered = (
        select(
            Post.thread_id,
            Post.author_id,
            Post.anonymous,
            Post.created_at,
            func.row_number()
            .over(partition_by=Post.thread_id, order_by=(Post.created_at.desc(), Post.id.desc()))
            .label("position"),
        )
        .join(Member, Member.id == Post.author_id)
        .where(
            Post.thread_id.in_(thread_ids),
            Post.held_at.is_(None),
            shown_by_federation_policy(Member.federation_hidden),
        )
        .subquery()
    )
    rows = await session.execute(
        select(numbered.c.thread_id, numbered.c.anonymous, numbered.c.created_at, Member)
        .join(Member, Member.id == numbered.c.author_id)
        .where(numbered.c.position == 1)
    )
    return {
        thread_id: LastPost(byline_of(bool(anonymous), author, viewer), created_at)
        for thread_id, anonymous, created_at, author in rows.all()
    }
