"""How often a member may post and report, and a server's actors ask to follow our groups.

Each is counted in `attempt_counters` (node/throttles.py), in the transaction that makes
what it counts: several processes share one budget, and what fails is not counted. Over
the limit, throttles.Throttled says how long to wait. The numbers are `RateLimits`
(node/config.py); why they are what they are is in docs/POLICY.md, "Rate limits".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from node import throttles
from node.auth import HOME_FOLLOW_KEY
from node.config import RateLimits, describe_period
from node.events import Origin
from node.groups import GroupView


def posts_key(member_id: int) -> str:
    return f"posts:{member_id}"


def reports_key(member_id: int) -> str:
    return f"reports:{member_id}"


def follows_key(host: str) -> str:
    return f"follows:{host[:100]}"


async def count_post(
    session: AsyncSession,
    rates: RateLimits,
    view: GroupView,
    origin: Origin | None,
    now: datetime,
) -> None:
    """Count a new thread or reply against its author, if it is written here (no origin).

    A post from another server is that server's to limit. The group's moderators and the
    node's admins are not limited: a warning, an announcement or a thread's cleanup must not
    wait (Discourse likewise lets staff past its new-user limits)."""
    rate = rates.posts_per_member
    exempt = view.standing.moderates or view.viewer.is_admin
    if rate is None or origin is not None or exempt or view.viewer.member_id is None:
        return
    period = describe_period(rate.period)
    reason = f"You have written {rate.count} posts in {period}, the most this node allows."
    await throttles.count_in_window(session, posts_key(view.viewer.member_id), rate, now, reason)


async def count_report(
    session: AsyncSession, rates: RateLimits, reporter_id: int, now: datetime
) -> None:
    """Count a report filed by a member here. Nobody is exempt: a flood of reports buries
    the ones that matter, whoever sends it."""
    rate = rates.reports_per_member
    if rate is None:
        return
    period = describe_period(rate.period)
    reason = f"You have sent {rate.count} reports in {period}, the most this node allows."
    await throttles.count_in_window(session, reports_key(reporter_id), rate, now, reason)


async def count_follow_request(
    session: AsyncSession, rates: RateLimits, host: str, now: datetime
) -> None:
    """Count a Follow received from an actor on `host` (its server, subdomains apart)."""
    rate = rates.follows_per_host
    if rate is None:
        return
    reason = (
        f"Over {rate.count} follow requests in {describe_period(rate.period)} from this server."
    )
    await throttles.count_in_window(session, follows_key(host), rate, now, reason)


async def count_home_follow(
    session: AsyncSession, rates: RateLimits, address: str, now: datetime
) -> None:
    """Count a "follow from your own server" asked from a client address: each one makes this
    node fetch from a server the visitor names, so a stranger must not make it do so at will."""
    rate = rates.home_follows_per_address
    if rate is None:
        return
    reason = (
        f"You have asked {rate.count} times in {describe_period(rate.period)}, "
        "the most this node allows."
    )
    await throttles.count_in_window(session, f"{HOME_FOLLOW_KEY}{address[:64]}", rate, now, reason)
