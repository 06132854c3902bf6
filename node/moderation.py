"""The moderation queue: members report posts and people; a group's moderators (and the node's
admins) act on what is reported, each action with a reason that goes in the moderation log;
the reporter is told the outcome in plain words, never who acted.

Who may do what (docs/POLICY.md, "Reports and the moderation queue"):
- any signed-in member reports a post they may read, or a member of this node;
- a group's moderators and owner see and act on the reports of posts in their group, and
  lock, pin, remove and ban there; the node's admins do so everywhere, and alone see reports
  of members and suspend accounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node import membership, posts
from node.config import RateLimits
from node.errors import Conflict, Forbidden, Invalid, NotFound
from node.groups import GroupView, standing_of_row, view_of_row, visible_groups
from node.members import get_member, handle_of
from node.modlog import ModAction, log_action, required_reason
from node.paging import FIRST_PAGE, KeyKind, Page, PageRequest, beyond, order, page_of
from node.policy import Action, Viewer
from node.reports import ReportCategory, ReportState, file_report, parse_category
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Member,
    ModerationLogEntry,
    Post,
    Report,
    Thread,
    WebSession,
)

REPORT_NOT_FOUND = "There is no report at this address."
REPORT_THANKS = (
    "Thank you. The moderators will look at it; you can see what became of it under “My reports”."
)
QUEUE_FORBIDDEN = "Only this group's moderators can see its reports."
LOG_FORBIDDEN = "Only this group's moderators can read its moderation log."
SUSPENDED_MESSAGE = "This account is suspended: it cannot sign in, post, reply or report."
BAN_DAYS_MAX = 3650

CATEGORY_LABELS: dict[str, str] = {
    ReportCategory.MISINFORMATION: "Misinformation",
    ReportCategory.CRISIS: "Self-harm or crisis",
    ReportCategory.HARASSMENT: "Harassment",
    ReportCategory.SPAM: "Spam",
    ReportCategory.PRIVACY: "Privacy",
    ReportCategory.UNDER_AGE: "Under age",
    ReportCategory.OTHER: "Something else",
}

ACTION_LABELS: dict[str, str] = {
    ModAction.DISMISS_REPORT: "dismissed a report",
    ModAction.REMOVE_POST: "removed a post",
    ModAction.LOCK_THREAD: "locked a thread",
    ModAction.UNLOCK_THREAD: "unlocked a thread",
    ModAction.PIN_THREAD: "pinned a thread",
    ModAction.UNPIN_THREAD: "unpinned a thread",
    ModAction.REOPEN_THREAD: "reopened a thread",
    ModAction.WARN_MEMBER: "warned a member",
    ModAction.BAN: "banned a member",
    ModAction.UNBAN: "lifted a ban",
    ModAction.SUSPEND_ACCOUNT: "suspended an account",
    ModAction.UNSUSPEND_ACCOUNT: "lifted a suspension",
    ModAction.REVEAL_AUTHOR: "revealed who wrote an anonymous post",
    ModAction.EXPORT_DATA: "exported a member's data",
    ModAction.PROMOTE_ADMIN: "made a member an admin",
    ModAction.DEMOTE_ADMIN: "ended a member's admin role",
    ModAction.NODE_SETTINGS: "changed the node's settings",
    ModAction.APPROVE_ACCOUNT: "approved a new account",
    ModAction.DECLINE_ACCOUNT: "declined a new account",
    ModAction.VERIFY_PROFESSIONAL: "verified a professional",
    ModAction.UNVERIFY_PROFESSIONAL: "revoked a professional's verification",
    ModAction.TRUST_VERIFIER: "trusted a node's verifications",
    ModAction.DISTRUST_VERIFIER: "stopped trusting a node's verifications",
}


class QueueAction(StrEnum):
    """What a moderator may do about a report."""

    DISMISS = "dismiss"
    REMOVE_POST = "remove_post"
    LOCK_THREAD = "lock_thread"
    WARN_MEMBER = "warn_member"
    BAN = "ban"
    SUSPEND = "suspend"  # admins only


# Actions that cannot be taken back in one click ask for a ticked confirmation as well.
CONFIRMED_ACTIONS = frozenset({QueueAction.REMOVE_POST, QueueAction.BAN, QueueAction.SUSPEND})
CONFIRM_PROBLEM = "Tick the box to confirm: this cannot be undone in one click."

OUTCOMES: dict[QueueAction, str] = {
    QueueAction.DISMISS: "Reviewed: the moderators took no action.",
    QueueAction.REMOVE_POST: "The post was removed.",
    QueueAction.LOCK_THREAD: "The thread was locked to new replies.",
    QueueAction.WARN_MEMBER: "The member was warned.",
    QueueAction.BAN: "The member was banned from the group.",
    QueueAction.SUSPEND: "The member's account was suspended.",
}


def _when(moment: datetime) -> str:
    return moment.strftime("%-d %b %Y, %H:%M UTC")


def parse_ban_days(text: str) -> int | None:
    """A ban's length in whole days; empty: until lifted."""
    text = text.strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= BAN_DAYS_MAX:
        raise Invalid({"days": f"A ban lasts 1 to {BAN_DAYS_MAX} days, or leave it empty."})
    return int(text)


