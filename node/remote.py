"""People and groups on other servers, as this node keeps them.

Federation learns about remote actors and hands the facts here; the domain stores them as
members and groups with a domain, so that every service and policy applies to them unchanged.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Conflict, Forbidden, NotFound
from node.events import AccountErased, MembershipChanged, Origin, record
from node.groups import GROUP_NOT_FOUND
from node.posts import tombstone
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    DeletedObject,
    Member,
    Membership,
    Post,
    Reaction,
    Thread,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RemoteActorFacts:
    iri: str
    username: str
    domain: str
    display_name: str
    summary: str
    inbox: str
    shared_inbox: str | None
    profile_url: str | None


async def member_by_iri(session: AsyncSession, iri: str) -> Member | None:
    return (
        await session.execute(select(Member).where(Member.actor_iri == iri))
    ).scalar_one_or_none()


async def group_by_iri(session: AsyncSession, iri: str) -> ConditionGroup | None:
    return (
        await session.execute(select(ConditionGroup).where(ConditionGroup.actor_iri == iri))
    ).scalar_one_or_none()


async def _free_name(
    session: AsyncSession, name_column: Any, domain_column: Any, facts: RemoteActorFacts
) -> str:
    """Remote names are unique per domain; a clash (a renamed actor) gets a suffix."""
    base = facts.username[:90]
    taken = set(
        (
            await session.execute(
                select(name_column).where(
                    domain_column == facts.domain, name_column.startswith(base, autoescape=True)
                )
            )
        ).scalars()
    )
    name, counter = base, 1
    while name in taken:
        counter += 1
        name = f"{base}_{counter}"
    return name


def _locate(row: Member | ConditionGroup, facts: RemoteActorFacts, now: datetime) -> None:
    """Where a remote actor is reached, as its latest document says."""
    row.inbox_url = facts.inbox
    row.shared_inbox_url = facts.shared_inbox
    row.profile_url = facts.profile_url
    row.fetched_at = now


async def _insert_once(
    session: AsyncSession, model: type[T], iri: str, make: Callable[[], Awaitable[T]]
) -> T:
    """Insert the row for a remote actor, or take the one a concurrent request just added;
    if another actor took the chosen name meanwhile, choose again."""
    for _ in range(3):
        try:
            async with session.begin_nested():
                row = await make()
                session.add(row)
            return row
        except IntegrityError:
            existing = (
                await session.execute(select(model).where(model.actor_iri == iri))  # type: ignore[attr-defined]
            ).scalar_one_or_none()
            if existing is not None:
                return existing
    raise Conflict("a remote actor could not be stored: its name kept clashing")


async def upsert_remote_member(
    session: AsyncSession, facts: RemoteActorFacts, now: datetime
) -> Member:
    if facts.domain == LOCAL:
        raise ValueError("a remote member needs a domain")
    member = await member_by_iri(session, facts.iri)
    if member is None:

        async def make() -> Member:
            return Member(
                username=await _free_name(session, Member.username, Member.domain, facts),
                domain=facts.domain,
                actor_iri=facts.iri,
                password_hash="",  # remote people never sign in here
                role="member",
                created_at=now,
                last_active_at=now,
                bio="",
                display_name="",
            )

        member = await _insert_once(session, Member, facts.iri, make)
    member.display_name = facts.display_name[:60] or facts.username[:60]
    member.bio = facts.summary[:2000]
    _locate(member, facts, now)
    await session.flush()
    return member


async def upsert_remote_group(
    session: AsyncSession, facts: RemoteActorFacts, now: datetime
) -> ConditionGroup:
    if facts.domain == LOCAL:
        raise ValueError("a remote group needs a domain")
    group = await group_by_iri(session, facts.iri)
    if group is None:

        async def make() -> ConditionGroup:
            return ConditionGroup(
                slug=await _free_name(session, ConditionGroup.slug, ConditionGroup.domain, facts),
                domain=facts.domain,
                actor_iri=facts.iri,
                visibility="public",  # a remote group we can see is public by definition
                join_policy="open",
                join_code=secrets.token_urlsafe(16),
                owner_id=None,
                created_at=now,
                last_activity_at=now,
                name="",
                description="",
                rules="",
            )

        group = await _insert_once(session, ConditionGroup, facts.iri, make)
    group.name = facts.display_name[:80] or facts.username[:80]
    group.description = facts.summary[:2000]
    _locate(group, facts, now)
    await session.flush()
    return group


async def local_group_by_iri_path(session: AsyncSession, slug: str) -> ConditionGroup:
    """The local group a Follow names; private and missing groups are the same: not found."""
    group = (
        await session.execute(
            select(ConditionGroup).where(
                ConditionGroup.slug == slug.lower(), ConditionGroup.domain == LOCAL
            )
        )
    ).scalar_one_or_none()
    if group is None or group.visibility != "public":
        raise NotFound(GROUP_NOT_FOUND)
    return group


async def accept_remote_follow(
    session: AsyncSession, group: ConditionGroup, member: Member, origin: Origin, now: datetime
) -> Membership:
    """A remote person follows a local public group: they become an active member."""
    if group.domain != LOCAL or group.visibility != "public":
        raise NotFound(GROUP_NOT_FOUND)
    row = await session.get(Membership, (group.id, member.id))
    if row is not None and row.state == "banned":
        raise Forbidden("This person is banned from the group.")
    previous = row.state if row is not None else None
    if row is None:
        row = Membership(
            group_id=group.id,
            member_id=member.id,
            state="active",
            role="member",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    row.state = "active"
    row.updated_at = now
    # Recorded even when already active: a repeated Follow is answered with a fresh Accept.
    record(session, MembershipChanged(group.id, member.id, "active", previous, origin))
    await session.flush()
    return row


async def end_remote_follow(
    session: AsyncSession, group: ConditionGroup, member: Member, origin: Origin
) -> None:
    row = await session.get(Membership, (group.id, member.id))
    if row is None or row.state == "banned":
        return
    record(session, MembershipChanged(group.id, member.id, None, row.state, origin))
    await session.delete(row)
    await session.flush()


async def follow_answered(
    session: AsyncSession,
    group: ConditionGroup,
    member: Member,
    accepted: bool,
    origin: Origin,
    now: datetime,
) -> None:
    """A remote group answered a local member's Follow."""
    row = await session.get(Membership, (group.id, member.id))
    if row is None or row.state not in ("pending", "active"):
        raise Conflict("No follow of this group is waiting for an answer.")
    if accepted:
        if row.state != "active":
            record(session, MembershipChanged(group.id, member.id, "active", row.state, origin))
            row.state = "active"
            row.updated_at = now
    else:
        record(session, MembershipChanged(group.id, member.id, None, row.state, origin))
        await session.delete(row)
    await session.flush()


