"""Reports of posts and members: the one way a report is filed, whoever files it.

A local member files one from a post or a profile; another server's `Flag` files one with its
domain (the reporter is never named across servers); the node files a crisis report itself
when a published post matches a crisis phrase. The moderation queue and its actions read and
resolve them (they live with the queue, not here).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from node.config import DEFAULT_RATE_LIMITS, RateLimits
from node.errors import Invalid
from node.events import ReportFiled, record
from node.rate_limits import count_report
from node.storage.models import LOCAL, REPORT_CATEGORIES, Report
from node.text import neutralise

COMMENT_MAX = 1000


class ReportCategory(StrEnum):
    MISINFORMATION = "misinformation"
    CRISIS = "crisis"  # self-harm or crisis: on top of every queue
    HARASSMENT = "harassment"
    SPAM = "spam"
    PRIVACY = "privacy"
    UNDER_AGE = "under_age"
    OTHER = "other"


class ReportState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


assert tuple(ReportCategory) == REPORT_CATEGORIES  # one list, two spellings


def parse_category(text: str) -> ReportCategory:
    try:
        return ReportCategory(text)
    except ValueError:
        raise Invalid({"category": "Choose what is wrong."}) from None


async def file_report(
    session: AsyncSession,
    *,
    category: ReportCategory,
    now: datetime,
    group_id: int | None,
    post_id: str | None = None,
    member_id: int | None = None,
    reporter_id: int | None = None,
    comment: str = "",
    origin_domain: str = LOCAL,
    flag_activity_id: str | None = None,
    rates: RateLimits | None = None,
) -> Report:
    """Store an open report and record `ReportFiled` (federation sends a `Flag` for remote
    content from it). Who may report what is the caller's check (policy decides).

    A member's report counts against `rates.reports_per_member` (the node's RateLimits;
    their defaults when not given), or raises throttles.Throttled."""
    if post_id is None and member_id is None:
        raise Invalid({"target": "A report names a post or a member."})
    comment = neutralise(comment).strip()
    if len(comment) > COMMENT_MAX:
        raise Invalid({"comment": f"A comment is at most {COMMENT_MAX} characters."})
    if reporter_id is not None:
        await count_report(session, rates or DEFAULT_RATE_LIMITS, reporter_id, now)
    report = Report(
        group_id=group_id,
        post_id=post_id,
        member_id=member_id,
        reporter_id=reporter_id,
        origin_domain=origin_domain,
        flag_activity_id=flag_activity_id,
        category=category.value,
        comment=comment,
        state=ReportState.OPEN.value,
        created_at=now,
        outcome="",
    )
    session.add(report)
    await session.flush()
    record(session, ReportFiled(report_id=report.id))
    return report