async def _acting_member(session: AsyncSession, viewer: Viewer) -> Member:
    member = await session.get(Member, viewer.member_id) if viewer.member_id else None
    if member is None:
        raise Forbidden("Sign in first.")
    if member.suspended_at is not None:
        raise Forbidden(SUSPENDED_MESSAGE)
    return member


# ------------------------------------------------------------------------- filing reports


async def _open_report_by(
    session: AsyncSession, reporter_id: int, target: ColumnElement[bool]
) -> Report | None:
    found = await session.execute(
        select(Report)
        .where(Report.reporter_id == reporter_id, Report.state == ReportState.OPEN, target)
        .limit(1)
    )
    return found.scalar_one_or_none()


async def report_post(
    session: AsyncSession,
    viewer: Viewer,
    *,
    post_id: str,
    category: str,
    comment: str,
    now: datetime,
    rates: RateLimits | None = None,
) -> Report:
    """A member reports a post they may read. Reporting it again while the first report is
    open changes nothing (no second report, the same thanks)."""
    reporter = await _acting_member(session, viewer)
    found = await posts.post_in_context(session, post_id, viewer)
    if found.post.deleted_at is not None:
        raise Conflict("This post has been deleted already.")
    parsed = parse_category(category)
    existing = await _open_report_by(session, reporter.id, Report.post_id == found.post.id)
    if existing is not None:
        return existing
    return await file_report(
        session,
        category=parsed,
        now=now,
        group_id=found.thread.group_id,
        post_id=found.post.id,
        member_id=found.post.author_id,
        reporter_id=reporter.id,
        comment=comment,
        rates=rates,
    )


async def report_member(
    session: AsyncSession,
    viewer: Viewer,
    *,
    username: str,
    category: str,
    comment: str,
    now: datetime,
    rates: RateLimits | None = None,
) -> Report:
    """A member reports another member of this node, for the node's admins."""
    reporter = await _acting_member(session, viewer)
    person = await get_member(session, username)
    if person.id == reporter.id:
        raise Invalid({"target": "You cannot report yourself."})
    parsed = parse_category(category)
    target = (Report.member_id == person.id) & Report.post_id.is_(None)
    existing = await _open_report_by(session, reporter.id, target)
    if existing is not None:
        return existing
    return await file_report(
        session,
        category=parsed,
        now=now,
        group_id=None,
        member_id=person.id,
        reporter_id=reporter.id,
        comment=comment,
        rates=rates,
    )


# ------------------------------------------------------------------------------ the queue


@dataclass(frozen=True)
class ReportLine:
    report: Report
    reporter: Member | None

    @property
    def source(self) -> str:
        """Who reported, as moderators see it: a member, another server, or this node."""
        if self.reporter is not None:
            return handle_of(self.reporter)
        if self.report.origin_domain != LOCAL:
            return f"the server {self.report.origin_domain}"
        return "this node (automatic)"

    @property
    def category_label(self) -> str:
        return CATEGORY_LABELS.get(self.report.category, self.report.category)