async def set_follow_activity(
    session: AsyncSession, group_id: int, member_id: int, follow_id: str
) -> None:
    row = await session.get(Membership, (group_id, member_id))
    if row is not None:
        row.follow_activity_id = follow_id
        await session.flush()


@dataclass(frozen=True)
class PostRef:
    post: Post
    thread: Thread
    group: ConditionGroup


async def post_by_ap_id(session: AsyncSession, ap_id: str) -> PostRef | None:
    """A post that another server created, by its id."""
    return await _post_ref_where(session, Post.ap_id == ap_id)


async def post_ref(session: AsyncSession, post_id: str) -> PostRef | None:
    return await _post_ref_where(session, Post.id == post_id)


async def _post_ref_where(session: AsyncSession, condition: Any) -> PostRef | None:
    row = (
        await session.execute(
            select(Post, Thread, ConditionGroup)
            .join(Thread, Thread.id == Post.thread_id)
            .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
            .where(condition)
        )
    ).first()
    return PostRef(*row) if row else None


async def reaction_by_activity(session: AsyncSession, activity_id: str) -> Reaction | None:
    return (
        await session.execute(select(Reaction).where(Reaction.activity_id == activity_id))
    ).scalar_one_or_none()


async def remote_followers_inboxes(session: AsyncSession, group_id: int) -> list[str]:
    """Where a local group's announces go: each remote member's shared inbox, else inbox."""
    rows = await session.execute(
        select(Member.shared_inbox_url, Member.inbox_url)
        .join(Membership, Membership.member_id == Member.id)
        .where(
            Membership.group_id == group_id,
            Membership.state == "active",
            Member.domain != LOCAL,
        )
    )
    inboxes = {shared or inbox for shared, inbox in rows.all() if shared or inbox}
    return sorted(inboxes)


