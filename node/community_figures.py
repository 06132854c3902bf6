"""How a community is doing, week by week: the figures of the admins' and moderators' dashboards.

Twelve weeks are counted back from the injected clock's `now`: week 11 is the seven days up to
now, week 0 the seven days that ended eleven weeks before. Each figure is one set-based
statement over those weeks, written to run the same on SQLite and PostgreSQL: week boundaries
are computed here in Python and compared as plain timestamps (`SUM(CASE ...)` per week), or the
few timestamps of a bounded window are fetched and bucketed here (medians).

Counts are exact here; what pages may show of a small count is the web layer's business
(docs/POLICY.md, "Dashboards": 1 to 9 reads "fewer than 10").

"Active" is what the database records of a person doing something (docs/OPERATIONS.md):
- on the node: a local, not erased account that wrote a post (thread or reply), marked a post
  helpful, signed in (a session started), or used a session (its `last_seen_at`, and the
  account's `last_active_at`, kept at a few minutes' granularity). Only the latest use of a
  session and of an account is kept, so older weeks count sign-ins and posts only, and ended
  sessions leave nothing: the history undercounts, the latest week does not.
- in a group: anyone, local or remote, who wrote a post or marked a post helpful in it (use of
  a session is not tied to a group).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    and_,
    case,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import NotFound
from node.groups import GROUP_NOT_FOUND, GroupView
from node.policy import Action, Viewer
from node.posts import HELPFUL
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Member,
    Membership,
    Post,
    Reaction,
    Report,
    Thread,
    WebSession,
)

WEEKS = 12
WEEK = timedelta(days=7)
MONTH = timedelta(days=30)


@dataclass(frozen=True)
class Week:
    start: datetime  # inclusive
    end: datetime  # exclusive; the last week ends at `now`


def weeks_to(now: datetime) -> list[Week]:
    """The twelve seven-day weeks up to `now`, oldest first."""
    return [
        Week(now - (WEEKS - index) * WEEK, now - (WEEKS - 1 - index) * WEEK)
        for index in range(WEEKS)
    ]


class Unit(StrEnum):
    COUNT = "count"  # a number of people or things
    SECONDS = "seconds"  # a duration


AT_WEEK_END = frozenset(
    {"members", "active_week", "active_month", "open_reports", "oldest_report", "median_report"}
)


@dataclass(frozen=True)
class Series:
    """One figure: its value for each of the twelve weeks (None: nothing to measure that
    week, as a median of no threads), and the figure now, which is the last week's."""

    key: str
    label: str
    explanation: str
    unit: Unit
    values: list[float | None]

    @property
    def current(self) -> float | None:
        return self.values[-1]

    @property
    def at_week_end(self) -> bool:
        """A state measured at each week's end (members, open reports), not a week's tally."""
        return self.key in AT_WEEK_END


@dataclass(frozen=True)
class Figures:
    weeks: list[Week]
    series: list[Series]


@dataclass(frozen=True)
class _Scope:
    """What one dashboard counts: the whole node, or one group."""

    group_id: int | None

    def threads(self) -> ColumnElement[bool]:
        """A condition on `Thread` (joined to `ConditionGroup`): threads of the scope."""
        if self.group_id is None:
            return ConditionGroup.domain == LOCAL
        return Thread.group_id == self.group_id

    def in_threads(self, statement: Select[Any]) -> Select[Any]:
        statement = statement.join(Thread, Thread.id == Post.thread_id)
        if self.group_id is None:
            statement = statement.join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        return statement.where(self.threads())


def _sums(
    per_week: Sequence[ColumnElement[bool]],
) -> list[ColumnElement[int]]:
    """One `SUM(CASE WHEN ... THEN 1 ELSE 0 END)` column per week."""
    return [func.sum(case((condition, 1), else_=0)) for condition in per_week]


async def _one_row(session: AsyncSession, statement: Select[Any]) -> list[float | None]:
    row = (await session.execute(statement)).one()
    return [float(value or 0) for value in row]


async def _members(session: AsyncSession, scope: _Scope, weeks: list[Week]) -> list[float | None]:
    """People who belonged at the end of each week. On the node: local accounts not erased
    by then. In a group: today's members who had joined by then (a membership that ended
    leaves no row, so the past counts only those who stayed)."""
    if scope.group_id is None:
        return await _one_row(
            session,
            select(
                *_sums(
                    [
                        and_(
                            Member.created_at < week.end,
                            or_(Member.erased_at.is_(None), Member.erased_at >= week.end),
                        )
                        for week in weeks
                    ]
                )
            ).where(Member.domain == LOCAL),
        )
    return await _one_row(
        session,
        select(*_sums([Membership.created_at < week.end for week in weeks])).where(
            Membership.group_id == scope.group_id, Membership.state == "active"
        ),
    )