@dataclass
class QueueEntry:
    """The open reports of one target (a post, or a member), oldest first."""

    post: Post | None
    thread: Thread | None
    group: ConditionGroup | None
    member: Member | None  # the post's author, or the member reported
    reports: list[ReportLine] = field(default_factory=list)
    total: int = 0  # its open reports, of which at most REPORTS_SHOWN_PER_TARGET are read

    @property
    def more(self) -> int:
        """Open reports of the target beyond those shown."""
        return max(0, self.total - len(self.reports))

    @property
    def crisis(self) -> bool:
        return any(line.report.category == ReportCategory.CRISIS for line in self.reports)

    @property
    def anonymous(self) -> bool:
        """A report of an anonymous post names no author on the queue's pages: a moderator
        who needs to know reveals it from the post, and the log records that."""
        return self.post is not None and self.post.anonymous

    @property
    def first(self) -> Report:
        return self.reports[0].report

    @property
    def categories(self) -> list[str]:
        return sorted({line.category_label for line in self.reports})


def _target_key(report: Report) -> tuple[str, str]:
    if report.post_id is not None:
        return ("post", report.post_id)
    return ("member", str(report.member_id))


def _same_target(report: Report) -> ColumnElement[bool]:
    if report.post_id is not None:
        return Report.post_id == report.post_id
    return (Report.member_id == report.member_id) & Report.post_id.is_(None)


Row = TypeVar("Row", Post, Thread, ConditionGroup, Member)


async def _by_id(session: AsyncSession, model: type[Row], ids: Iterable[Any]) -> dict[Any, Row]:
    """Rows of `model` by id, in one query."""
    wanted = {value for value in ids if value is not None}
    if not wanted:
        return {}
    rows = await session.execute(select(model).where(model.id.in_(wanted)))
    return {row.id: row for row in rows.scalars()}


async def _entries(
    session: AsyncSession, reports: list[Report], totals: dict[tuple[str, str], int]
) -> list[QueueEntry]:
    """Reports gathered by target, each target's reports in the order given."""
    post_rows = await _by_id(session, Post, (r.post_id for r in reports))
    thread_rows = await _by_id(session, Thread, (p.thread_id for p in post_rows.values()))
    group_ids = [r.group_id for r in reports] + [t.group_id for t in thread_rows.values()]
    group_rows = await _by_id(session, ConditionGroup, group_ids)
    people_ids = [r.member_id for r in reports] + [r.reporter_id for r in reports]
    people = await _by_id(session, Member, people_ids + [p.author_id for p in post_rows.values()])
    entries: dict[tuple[str, str], QueueEntry] = {}
    for report in reports:
        key = _target_key(report)
        if key not in entries:
            post = post_rows.get(report.post_id)
            thread = thread_rows.get(post.thread_id) if post is not None else None
            group = group_rows.get(thread.group_id if thread is not None else report.group_id)
            author = post.author_id if post is not None else report.member_id
            entries[key] = QueueEntry(post, thread, group, people.get(author))
            entries[key].total = totals.get(key, 0)
        entries[key].reports.append(ReportLine(report, people.get(report.reporter_id)))
    return list(entries.values())


# A report's target, a post or a member (the member only where no post is reported), and
# its rank: self-harm or crisis reports (0) before the others (1).
REPORTED_MEMBER = case((Report.post_id.is_(None), Report.member_id))
CRISIS_FIRST = case((Report.category == ReportCategory.CRISIS.value, 0), else_=1)

# A target's open reports read for its queue entry and its review page: another server can
# send any number of Flags about one post, and each is a report of its own.
REPORTS_SHOWN_PER_TARGET = 50


