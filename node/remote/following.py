"""Remote people following our groups, and our members following remote groups: every
change goes through node.membership's one way of writing a membership, and is recorded."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Conflict, Forbidden, NotFound
from node.events import Origin
from node.groups import GROUP_NOT_FOUND
from node.membership import (
    ban_has_ended,
    locked_membership,
    put_membership,
    remove_membership,
    settle,
)
from node.partners import shares_with
from node.storage.models import LOCAL, ConditionGroup, Member, Membership
from node.validation import normalise_handle


async def local_group_by_iri_path(
    session: AsyncSession, slug: str, follower_host: str = ""
) -> ConditionGroup:
    """The local group a Follow names; private and missing groups are the same: not found,
    and so is a partner group to anyone not of its partner domains (`follower_host`)."""
    group = (
        await session.execute(
            select(ConditionGroup).where(
                ConditionGroup.slug == slug.lower(), ConditionGroup.domain == LOCAL
            )
        )
    ).scalar_one_or_none()
    if group is None or not await shares_with(session, group, follower_host):
        raise NotFound(GROUP_NOT_FOUND)
    return group


async def local_groups_by_slug(
    session: AsyncSession, slugs: Iterable[str]
) -> dict[str, ConditionGroup]:
    """The local groups among these slugs (as an activity addresses them), by normalised slug,
    with one query: whoever asks, callers decide what may be done with them."""
    wanted = sorted({normalise_handle(slug) for slug in slugs} - {""})
    if not wanted:
        return {}
    rows = await session.execute(
        select(ConditionGroup).where(
            ConditionGroup.slug.in_(wanted), ConditionGroup.domain == LOCAL
        )
    )
    return {group.slug: group for group in rows.scalars()}


async def accept_remote_follow(
    session: AsyncSession, group: ConditionGroup, member: Member, origin: Origin, now: datetime
) -> Membership:
    """A remote person follows a local public group, or a partner group from one of its
    partner domains: they become an active member (the partner list is the group's consent
    to each partner node's people; docs/POLICY.md)."""
    if not await shares_with(session, group, member.domain):
        raise NotFound(GROUP_NOT_FOUND)

    async def decide(row: Membership | None) -> Membership:
        if row is not None and ban_has_ended(row, now):
            await remove_membership(session, row, origin)
            row = None
        if row is not None and row.state == "banned":
            raise Forbidden("This person is banned from the group.")
        # Recorded even when already active: a repeated Follow is answered with a fresh Accept.
        return await put_membership(
            session, row, group.id, member.id, "active", now, origin, record_unchanged=True
        )

    return await settle(session, group.id, member.id, decide)


async def end_remote_follow(
    session: AsyncSession, group: ConditionGroup, member: Member, origin: Origin
) -> None:
    row = await locked_membership(session, group.id, member.id)
    if row is None or row.state == "banned":
        return
    await remove_membership(session, row, origin)


async def follow_answered(
    session: AsyncSession,
    group: ConditionGroup,
    member: Member,
    accepted: bool,
    origin: Origin,
    now: datetime,
) -> None:
    """A remote group answered a local member's Follow."""
    row = await locked_membership(session, group.id, member.id)
    if row is None or row.state not in ("pending", "active"):
        raise Conflict("No follow of this group is waiting for an answer.")
    if accepted:
        await put_membership(session, row, group.id, member.id, "active", now, origin)
    else:
        await remove_membership(session, row, origin)


async def set_follow_activity(
    session: AsyncSession, group_id: int, member_id: int, follow_id: str
) -> None:
    row = await session.get(Membership, (group_id, member_id))
    if row is not None:
        row.follow_activity_id = follow_id
        await session.flush()


async def member_by_follow(session: AsyncSession, group_id: int, follow_id: str) -> Member | None:
    """The local member whose Follow of a remote group had this id."""
    return (
        await session.execute(
            select(Member)
            .join(Membership, Membership.member_id == Member.id)
            .where(Membership.group_id == group_id, Membership.follow_activity_id == follow_id)
        )
    ).scalar_one_or_none()


async def banned_by_remote_group(
    session: AsyncSession, group_id: int, member_id: int, origin: Origin, now: datetime
) -> None:
    """A remote group banned one of our members: what it says about itself is its to say."""

    async def decide(row: Membership | None) -> None:
        await put_membership(
            session, row, group_id, member_id, "banned", now, origin, role="member"
        )

    await settle(session, group_id, member_id, decide)


async def unbanned_by_remote_group(
    session: AsyncSession, group_id: int, member_id: int, origin: Origin
) -> None:
    """The remote group lifted its ban: the member may follow it again (nothing is resent)."""
    row = await locked_membership(session, group_id, member_id)
    if row is not None and row.state == "banned":
        await remove_membership(session, row, origin)


async def inbox_gone(session: AsyncSession, inbox_url: str) -> None:
    """An inbox answered 410 Gone: the people whose own inbox it was are gone, so they stop
    belonging to our groups (and being sent to). A shared inbox says nothing about one person."""
    gone = select(Member.id).where(Member.inbox_url == inbox_url, Member.domain != LOCAL)
    rows = await session.execute(
        select(Membership)
        .where(Membership.member_id.in_(gone), Membership.state != "banned")
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for row in rows.scalars():
        await remove_membership(session, row)
    await session.flush()
