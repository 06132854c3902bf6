"""The node's admins and its member list, as an operator manages them from the command line
(`healthnode member promote|demote|list|suspend`) or an admin from a page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Conflict
from node.modlog import ModAction, log_action
from node.policy import ADMIN_ROLE
from node.storage.models import LOCAL, Member

MEMBER_ROLE = "member"


@dataclass(frozen=True)
class MemberLine:
    username: str
    role: str
    created_at: datetime
    last_active_at: datetime
    suspended: bool


async def set_admin(
    session: AsyncSession,
    member: Member,
    admin: bool,
    *,
    reason: str,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
) -> bool:
    """Make a local member an admin, or end their admin role; answers whether it changed.
    The last admin is never demoted: a node without one cannot be run from its pages."""
    if member.domain != LOCAL or member.erased_at is not None:
        raise Conflict("Only accounts of this node can be admins.")
    role = ADMIN_ROLE if admin else MEMBER_ROLE
    if member.role == role:
        return False
    if not admin:
        # Row locks serialise two demotions at once on PostgreSQL (SQLite has one writer).
        admins = list(
            await session.scalars(
                select(Member.id)
                .where(Member.domain == LOCAL, Member.role == ADMIN_ROLE)
                .with_for_update()
            )
        )
        if admins == [member.id]:
            raise Conflict(f"{member.username} is the only admin; make another admin first.")
    member.role = role
    await log_action(
        session,
        action=ModAction.PROMOTE_ADMIN if admin else ModAction.DEMOTE_ADMIN,
        reason=reason,
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        member_id=member.id,
    )
    return True


async def local_members(session: AsyncSession) -> list[MemberLine]:
    """Every account of this node but erased ones, by username."""
    rows = await session.scalars(
        select(Member)
        .where(Member.domain == LOCAL, Member.erased_at.is_(None))
        .order_by(func.lower(Member.username))
    )
    return [
        MemberLine(
            username=row.username,
            role=row.role,
            created_at=row.created_at,
            last_active_at=row.last_active_at,
            suspended=row.suspended_at is not None,
        )
        for row in rows
    ]