async def _open_reports(
    session: AsyncSession, where: ColumnElement[bool]
) -> tuple[list[Report], dict[tuple[str, str], int]]:
    """The open reports matching `where`, at most REPORTS_SHOWN_PER_TARGET of each target
    (self-harm or crisis ones first, then the oldest), oldest first; and each target's count
    of open reports."""
    target = (Report.post_id, REPORTED_MEMBER)
    ranked = (
        select(
            Report.id,
            func.row_number()
            .over(partition_by=target, order_by=(CRISIS_FIRST, Report.created_at, Report.id))
            .label("rank"),
            func.count().over(partition_by=target).label("total"),
        )
        .where(Report.state == ReportState.OPEN, where)
        .subquery()
    )
    rows = await session.execute(
        select(Report, ranked.c.total)
        .join(ranked, ranked.c.id == Report.id)
        .where(ranked.c.rank <= REPORTS_SHOWN_PER_TARGET)
        .order_by(Report.created_at, Report.id)
    )
    reports, totals = [], {}
    for report, total in rows.all():
        reports.append(report)
        totals[_target_key(report)] = total
    return reports, totals


# The cursor of a queue page, one entry per target (a post, or a member reported): 0 for a
# target with a self-harm or crisis report (those come first), else 1; when it was first
# reported (the longest waiting first); then its lowest report id, which no other target has.
QUEUE_KEYS: tuple[KeyKind, ...] = ("number", "moment", "number")


async def _queue(
    session: AsyncSession, where: ColumnElement[bool], request: PageRequest
) -> Page[QueueEntry]:
    """A page of the open reports matching `where`, gathered by target (node/paging.py)."""
    targets = (
        select(
            Report.post_id.label("post_id"),
            REPORTED_MEMBER.label("member_id"),
            func.min(CRISIS_FIRST).label("rank"),
            func.min(Report.created_at).label("first_at"),
            func.min(Report.id).label("first_id"),
        )
        .where(Report.state == ReportState.OPEN, where)
        .group_by(Report.post_id, REPORTED_MEMBER)
        .subquery()
    )
    keys = [targets.c.rank, targets.c.first_at, targets.c.first_id]
    statement = select(targets)
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer, ascending=True))
    rows = await session.execute(
        statement.order_by(*order(keys, request.newer, ascending=True)).limit(request.size + 1)
    )
    page = page_of(list(rows.all()), request, lambda row: (row.rank, row.first_at, row.first_id))
    if not page.items:
        return Page([], page.older, page.newer)
    post_ids = [row.post_id for row in page.items if row.post_id is not None]
    member_ids = [row.member_id for row in page.items if row.post_id is None]
    reported_members = and_(Report.post_id.is_(None), Report.member_id.in_(member_ids))
    of_targets = or_(Report.post_id.in_(post_ids), reported_members)
    entries = {
        _target_key(entry.first): entry
        for entry in await _entries(session, *await _open_reports(session, where & of_targets))
    }
    # In the page's order; a target whose reports were all closed meanwhile is left out.
    keys_in_order = [
        ("post", row.post_id) if row.post_id is not None else ("member", str(row.member_id))
        for row in page.items
    ]
    shown = [entries[key] for key in keys_in_order if key in entries]
    return Page(shown, page.older, page.newer)


async def group_queue(
    session: AsyncSession, view: GroupView, request: PageRequest = FIRST_PAGE
) -> Page[QueueEntry]:
    """A page of the open reports of posts in a group, self-harm or crisis first, then the
    longest waiting: for its moderators (and the node's admins)."""
    if not view.may(Action.MODERATE):
        raise Forbidden(QUEUE_FORBIDDEN)
    return await _queue(session, Report.group_id == view.group.id, request)


async def node_queue(
    session: AsyncSession, viewer: Viewer, request: PageRequest = FIRST_PAGE
) -> Page[QueueEntry]:
    """A page of every open report on this node, including reports of members, in the
    queue's order: for admins."""
    if not viewer.is_admin:
        raise NotFound(REPORT_NOT_FOUND)
    return await _queue(session, Report.id.is_not(None), request)


@dataclass(frozen=True)
class Moderated:
    """A report the viewer may act on, with the group it belongs to (None: node-wide)."""

    report: Report
    view: GroupView | None