async def _new_members(
    session: AsyncSession, scope: _Scope, weeks: list[Week]
) -> list[float | None]:
    """Accounts made here each week; in a group, today's members who joined that week."""
    if scope.group_id is None:
        when, where = Member.created_at, [Member.domain == LOCAL]
        table: type[Member] | type[Membership] = Member
    else:
        when = Membership.created_at
        where = [Membership.group_id == scope.group_id, Membership.state == "active"]
        table = Membership
    return await _one_row(
        session,
        select(*_sums([and_(when >= week.start, when < week.end) for week in weeks]))
        .select_from(table)
        .where(*where, when >= weeks[0].start),
    )


def _activity(scope: _Scope, since: datetime) -> Subquery:
    """(person, moment) for every recorded act of the scope's people since `since`."""
    wrote = select(Post.author_id.label("who"), Post.created_at.label("at")).where(
        Post.created_at >= since
    )
    marked = (
        select(Reaction.member_id.label("who"), Reaction.created_at.label("at"))
        .join(Post, Post.id == Reaction.post_id)
        .where(Reaction.kind == HELPFUL, Reaction.created_at >= since)
    )
    if scope.group_id is not None:
        return union_all(scope.in_threads(wrote), scope.in_threads(marked)).subquery()
    # On the node: what local members did anywhere, and their sign-ins and sessions.
    signed_in = select(WebSession.member_id.label("who"), WebSession.created_at.label("at")).where(
        WebSession.created_at >= since
    )
    seen = select(WebSession.member_id.label("who"), WebSession.last_seen_at.label("at")).where(
        WebSession.last_seen_at >= since
    )
    used = select(Member.id.label("who"), Member.last_active_at.label("at")).where(
        Member.last_active_at >= since
    )
    acts = union_all(wrote, marked, signed_in, seen, used).subquery()
    return (
        select(acts.c.who, acts.c.at)
        .join(Member, Member.id == acts.c.who)
        .where(Member.domain == LOCAL, Member.erased_at.is_(None))
        .subquery()
    )


async def _active(
    session: AsyncSession, scope: _Scope, weeks: list[Week], window: timedelta
) -> list[float | None]:
    """Distinct people with a recorded act in the `window` before each week's end."""
    acts = _activity(scope, weeks[0].end - window)
    columns = [
        func.count(
            func.distinct(
                case((and_(acts.c.at >= week.end - window, acts.c.at < week.end), acts.c.who))
            )
        )
        for week in weeks
    ]
    return await _one_row(session, select(*columns))


async def _threads(session: AsyncSession, scope: _Scope, weeks: list[Week]) -> list[float | None]:
    statement = select(
        *_sums(
            [and_(Thread.created_at >= week.start, Thread.created_at < week.end) for week in weeks]
        )
    ).select_from(Thread)
    if scope.group_id is None:
        statement = statement.join(ConditionGroup, ConditionGroup.id == Thread.group_id)
    return await _one_row(
        session, statement.where(Thread.created_at >= weeks[0].start, scope.threads())
    )


async def _replies(session: AsyncSession, scope: _Scope, weeks: list[Week]) -> list[float | None]:
    statement = scope.in_threads(
        select(
            *_sums(
                [and_(Post.created_at >= week.start, Post.created_at < week.end) for week in weeks]
            )
        )
        .select_from(Post)
        .where(Post.parent_id.is_not(None), Post.created_at >= weeks[0].start)
    )
    return await _one_row(session, statement)


async def _helpful(session: AsyncSession, scope: _Scope, weeks: list[Week]) -> list[float | None]:
    when = Reaction.created_at
    statement = scope.in_threads(
        select(*_sums([and_(when >= week.start, when < week.end) for week in weeks]))
        .select_from(Reaction)
        .join(Post, Post.id == Reaction.post_id)
        .where(Reaction.kind == HELPFUL, when >= weeks[0].start)
    )
    return await _one_row(session, statement)


def _week_of(weeks: list[Week], moment: datetime) -> int | None:
    for index, week in enumerate(weeks):
        if week.start <= moment < week.end:
            return index
    return None


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


async def _first_reply(
    session: AsyncSession, scope: _Scope, weeks: list[Week]
) -> list[float | None]:
    """For the threads started each week that someone other than their author has answered:
    the median time from the thread to its first such reply (held replies wait)."""
    statement = scope.in_threads(
        select(Thread.created_at, func.min(Post.created_at))
        .select_from(Post)
        .where(
            Post.parent_id.is_not(None),
            Post.author_id != Thread.author_id,
            Post.held_at.is_(None),
            Thread.created_at >= weeks[0].start,
        )
        .group_by(Thread.id, Thread.created_at)
    )
    waits: list[list[float]] = [[] for _ in weeks]
    for started, first in (await session.execute(statement)).all():
        index = _week_of(weeks, started)
        if index is not None:
            waits[index].append(max((first - started).total_seconds(), 0.0))
    return [_median(bucket) for bucket in waits]


