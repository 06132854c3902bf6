"""Members: registration, look-up and profiles."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import Limits
from node.errors import Conflict, Invalid, NotFound
from node.events import MemberCreated, MemberUpdated, record
from node.passwords import Passwords
from node.policy import ADMIN_ROLE, OPEN_VISIBILITIES
from node.storage.models import LOCAL, ConditionGroup, Handle, Member, Membership
from node.text import neutralise
from node.time_zones import TIME_ZONE_PROBLEM, valid_zone
from node.validation import (
    collect,
    handle_problem,
    normalise_handle,
    remote_handle_readings,
    text_problem,
)

T = TypeVar("T")


async def claim_handle(session: AsyncSession, handle: str, kind: str, what: str) -> None:
    """Reserve a name in the namespace shared by members and groups, or raise Conflict."""
    existing = await session.get(Handle, handle)
    if existing is None:
        try:
            async with session.begin_nested():
                session.add(Handle(name=handle, kind=kind))
            return
        except IntegrityError:
            pass  # taken by a concurrent request between our read and our insert
        existing = await session.get(Handle, handle)
    # Which kind holds the name is not said: a private group's name must not be confirmed.
    raise Conflict(f"The {what} “{handle}” is not available. Choose another.", field=what)


def check_new_member(
    limits: Limits, *, username: str, password: str, display_name: str
) -> tuple[str, str]:
    """The normalised username and display name of a would-be member, or Invalid."""
    username = normalise_handle(username)
    display_name = neutralise(display_name, name=True) or username
    problems = collect(
        username=handle_problem(username, "username"),
        password=password_problem(password, limits),
        display_name=text_problem(display_name, "Display name", limits.display_name_max),
    )
    if problems:
        raise Invalid(problems)
    return username, display_name


async def create_member(
    session: AsyncSession,
    passwords: Passwords,
    limits: Limits,
    *,
    username: str,
    password: str,
    display_name: str,
    now: datetime,
    is_admin: bool = False,
    consent_policy_version: str | None = None,
    awaiting_approval: bool = False,
) -> Member:
    """A new local account; `awaiting_approval`: it may not post or join until an admin
    approves it (registration by approval)."""
    username, display_name = check_new_member(
        limits, username=username, password=password, display_name=display_name
    )
    password_hash = await passwords.hash(password)  # before any write: no lock held meanwhile
    await claim_handle(session, username, "member", "username")
    member = Member(
        username=username,
        display_name=display_name,
        bio="",
        password_hash=password_hash,
        role=ADMIN_ROLE if is_admin else "member",
        created_at=now,
        last_active_at=now,
        consent_at=now if consent_policy_version else None,
        consent_policy_version=consent_policy_version,
        awaiting_approval_since=now if awaiting_approval else None,
    )
    session.add(member)
    await session.flush()
    record(session, MemberCreated(member.id))
    return member


def password_problem(password: str, limits: Limits) -> str | None:
    if len(password) < limits.password_min:
        return f"Choose a password of at least {limits.password_min} characters."
    if len(password) > limits.password_max:
        return f"A password can be at most {limits.password_max} characters."
    return None


async def find_member(session: AsyncSession, username: str) -> Member | None:
    handle = normalise_handle(username)
    if handle_problem(handle, "username"):
        return None  # such a name cannot exist; and PostgreSQL refuses some characters outright
    return (
        await session.execute(
            select(Member).where(Member.username == handle, Member.domain == LOCAL)
        )
    ).scalar_one_or_none()


async def first_admin(session: AsyncSession) -> Member | None:
    """The node's first admin, who owns what a command creates without naming an owner."""
    found = await session.execute(
        select(Member).where(Member.role == ADMIN_ROLE, Member.domain == LOCAL).order_by(Member.id)
    )
    return found.scalars().first()


async def find_member_by_handle(session: AsyncSession, handle: str) -> Member | None:
    """A local member by username, or a remote one by username@domain (for moderators)."""
    local = handle.strip().removeprefix("@")
    if "@" not in local:
        return await find_member(session, local)
    return await find_remote_by_name(
        session, Member, Member.username, Member.domain, remote_handle_readings(handle)
    )


async def find_remote_by_name(
    session: AsyncSession,
    model: type[T],
    name_column: Any,
    domain_column: Any,
    readings: list[tuple[str, str]],
) -> T | None:
    """A remote member or group by one of the (name, domain) readings of a handle. Remote
    names are stored as their servers give them: the name exactly as given, else the one
    name of that domain that differs from it only in case."""
    for name, domain in readings:
        rows = (
            (
                await session.execute(
                    select(model).where(
                        domain_column == domain,
                        domain_column != LOCAL,
                        or_(name_column == name, func.lower(name_column) == name.lower()),
                    )
                )
            )
            .scalars()
            .all()
        )
        exact = [row for row in rows if getattr(row, name_column.key) == name]
        if exact or len(rows) == 1:
            return (exact or rows)[0]
    return None


def handle_of(member: Member) -> str:
    return f"{member.username}@{member.domain}" if member.domain else member.username


async def get_member(session: AsyncSession, username: str) -> Member:
    member = await find_member(session, username)
    if member is None:
        raise NotFound("There is no member with that name.")
    return member


async def update_profile(
    session: AsyncSession,
    limits: Limits,
    member: Member,
    *,
    display_name: str,
    bio: str,
    show_groups: bool | None = None,
    time_zone: str | None = None,
) -> Member:
    """`time_zone`: an IANA zone name, "" for the browser's (None leaves it as it is)."""
    display_name = neutralise(display_name, name=True)
    bio = neutralise(bio).strip()
    zone = None if time_zone is None else time_zone.strip()
    problems = collect(
        display_name=text_problem(display_name, "Display name", limits.display_name_max),
        bio=text_problem(bio, "About you", limits.bio_max, required=False),
        time_zone=TIME_ZONE_PROBLEM if zone and valid_zone(zone) is None else None,
    )
    if problems:
        raise Invalid(problems)
    member.display_name = display_name
    member.bio = bio
    if show_groups is not None:
        member.show_groups = show_groups
    if zone is not None:
        member.time_zone = zone
    await session.flush()
    record(session, MemberUpdated(member.id))
    return member


async def profile_groups(session: AsyncSession, member: Member) -> list[ConditionGroup]:
    """Groups shown on a member's profile: none unless they chose to list them, as belonging
    to a health group discloses a condition; then the public ones only."""
    if not member.show_groups:
        return []
    return await public_groups_of(session, member.id)


async def public_groups_of(session: AsyncSession, member_id: int) -> list[ConditionGroup]:
    """The public groups a member is active in, never private ones."""
    rows = await session.execute(
        select(ConditionGroup)
        .join(Membership, Membership.group_id == ConditionGroup.id)
        .where(
            Membership.member_id == member_id,
            Membership.state == "active",
            ConditionGroup.visibility.in_(OPEN_VISIBILITIES),
        )
        .order_by(ConditionGroup.name)
    )
    return list(rows.scalars())