async def moderated_report(session: AsyncSession, viewer: Viewer, report_id: int) -> Moderated:
    """The report, if the viewer moderates it; otherwise the same answer as a missing one.

    The report is loaded in the query that finds its group only among the groups the viewer
    may know of: a report of a private group's post costs an outsider what a report that does
    not exist costs (one statement), and is decided before anything more is loaded."""
    if viewer.member_id is None:
        raise NotFound(REPORT_NOT_FOUND)
    statement = (
        visible_groups(viewer, Action.MODERATE)
        .add_columns(Report)
        .join(Report, Report.group_id == ConditionGroup.id)
        .where(Report.id == report_id)
    )
    row = (await session.execute(statement.limit(1))).first()
    if row is None:
        # A report of a member, not of a post, belongs to no group: the node's admins' alone.
        report = await session.get(Report, report_id) if viewer.is_admin else None
        if report is None or report.group_id is not None:
            raise NotFound(REPORT_NOT_FOUND)
        return Moderated(report, None)
    group, state, role, report = row
    try:
        view = await view_of_row(
            session, group, standing_of_row(state, role), viewer, Action.MODERATE
        )
    except NotFound:
        raise NotFound(REPORT_NOT_FOUND) from None
    return Moderated(report, view)


async def review(session: AsyncSession, viewer: Viewer, report_id: int) -> QueueEntry:
    """One report with the other open reports of its target, for the moderator deciding."""
    found = await moderated_report(session, viewer, report_id)
    same, totals = await _open_reports(session, _same_target(found.report))
    if found.report not in same:
        same.insert(0, found.report)
    return (await _entries(session, same, totals))[0]


# ---------------------------------------------------------------------------- the actions


async def _resolve(
    session: AsyncSession, report: Report, state: ReportState, outcome: str, now: datetime
) -> None:
    """Close every open report of the same target with the same outcome."""
    await session.execute(
        update(Report)
        .where(Report.state == ReportState.OPEN, _same_target(report))
        .values(state=state.value, outcome=outcome, resolved_at=now)
        .execution_options(synchronize_session="fetch")
    )


async def resolve_post_reports(
    session: AsyncSession, post_id: str, outcome: str, now: datetime
) -> None:
    await session.execute(
        update(Report)
        .where(Report.state == ReportState.OPEN, Report.post_id == post_id)
        .values(state=ReportState.RESOLVED.value, outcome=outcome, resolved_at=now)
        .execution_options(synchronize_session="fetch")
    )


async def remove_post(
    session: AsyncSession,
    viewer: Viewer,
    *,
    post_id: str,
    reason: str,
    now: datetime,
    report_id: int | None = None,
) -> posts.PostInContext:
    """A moderator removes someone's post: a tombstone stays, the reason goes with the
    removal (and with its Delete), in the log, and open reports of it are resolved."""
    reason = required_reason(reason)
    actor = await _acting_member(session, viewer)
    found = await posts.delete_post(session, viewer, post_id=post_id, now=now, reason=reason)
    await log_action(
        session,
        action=ModAction.REMOVE_POST,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        group_id=found.thread.group_id,
        post_id=found.post.id,
        thread_id=found.thread.id,
        member_id=found.post.author_id,
        report_id=report_id,
    )
    await resolve_post_reports(session, found.post.id, OUTCOMES[QueueAction.REMOVE_POST], now)
    return found


async def set_thread_locked(
    session: AsyncSession,
    viewer: Viewer,
    *,
    thread_id: str,
    locked: bool,
    reason: str,
    now: datetime,
    report_id: int | None = None,
) -> Thread:
    reason = required_reason(reason)
    actor = await _acting_member(session, viewer)
    thread = await posts.set_thread_locked(
        session, viewer, thread_id=thread_id, locked=locked, now=now
    )
    action = ModAction.LOCK_THREAD if locked else ModAction.UNLOCK_THREAD
    await _log_thread_action(session, action, actor, thread, reason, now, report_id)
    return thread


async def set_thread_pinned(
    session: AsyncSession,
    viewer: Viewer,
    *,
    thread_id: str,
    pinned: bool,
    reason: str,
    now: datetime,
) -> Thread:
    reason = required_reason(reason)
    actor = await _acting_member(session, viewer)
    thread = await posts.set_thread_pinned(
        session, viewer, thread_id=thread_id, pinned=pinned, now=now
    )
    action = ModAction.PIN_THREAD if pinned else ModAction.UNPIN_THREAD
    await _log_thread_action(session, action, actor, thread, reason, now)
    return thread


