"""Joining, leaving, requests, invitations, bans and roles within a condition group."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from node.errors import Conflict, Forbidden, Invalid, NotFound
from node.events import MembershipChanged, Origin, record
from node.groups import GROUP_NOT_FOUND, GroupView, find_group
from node.members import find_member_by_handle
from node.modlog import ModAction, log_action
from node.notifications import notify_declined
from node.paging import KeyKind, Page, PageRequest, beyond, order, page_of
from node.policy import (
    NO_STANDING,
    Action,
    Standing,
    Viewer,
    asks_by_link,
    follows_remote_partner_group,
    may,
    shown_by_federation_policy,
)
from node.storage.models import LOCAL, ConditionGroup, Member, Membership
from node.storage.states import MEMBERSHIP
from node.text import neutralise


def _require(view: GroupView, action: Action, message: str) -> None:
    if not view.may(action):
        raise Forbidden(message)


class MembershipRaced(Exception):
    """A concurrent transaction created the membership row this one was about to create."""


T = TypeVar("T")
Decision = Callable[[Membership | None], Awaitable[T]]


async def locked_membership(
    session: AsyncSession, group_id: int, member_id: int
) -> Membership | None:
    """The membership row as committed now, locked until the transaction ends.

    On PostgreSQL the row is read with SELECT ... FOR UPDATE: two changes of one membership
    (a ban and a leave, an approval and a rejection) take turns, and the later one decides on
    what the earlier one left. SQLite's writers take turns already."""
    found = await session.execute(
        select(Membership)
        .where(Membership.group_id == group_id, Membership.member_id == member_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found.scalar_one_or_none()


async def settle(session: AsyncSession, group_id: int, member_id: int, decide: Decision[T]) -> T:
    """Run `decide` on the membership as it stands, locked (`locked_membership`).

    A row that does not exist cannot be locked: when two transactions both create it, the
    later insert fails, and its `decide` runs again on the row the other one made."""
    for _ in range(3):
        row = await locked_membership(session, group_id, member_id)
        try:
            return await decide(row)
        except MembershipRaced:
            continue
    raise Conflict("This membership was changing at the same moment. Please try again.")


async def remove_membership(
    session: AsyncSession, row: Membership, origin: Origin | None = None
) -> None:
    """The one way a membership ends (leaving, a declined request, an unfollow, a lifted ban,
    a gone account): checked against its state graph and recorded as an event. `row` comes
    from `locked_membership`, so no concurrent change is lost."""
    MEMBERSHIP.check_delete(row.state)
    record(
        session,
        MembershipChanged(
            row.group_id, row.member_id, None, row.state, origin, row.follow_activity_id
        ),
    )
    await session.delete(row)
    await session.flush()


async def put_membership(
    session: AsyncSession,
    row: Membership | None,
    group_id: int,
    member_id: int,
    state: str,
    now: datetime,
    origin: Origin | None = None,
    record_unchanged: bool = False,
    role: str | None = None,
) -> Membership:
    """The one way a membership starts or changes state, local or remote: the state graph
    checks the transition (models.py) and the change is recorded as an event. `row` comes
    from `locked_membership` (through `settle`); a row created meanwhile by another
    transaction raises MembershipRaced, for `settle` to decide again.
    `record_unchanged` records it even when the state stays (a repeated Follow is answered
    again)."""
    previous = row.state if row is not None else None
    if row is None:
        _forget_stale(session, group_id, member_id)
        row = Membership(
            group_id=group_id,
            member_id=member_id,
            state=state,
            role=role or "member",
            created_at=now,
            updated_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:
            raise MembershipRaced from None
    else:
        row.state = state
        row.updated_at = now
        if role is not None:
            row.role = role
        await session.flush()
    if previous != state or record_unchanged:
        record(session, MembershipChanged(group_id, member_id, state, previous, origin))
    return row


def _forget_stale(session: AsyncSession, group_id: int, member_id: int) -> None:
    """A row this session read earlier, that another transaction has deleted since, must not
    stand in the way of the new one."""
    stale = session.identity_map.get(identity_key(Membership, (group_id, member_id)))
    if stale is not None:
        session.expunge(stale)


def _standing(row: Membership | None) -> Standing:
    return Standing(row.state, row.role) if row is not None else NO_STANDING


BANNED_MESSAGE = "You cannot join this group: a moderator has banned you from it."


async def join(session: AsyncSession, view: GroupView, now: datetime) -> Membership:
    """Join an open group, or accept an invitation to a private one. Joining again (a second
    click, two tabs) changes nothing and is no error."""
    member_id = view.viewer.member_id
    if member_id is None:
        raise Forbidden("Sign in to join a group.")

    async def decide(row: Membership | None) -> Membership:
        if row is not None and ban_has_ended(row, now):
            await remove_membership(session, row)
            row = None
        standing = _standing(row)
        if row is not None and standing.active:
            return row
        if standing.banned:
            raise Forbidden(BANNED_MESSAGE)
        if not may(Action.JOIN, view.viewer, view.group.visibility, standing) and not (
            follows_remote_partner_group(view.group.visibility, view.group.domain == LOCAL)
            and not standing.banned
        ):
            raise Forbidden("This group is joined by invitation or request only.")
        # A group on another server answers our Follow; until then the membership waits.
        state = "active" if view.group.domain == LOCAL else "pending"
        return await put_membership(session, row, view.group.id, member_id, state, now)

    return await settle(session, view.group.id, member_id, decide)


async def group_for_join_link(session: AsyncSession, slug: str, code: str) -> ConditionGroup:
    """The private group a join link names. Without the right code it does not exist."""
    group = await find_group(session, slug)
    if (
        group is None
        or not asks_by_link(group.visibility, group.join_policy)
        or not hmac.compare_digest(group.join_code.encode(), code.encode())
    ):
        raise NotFound(GROUP_NOT_FOUND)
    return group


async def request_to_join(
    session: AsyncSession, slug: str, code: str, viewer: Viewer, now: datetime
) -> Membership:
    """Ask to join a private group through its join link; a moderator decides."""
    group = await group_for_join_link(session, slug, code)
    member_id = viewer.member_id
    if member_id is None:
        raise Forbidden("Sign in to ask to join this group.")

    async def decide(row: Membership | None) -> Membership:
        if row is not None and ban_has_ended(row, now):
            await remove_membership(session, row)
            row = None
        if row is not None and row.state == "banned":
            raise Forbidden(BANNED_MESSAGE)
        if row is not None and row.state in ("active", "pending"):
            return row
        state = "active" if row is not None and row.state == "invited" else "pending"
        return await put_membership(session, row, group.id, member_id, state, now)

    return await settle(session, group.id, member_id, decide)


async def leave(session: AsyncSession, view: GroupView) -> None:
    """Leave a group, withdraw a request or decline an invitation."""
    member_id = view.viewer.member_id
    if member_id is None:
        raise Conflict("You are not a member of this group.")
    row = await locked_membership(session, view.group.id, member_id)
    if row is None or row.state == "banned":
        # A ban that came first stands: leaving never lifts it.
        raise Conflict("You are not a member of this group.")
    if row.role == "owner":
        raise Conflict("The owner cannot leave; ask an admin to hand the group over first.")
    await remove_membership(session, row)


async def _target(session: AsyncSession, username: str) -> Member:
    member = await find_member_by_handle(session, username)
    if member is None:
        raise Invalid({"username": f"There is no member called “{username.strip()}”."})
    return member


async def invite(
    session: AsyncSession, view: GroupView, username: str, now: datetime
) -> Membership:
    _require(view, Action.MODERATE, "Only moderators can invite people.")
    member = await _target(session, username)

    async def decide(row: Membership | None) -> Membership:
        if row is not None and row.state == "active":
            raise Conflict(f"{member.username} is already a member.", field="username")
        if row is not None and row.state == "banned":
            raise Conflict(f"{member.username} is banned; lift the ban first.", field="username")
        if row is not None and row.state == "invited":
            return row
        # Inviting someone who already asked to join is the same as approving them.
        state = "active" if row is not None and row.state == "pending" else "invited"
        return await put_membership(session, row, view.group.id, member.id, state, now)

    return await settle(session, view.group.id, member.id, decide)


async def decide_request(
    session: AsyncSession, view: GroupView, username: str, approve: bool, now: datetime
) -> None:
    """Approve or decline a request to join: of an approval and a rejection at the same
    moment, the first wins and the second is told what became of the request."""
    _require(view, Action.MODERATE, "Only moderators can answer join requests.")
    member = await _target(session, username)
    row = await locked_membership(session, view.group.id, member.id)
    if row is None or row.state != "pending":
        raise Conflict(_request_settled(member.username, row))
    if approve:
        await put_membership(session, row, view.group.id, member.id, "active", now)
    else:
        await remove_membership(session, row)
        await notify_declined(session, view.group.id, member.id, view.viewer.member_id, now)


async def withdraw_invitation(
    session: AsyncSession,
    view: GroupView,
    username: str,
    *,
    actor_label: str,
    now: datetime,
    reason: str = "",
) -> None:
    """A moderator takes back an invitation not yet accepted: the invited row goes, and the
    person no longer knows of a private group. One already accepted is a membership, and
    stays (removing a member is a ban)."""
    _require(view, Action.MODERATE, "Only moderators can withdraw invitations.")
    member = await _target(session, username)
    row = await locked_membership(session, view.group.id, member.id)
    if row is None or row.state != "invited":
        raise Conflict(f"{member.username} has no open invitation: it was accepted or declined.")
    await remove_membership(session, row)
    await log_action(
        session,
        action=ModAction.WITHDRAW_INVITE,
        reason=neutralise(reason).strip() or "invitation withdrawn",
        now=now,
        actor_label=actor_label,
        actor_id=view.viewer.member_id,
        group_id=view.group.id,
        member_id=member.id,
    )


def _request_settled(username: str, row: Membership | None) -> str:
    match row.state if row is not None else None:
        case "active":
            return f"{username} is a member already: their request was approved."
        case "banned":
            return f"{username} is banned from this group."
        case "invited":
            return f"{username} has no open request to join; they are invited."
        case _:
            return f"{username} has no open request to join: it was declined or withdrawn."


def ban_has_ended(row: Membership, now: datetime) -> bool:
    """A ban with an end lets the member join again from then on; its row stays until they
    do (or a moderator lifts it), so that nothing about them changes by itself."""
    return row.state == "banned" and row.banned_until is not None and row.banned_until <= now


async def find_target(session: AsyncSession, username: str) -> Member:
    """The member a moderator names by handle (local, or username@domain)."""
    return await _target(session, username)


async def ban(session: AsyncSession, view: GroupView, username: str, now: datetime) -> None:
    """`ban_member`, named by handle, until lifted."""
    await ban_member(session, view, await _target(session, username), now)


async def ban_member(
    session: AsyncSession,
    view: GroupView,
    member: Member,
    now: datetime,
    until: datetime | None = None,
) -> None:
    """Ban a member, or someone who is not one (yet): the banned row keeps them out, until
    `until` when given. A ban racing the member's leave still holds, whichever comes first."""
    _require(view, Action.MODERATE, "Only moderators can ban people.")
    if member.id == view.viewer.member_id:
        raise Conflict("You cannot ban yourself.")
    if until is not None and until <= now:
        raise Invalid({"until": "A ban's end must be in the future."})

    async def decide(row: Membership | None) -> None:
        if row is not None and row.role == "owner":
            raise Conflict("The group's owner cannot be banned.")
        if row is not None and row.role == "moderator" and not view.may(Action.APPOINT_MODERATORS):
            raise Forbidden("Only the owner or an admin can ban a moderator.")
        banned = await put_membership(
            session, row, view.group.id, member.id, "banned", now, role="member"
        )
        banned.banned_until = until
        await session.flush()

    await settle(session, view.group.id, member.id, decide)


async def unban(session: AsyncSession, view: GroupView, member: Member) -> None:
    """Lift a ban: the row goes, and the member may ask or join again."""
    _require(view, Action.MODERATE, "Only moderators can lift bans.")
    row = await locked_membership(session, view.group.id, member.id)
    if row is None or row.state != "banned":
        raise Conflict(f"{member.username} is not banned.")
    await remove_membership(session, row)


async def set_role(
    session: AsyncSession, view: GroupView, username: str, role: str, now: datetime
) -> None:
    _require(view, Action.APPOINT_MODERATORS, "Only the owner or an admin can appoint moderators.")
    if role not in ("member", "moderator"):
        raise Invalid({"role": "A role is member or moderator."})
    member = await _target(session, username)
    row = await locked_membership(session, view.group.id, member.id)
    if row is None or row.state != "active":
        raise Conflict(f"{member.username} is not an active member.")
    if row.role == "owner":
        raise Conflict("The owner's role cannot be changed here.")
    row.role = role
    row.updated_at = now
    await session.flush()


@dataclass(frozen=True)
class MemberEntry:
    member: Member
    state: str
    role: str


async def _members_in(
    session: AsyncSession, group_id: int, states: tuple[str, ...]
) -> list[MemberEntry]:
    rows = await session.execute(
        select(Member, Membership.state, Membership.role)
        .join(Membership, Membership.member_id == Member.id)
        .where(
            Membership.group_id == group_id,
            Membership.state.in_(states),
            shown_by_federation_policy(Member.federation_hidden),
        )
        .order_by(Membership.created_at)
    )
    return [MemberEntry(member, state, role) for member, state, role in rows.all()]


async def list_members(session: AsyncSession, view: GroupView) -> list[MemberEntry]:
    if not view.may(Action.SEE_MEMBERS):
        raise NotFound(GROUP_NOT_FOUND)
    return await _members_in(session, view.group.id, ("active",))


# The cursor of a member list: when each joined (oldest first), then their member id.
MEMBER_KEYS: tuple[KeyKind, ...] = ("moment", "number")


async def members_page(
    session: AsyncSession, view: GroupView, request: PageRequest
) -> Page[MemberEntry]:
    """A page of the group's active members, in the order they joined (node/paging.py)."""
    if not view.may(Action.SEE_MEMBERS):
        raise NotFound(GROUP_NOT_FOUND)
    keys = [Membership.created_at, Membership.member_id]
    statement = select(Member, Membership.state, Membership.role, Membership.created_at).join(
        Membership, Membership.member_id == Member.id
    )
    statement = statement.where(
        Membership.group_id == view.group.id,
        Membership.state == "active",
        shown_by_federation_policy(Member.federation_hidden),
    )
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer, ascending=True))
    rows = await session.execute(
        statement.order_by(*order(keys, request.newer, ascending=True)).limit(request.size + 1)
    )
    page = page_of(list(rows.all()), request, lambda row: (row[3], row[0].id))
    entries = [MemberEntry(member, state, role) for member, state, role, _ in page.items]
    return Page(entries, page.older, page.newer)


async def moderation_queue(session: AsyncSession, view: GroupView) -> list[MemberEntry]:
    """Pending requests, open invitations and bans: for moderators only."""
    _require(view, Action.MODERATE, "Only moderators can see join requests.")
    return await _members_in(session, view.group.id, ("pending", "invited", "banned"))


@dataclass(frozen=True)
class MyGroup:
    group: ConditionGroup
    state: str
    role: str


async def groups_of_viewer(session: AsyncSession, viewer: Viewer) -> list[MyGroup]:
    """The viewer's own memberships, requests and invitations (bans are not shown)."""
    if viewer.member_id is None:
        return []
    rows = await session.execute(
        select(ConditionGroup, Membership.state, Membership.role)
        .join(Membership, Membership.group_id == ConditionGroup.id)
        .where(Membership.member_id == viewer.member_id, Membership.state != "banned")
        .order_by(ConditionGroup.name)
    )
    return [MyGroup(group, state, role) for group, state, role in rows.all()]


async def active_member_count(session: AsyncSession, group_id: int) -> int:
    found = await session.execute(
        select(func.count())
        .select_from(Membership)
        .where(Membership.group_id == group_id, Membership.state == "active")
    )
    return int(found.scalar_one())


async def moderators_of(session: AsyncSession, group_id: int) -> list[Member]:
    """The group's owner and moderators, longest-standing first."""
    rows = await session.execute(
        select(Member)
        .join(Membership, Membership.member_id == Member.id)
        .where(
            Membership.group_id == group_id,
            Membership.state == "active",
            Membership.role.in_(("moderator", "owner")),
        )
        .order_by(Membership.created_at)
    )
    return list(rows.scalars())


async def ban_ended(session: AsyncSession, view: GroupView, now: datetime) -> bool:
    """Whether the viewer's ban from this group has run out (they may join again)."""
    if not view.standing.banned or view.viewer.member_id is None:
        return False
    row = await session.get(Membership, (view.group.id, view.viewer.member_id))
    return row is not None and ban_has_ended(row, now)
