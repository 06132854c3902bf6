"""People and groups on other servers, as this node keeps them: federation learns about
remote actors and hands the facts here; the domain stores them as members and groups with a
domain, so that every service and policy applies to them unchanged."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Conflict
from node.policy import PARTNERS
from node.search_index import index_group
from node.storage.models import LOCAL, ConditionGroup, Member
from node.text import neutralise

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
    # A group's own rule that only its moderators start threads (Lemmy's field).
    posting_restricted_to_mods: bool = False
    # A group that shows itself to its followers only (a partner group of another node).
    followers_only: bool = False

    def neutralised(self) -> RemoteActorFacts:
        """What people will read of the actor, through the same filter as local input."""
        return replace(
            self,
            username=neutralise(self.username, name=True),
            display_name=neutralise(self.display_name, name=True),
            summary=neutralise(self.summary).strip(),
        )


async def member_by_iri(session: AsyncSession, iri: str) -> Member | None:
    return (
        await session.execute(select(Member).where(Member.actor_iri == iri))
    ).scalar_one_or_none()


async def members_by_iri(session: AsyncSession, iris: Iterable[str]) -> dict[str, Member]:
    """`member_by_iri` for many IRIs with one query: those known here, by IRI."""
    wanted = sorted(set(iris))
    if not wanted:
        return {}
    rows = await session.execute(select(Member).where(Member.actor_iri.in_(wanted)))
    return {member.actor_iri: member for member in rows.scalars() if member.actor_iri}


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
    facts = facts.neutralised()
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
    facts = facts.neutralised()
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
    group.posting_restricted_to_mods = facts.posting_restricted_to_mods
    if facts.followers_only and group.visibility != PARTNERS:
        # Its copy here is then seen only by the members here who follow it (node/policy.py),
        # and never becomes public again: what it sent was for its followers only.
        group.visibility, group.join_policy = PARTNERS, "request"
    _locate(group, facts, now)
    await session.flush()
    await index_group(session, group)
    return group
