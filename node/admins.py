"""The node's admins and its member list, as an operator manages them from the command line
(`healthnode member promote|demote|list|suspend`) or an admin from a page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.erasure import ErasureRequest, erase_local_account
from node.errors import Conflict
from node.modlog import ModAction, log_action
from node.policy import ADMIN_ROLE
from node.storage.models import LOCAL, Member
from node.text import neutralise

MEMBERS_PAGE_SIZE = 50
SEARCH_MAX = 100

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


@dataclass(frozen=True)
class MembersPage:
    """One page of the admins' member list, with how many match in all."""

    members: list[Member]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _matching(search: str) -> ColumnElement[bool]:
    """Local accounts (not erased) whose username or display name contains `search`,
    ignoring case; an empty search matches them all."""
    local = (Member.domain == LOCAL) & Member.erased_at.is_(None)
    if not search:
        return local
    pattern = f"%{_like_escaped(search.lower())}%"
    return local & or_(
        func.lower(Member.username).like(pattern, escape="\\"),
        func.lower(Member.display_name).like(pattern, escape="\\"),
    )


def clean_search(text: str) -> str:
    return neutralise(text, name=True).strip()[:SEARCH_MAX]


async def members_page(
    session: AsyncSession, search: str, page: int, size: int = MEMBERS_PAGE_SIZE
) -> MembersPage:
    """The local accounts matching `search`, by username, `size` to a page (from 1)."""
    where = _matching(clean_search(search))
    total = await session.scalar(select(func.count()).select_from(Member).where(where)) or 0
    rows = await session.scalars(
        select(Member)
        .where(where)
        .order_by(func.lower(Member.username), Member.id)
        .offset((page - 1) * size)
        .limit(size)
    )
    return MembersPage(list(rows), total, page, size)


async def awaiting_approval(session: AsyncSession) -> list[Member]:
    """New accounts waiting for an admin's approval, oldest first."""
    rows = await session.scalars(
        select(Member)
        .where(
            Member.domain == LOCAL,
            Member.erased_at.is_(None),
            Member.awaiting_approval_since.is_not(None),
        )
        .order_by(Member.awaiting_approval_since, Member.id)
    )
    return list(rows)


async def approve(
    session: AsyncSession, member: Member, *, now: datetime, actor_label: str, actor_id: int
) -> bool:
    """Let a new account post and join; answers whether it was waiting."""
    if member.awaiting_approval_since is None or member.erased_at is not None:
        return False
    member.awaiting_approval_since = None
    await log_action(
        session,
        action=ModAction.APPROVE_ACCOUNT,
        reason="registration approved",
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        member_id=member.id,
    )
    return True


async def decline(
    session: AsyncSession, member: Member, *, now: datetime, actor_label: str, actor_id: int
) -> bool:
    """Refuse a new account: it is erased (nothing of the applicant is kept but the
    reserved username); answers whether it was waiting."""
    if member.awaiting_approval_since is None or member.erased_at is not None:
        return False
    await log_action(
        session,
        action=ModAction.DECLINE_ACCOUNT,
        reason="registration declined",
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        member_id=member.id,
    )
    await erase_local_account(session, member.id, now, ErasureRequest.DECLINED, actor_label)
    member.awaiting_approval_since = None
    return True