async def _log_thread_action(
    session: AsyncSession,
    action: ModAction,
    actor: Member,
    thread: Thread,
    reason: str,
    now: datetime,
    report_id: int | None = None,
) -> None:
    await log_action(
        session,
        action=action,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        group_id=thread.group_id,
        thread_id=thread.id,
        report_id=report_id,
    )


async def ban(
    session: AsyncSession,
    view: GroupView,
    member: Member,
    *,
    reason: str,
    days: int | None,
    now: datetime,
    report_id: int | None = None,
) -> str:
    """Ban from the group, until lifted or for `days`; the outcome, in words."""
    reason = required_reason(reason)
    actor = await _acting_member(session, view.viewer)
    until = now + timedelta(days=days) if days else None
    await membership.ban_member(session, view, member, now, until)
    await log_action(
        session,
        action=ModAction.BAN,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        group_id=view.group.id,
        member_id=member.id,
        report_id=report_id,
    )
    outcome = OUTCOMES[QueueAction.BAN]
    return f"{outcome[:-1]} until {_when(until)}." if until else outcome


async def lift_ban(
    session: AsyncSession, view: GroupView, member: Member, *, reason: str, now: datetime
) -> None:
    reason = required_reason(reason)
    actor = await _acting_member(session, view.viewer)
    await membership.unban(session, view, member)
    await log_action(
        session,
        action=ModAction.UNBAN,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        group_id=view.group.id,
        member_id=member.id,
    )


async def warn(
    session: AsyncSession,
    viewer: Viewer,
    member: Member,
    *,
    group_id: int | None,
    reason: str,
    now: datetime,
    report_id: int | None = None,
) -> None:
    """Warn a member of this node: the reason is the warning they read among their
    notifications (the moderation log entry notifies them)."""
    reason = required_reason(reason)
    actor = await _acting_member(session, viewer)
    if member.domain != LOCAL:
        raise Conflict("Only members of this node can be warned here; ban them instead.")
    await log_action(
        session,
        action=ModAction.WARN_MEMBER,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        group_id=group_id,
        member_id=member.id,
        report_id=report_id,
    )


async def suspend(
    session: AsyncSession,
    viewer: Viewer,
    member: Member,
    *,
    reason: str,
    now: datetime,
    report_id: int | None = None,
) -> None:
    """An admin suspends an account of this node: it cannot sign in again, and every browser
    signed in as it is signed out at once."""
    reason = required_reason(reason)
    actor = await _acting_member(session, viewer)
    if not viewer.is_admin:
        raise Forbidden("Only the node's admins can suspend an account.")
    if member.id == actor.id:
        raise Conflict("You cannot suspend your own account.")
    await suspend_account(
        session,
        member,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        report_id=report_id,
    )


async def suspend_account(
    session: AsyncSession,
    member: Member,
    *,
    reason: str,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
    report_id: int | None = None,
) -> None:
    """Suspend a local account and sign out its browsers; `suspend` (an admin on a page) and
    `healthnode member suspend` both come here. The caller has checked who acts."""
    reason = required_reason(reason)
    if member.domain != LOCAL:
        raise Conflict("Only accounts of this node can be suspended; ban them instead.")
    if member.suspended_at is None:
        member.suspended_at = now
    await session.execute(delete(WebSession).where(WebSession.member_id == member.id))
    await log_action(
        session,
        action=ModAction.SUSPEND_ACCOUNT,
        reason=reason,
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        member_id=member.id,
        report_id=report_id,
    )


async def unsuspend_account(
    session: AsyncSession,
    member: Member,
    *,
    reason: str,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
) -> bool:
    """Lift a local account's suspension (it may sign in again); answers whether it was
    suspended. The caller has checked who acts."""
    reason = required_reason(reason)
    if member.domain != LOCAL or member.suspended_at is None:
        return False
    member.suspended_at = None
    await log_action(
        session,
        action=ModAction.UNSUSPEND_ACCOUNT,
        reason=reason,
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        member_id=member.id,
    )
    return True