async def has_local_members(session: AsyncSession, group_id: int) -> bool:
    """Whether a remote group has anyone here who follows it (else its announces are unwanted)."""
    row = (
        await session.execute(
            select(Membership.member_id)
            .join(Member, Member.id == Membership.member_id)
            .where(
                Membership.group_id == group_id,
                Membership.state.in_(("active", "pending")),
                Member.domain == LOCAL,
            )
            .limit(1)
        )
    ).first()
    return row is not None


async def remote_group_inboxes_of(session: AsyncSession, member_id: int) -> list[str]:
    """The inboxes of the remote groups a local member belongs to."""
    rows = await session.execute(
        select(ConditionGroup.shared_inbox_url, ConditionGroup.inbox_url)
        .join(Membership, Membership.group_id == ConditionGroup.id)
        .where(
            Membership.member_id == member_id,
            Membership.state == "active",
            ConditionGroup.domain != LOCAL,
        )
    )
    return sorted({shared or inbox for shared, inbox in rows.all() if shared or inbox})


async def member_by_follow(session: AsyncSession, group_id: int, follow_id: str) -> Member | None:
    """The local member whose Follow of a remote group had this id."""
    return (
        await session.execute(
            select(Member)
            .join(Membership, Membership.member_id == Member.id)
            .where(Membership.group_id == group_id, Membership.follow_activity_id == follow_id)
        )
    ).scalar_one_or_none()


async def remember_deleted(session: AsyncSession, ap_id: str, now: datetime) -> None:
    if await session.get(DeletedObject, ap_id) is None:
        try:
            async with session.begin_nested():
                session.add(DeletedObject(ap_id=ap_id, deleted_at=now))
        except IntegrityError:
            pass  # remembered by a concurrent worker


async def was_deleted(session: AsyncSession, ap_id: str) -> bool:
    return await session.get(DeletedObject, ap_id) is not None


async def banned_by_remote_group(
    session: AsyncSession, group_id: int, member_id: int, now: datetime
) -> None:
    """A remote group banned one of our members: what it says about itself is its to say."""
    row = await session.get(Membership, (group_id, member_id))
    if row is None:
        row = Membership(
            group_id=group_id, member_id=member_id, state="banned", role="member",
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(row)
    row.state, row.updated_at = "banned", now
    await session.flush()


async def unbanned_by_remote_group(session: AsyncSession, group_id: int, member_id: int) -> None:
    """The remote group lifted its ban: the member may follow it again (nothing is resent)."""
    row = await session.get(Membership, (group_id, member_id))
    if row is not None and row.state == "banned":
        await session.delete(row)
        await session.flush()


async def erase_remote_account(
    session: AsyncSession, member_id: int, now: datetime, origin: Origin
) -> None:
    """The person deleted their account on their own server: what they wrote here becomes
    tombstones, their marks go, they leave every group (a ban stays, so that it still holds
    should the address come back), and what we kept of their profile is emptied.

    The event names only the groups they wrote in: those announce the deletion. A group they
    merely belonged to says nothing, since that would publish who belonged to it."""
    member = await session.get(Member, member_id)
    if member is None or member.domain == LOCAL:
        return
    written = await session.execute(
        select(Post, Thread)
        .join(Thread, Thread.id == Post.thread_id)
        .where(Post.author_id == member_id, Post.deleted_at.is_(None))
    )
    post_ids: list[str] = []
    group_ids: set[int] = set()
    for post, thread in written.all():
        await tombstone(session, post, thread, now)
        post_ids.append(post.id)
        group_ids.add(thread.group_id)
    await session.execute(delete(Reaction).where(Reaction.member_id == member_id))
    memberships = await session.execute(
        select(Membership).where(Membership.member_id == member_id, Membership.state != "banned")
    )
    for row in memberships.scalars():
        await session.delete(row)
    member.display_name, member.bio = member.username[:60], ""
    member.profile_url, member.fetched_at = None, None
    await session.flush()
    record(session, AccountErased(member_id, tuple(post_ids), tuple(sorted(group_ids)), origin))


async def inbox_gone(session: AsyncSession, inbox_url: str) -> None:
    """An inbox answered 410 Gone: the people whose own inbox it was are gone, so they stop
    belonging to our groups (and being sent to). A shared inbox says nothing about one person."""
    gone = select(Member.id).where(Member.inbox_url == inbox_url, Member.domain != LOCAL)
    rows = await session.execute(
        select(Membership).where(Membership.member_id.in_(gone), Membership.state != "banned")
    )
    for row in rows.scalars():
        await session.delete(row)
    await session.flush()