async def _open_reports(
    session: AsyncSession, scope: _Scope, weeks: list[Week]
) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """At the end of each week: how many reports were open, and the oldest's and the median
    age of them. Fetched: the reports open at some moment of the twelve weeks."""
    now = weeks[-1].end
    statement = select(Report.created_at, Report.resolved_at, Report.state).where(
        Report.created_at < now,
        or_(Report.state == "open", Report.resolved_at >= weeks[0].end),
    )
    if scope.group_id is not None:
        statement = statement.where(Report.group_id == scope.group_id)
    rows = (await session.execute(statement)).all()
    counts: list[float | None] = []
    oldest: list[float | None] = []
    median: list[float | None] = []
    for week in weeks:
        ages = [
            (week.end - created).total_seconds()
            for created, resolved, state in rows
            if created < week.end
            and (resolved >= week.end if resolved is not None else state == "open")
        ]
        counts.append(float(len(ages)))
        oldest.append(max(ages) if ages else None)
        median.append(_median(ages))
    return counts, oldest, median


async def _remote_posts(session: AsyncSession, weeks: list[Week]) -> list[float | None]:
    """Posts from people on other servers in this node's groups: federation at work."""
    statement = _Scope(None).in_threads(
        select(
            *_sums(
                [and_(Post.created_at >= week.start, Post.created_at < week.end) for week in weeks]
            )
        )
        .select_from(Post)
        .join(Member, Member.id == Post.author_id)
        .where(Member.domain != LOCAL, Post.created_at >= weeks[0].start)
    )
    return await _one_row(session, statement)


async def _figures(session: AsyncSession, scope: _Scope, now: datetime) -> Figures:
    weeks = weeks_to(now)
    where = "on this node" if scope.group_id is None else "in this group"
    count, second = Unit.COUNT, Unit.SECONDS
    reports, oldest, median_age = await _open_reports(session, scope, weeks)
    series = [
        Series("members", "Members", f"People who belong {where}, at the end of each week.",
               count, await _members(session, scope, weeks)),
        Series("active_week", "Active in the past week",
               f"People who did something {where} in the seven days before each week's end.",
               count, await _active(session, scope, weeks, WEEK)),
        Series("active_month", "Active in the past 30 days",
               f"People who did something {where} in the thirty days before each week's end.",
               count, await _active(session, scope, weeks, MONTH)),
        Series("new_members", "New members", f"People who joined {where}, each week.",
               count, await _new_members(session, scope, weeks)),
        Series("threads", "Threads", f"Threads started {where}, each week.",
               count, await _threads(session, scope, weeks)),
        Series("replies", "Replies", f"Replies written {where}, each week.",
               count, await _replies(session, scope, weeks)),
        Series("helpful", "Helpful marks", f"Posts marked helpful {where}, each week.",
               count, await _helpful(session, scope, weeks)),
        Series("first_reply", "Median time to a first reply",
               "For the threads started each week that someone else answered: how long the"
               " first answer took, the middle value.",
               second, await _first_reply(session, scope, weeks)),
        Series("open_reports", "Open reports",
               "Reports waiting for a moderator, at the end of each week.", count, reports),
        Series("oldest_report", "Oldest open report",
               "How long the oldest open report had waited, at the end of each week.",
               second, oldest),
        Series("median_report", "Median age of open reports",
               "How long open reports had waited, the middle value, at the end of each week.",
               second, median_age),
    ]  # fmt: skip
    if scope.group_id is None:
        series.append(
            Series("remote_posts", "Posts from other servers",
                   "Posts and replies written on other servers in this node's groups, each week.",
                   count, await _remote_posts(session, weeks))
        )  # fmt: skip
    return Figures(weeks, series)


async def node_figures(session: AsyncSession, viewer: Viewer, now: datetime) -> Figures:
    """The whole node's figures, for its admins only (anyone else: there is nothing here)."""
    if not viewer.is_admin:
        raise NotFound("There is no such page.")
    return await _figures(session, _Scope(None), now)


async def group_figures(session: AsyncSession, view: GroupView, now: datetime) -> Figures:
    """One of this node's groups' figures, for its moderators and the node's admins; to anyone
    else the group is as missing as one that does not exist."""
    if view.group.domain != LOCAL or not view.may(Action.MODERATE):
        raise NotFound(GROUP_NOT_FOUND)
    return await _figures(session, _Scope(view.group.id), now)