def parse_action(text: str) -> QueueAction:
    try:
        return QueueAction(text)
    except ValueError:
        raise Invalid({"action": "Choose what to do."}) from None


async def act_on_report(
    session: AsyncSession,
    viewer: Viewer,
    report_id: int,
    *,
    action: str,
    reason: str,
    confirmed: bool,
    ban_days: str,
    now: datetime,
) -> Report:
    """Do what the moderator chose about a report, log it with its reason, and close every open
    report of the same target with the outcome in plain words."""
    found = await moderated_report(session, viewer, report_id)
    report = found.report
    chosen = parse_action(action)
    problems: dict[str, str] = {}
    try:
        reason = required_reason(reason)
    except Invalid as error:
        problems |= error.problems
    if chosen in CONFIRMED_ACTIONS and not confirmed:
        problems["confirm"] = CONFIRM_PROBLEM
    days = parse_ban_days(ban_days) if chosen == QueueAction.BAN else None
    if problems:
        raise Invalid(problems)
    if report.state != ReportState.OPEN:
        raise Conflict(f"This report was handled already. {report.outcome}")
    post = await session.get(Post, report.post_id) if report.post_id else None
    author_id = post.author_id if post is not None else report.member_id
    member = await session.get(Member, author_id) if author_id is not None else None
    outcome = OUTCOMES[chosen]
    match chosen:
        case QueueAction.DISMISS:
            actor = await _acting_member(session, viewer)
            await log_action(
                session,
                action=ModAction.DISMISS_REPORT,
                reason=reason,
                now=now,
                actor_label=handle_of(actor),
                actor_id=actor.id,
                group_id=report.group_id,
                post_id=report.post_id,
                member_id=report.member_id,
                report_id=report.id,
            )
        case QueueAction.REMOVE_POST | QueueAction.LOCK_THREAD if post is None:
            raise Conflict("This report is about a member, not a post.")
        case QueueAction.REMOVE_POST:
            assert post is not None
            await remove_post(
                session, viewer, post_id=post.id, reason=reason, now=now, report_id=report.id
            )
        case QueueAction.LOCK_THREAD:
            assert post is not None
            await set_thread_locked(
                session,
                viewer,
                thread_id=post.thread_id,
                locked=True,
                reason=reason,
                now=now,
                report_id=report.id,
            )
        case _ if member is None:
            raise Conflict("The member this report is about is no longer here.")
        case QueueAction.WARN_MEMBER:
            assert member is not None
            await warn(
                session,
                viewer,
                member,
                group_id=report.group_id,
                reason=reason,
                now=now,
                report_id=report.id,
            )
        case QueueAction.BAN:
            assert member is not None
            if found.view is None:
                raise Conflict("A report of a member belongs to no group: suspend instead.")
            outcome = await ban(
                session,
                found.view,
                member,
                reason=reason,
                days=days,
                now=now,
                report_id=report.id,
            )
        case QueueAction.SUSPEND:
            assert member is not None
            await suspend(session, viewer, member, reason=reason, now=now, report_id=report.id)
    state = ReportState.DISMISSED if chosen == QueueAction.DISMISS else ReportState.RESOLVED
    await _resolve(session, report, state, outcome, now)
    await session.refresh(report)
    return report


# ------------------------------------------------------------- what members see of it all


@dataclass(frozen=True)
class MyReport:
    report: Report
    target: str  # in words: "a post", "a member (@name)"

    @property
    def category_label(self) -> str:
        return CATEGORY_LABELS.get(self.report.category, self.report.category)


# The cursor of a member's own reports: when each was made (newest first), then its id.
MY_REPORT_KEYS: tuple[KeyKind, ...] = ("moment", "number")


async def reports_of(
    session: AsyncSession, viewer: Viewer, request: PageRequest = FIRST_PAGE
) -> Page[MyReport]:
    """A page of the viewer's own reports, newest first, with their state and outcome (never
    who acted on them)."""
    if viewer.member_id is None:
        return Page([], None, None)
    keys = [Report.created_at, Report.id]
    statement = (
        select(Report, Member)
        .outerjoin(Member, Member.id == Report.member_id)
        .where(Report.reporter_id == viewer.member_id)
    )
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer))
    rows = await session.execute(
        statement.order_by(*order(keys, request.newer)).limit(request.size + 1)
    )
    page = page_of(list(rows.all()), request, lambda row: (row[0].created_at, row[0].id))
    mine = []
    for report, person in page.items:
        if report.post_id is not None:
            target = "a post"
        else:
            target = f"a member (@{handle_of(person)})" if person is not None else "a member"
        mine.append(MyReport(report, target))
    return Page(mine, page.older, page.newer)


# --------------------------------------------------------------------------------- logs


@dataclass(frozen=True)
class LogLine:
    entry: ModerationLogEntry
    group: ConditionGroup | None
    # Whom it was about, when a member; None for an anonymous post's author, whom the log
    # keeps (the record of who learned what) but does not show.
    member: Member | None

    @property
    def action_label(self) -> str:
        return ACTION_LABELS.get(self.entry.action, self.entry.action.replace("_", " "))


# The cursor of a log page: when, then the entry's id (newest first).
LOG_KEYS: tuple[KeyKind, ...] = ("moment", "number")


async def _log(
    session: AsyncSession, where: ColumnElement[bool], request: PageRequest
) -> Page[LogLine]:
    keys = [ModerationLogEntry.created_at, ModerationLogEntry.id]
    statement = (
        select(ModerationLogEntry, ConditionGroup, Member, Post.anonymous)
        .outerjoin(ConditionGroup, ConditionGroup.id == ModerationLogEntry.group_id)
        .outerjoin(Member, Member.id == ModerationLogEntry.member_id)
        .outerjoin(Post, Post.id == ModerationLogEntry.post_id)
        .where(where)
    )
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer))
    rows = await session.execute(
        statement.order_by(*order(keys, request.newer)).limit(request.size + 1)
    )
    page = page_of(list(rows.all()), request, lambda row: (row[0].created_at, row[0].id))
    lines = [
        LogLine(entry, group, None if anonymous else member)
        for entry, group, member, anonymous in page.items
    ]
    return Page(lines, page.older, page.newer)


async def group_log(
    session: AsyncSession, view: GroupView, request: PageRequest = FIRST_PAGE
) -> Page[LogLine]:
    """A page of the group's moderation log: for its moderators (and the node's admins)."""
    if not view.may(Action.MODERATE):
        raise Forbidden(LOG_FORBIDDEN)
    return await _log(session, ModerationLogEntry.group_id == view.group.id, request)


async def audit_log(
    session: AsyncSession, viewer: Viewer, request: PageRequest = FIRST_PAGE
) -> Page[LogLine]:
    """A page of every entry on this node, in every group and node-wide: for admins."""
    if not viewer.is_admin:
        raise NotFound("There is nothing at this address.")
    return await _log(session, ModerationLogEntry.id.is_not(None), request)


# ------------------------------------------------------------------ anonymous posts


@dataclass(frozen=True)
class Revealed:
    found: posts.PostInContext
    author: Member


async def reveal_author(
    session: AsyncSession, viewer: Viewer, *, post_id: str, reason: str, now: datetime
) -> Revealed:
    """A group's moderator (or an admin) learns who wrote an anonymous post, giving a reason;
    the moderation log records each reveal, every time, with the post and the author."""
    reason = required_reason(reason)
    actor = await _acting_member(session, viewer)
    found = await posts.post_in_context(session, post_id, viewer)
    if not found.view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can see who wrote an anonymous post.")
    if not found.post.anonymous:
        raise Conflict("This post is not anonymous: its author is named with it.")
    author = await session.get(Member, found.post.author_id)
    assert author is not None  # posts.author_id is a foreign key
    await log_action(
        session,
        action=ModAction.REVEAL_AUTHOR,
        reason=reason,
        now=now,
        actor_label=handle_of(actor),
        actor_id=actor.id,
        group_id=found.view.group.id,
        post_id=found.post.id,
        thread_id=found.thread.id,
        member_id=author.id,
    )
    return Revealed(found, author)
