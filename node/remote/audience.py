"""Who a change federates to: the inboxes of a group's remote followers, of a member's
remote groups, and whether anyone here follows a remote group."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.policy import OPEN_VISIBILITIES
from node.storage.models import LOCAL, ConditionGroup, Member, Membership, Post, Thread


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def delivery_inbox(shared_inbox: str | None, inbox: str | None) -> str | None:
    """Where a remote actor is delivered to: its shared inbox when that is on the origin of
    its own inbox, else its inbox. Federation stores no other shared inbox; a row kept from
    before that rule may name one, and nothing signed by us goes to it."""
    if shared_inbox and inbox and _origin(shared_inbox) == _origin(inbox):
        return shared_inbox
    return inbox or None


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
    inboxes = {delivery_inbox(shared, inbox) for shared, inbox in rows.all()}
    return sorted(inbox for inbox in inboxes if inbox)


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
    inboxes = {delivery_inbox(shared, inbox) for shared, inbox in rows.all()}
    return sorted(inbox for inbox in inboxes if inbox)


async def readers_of_member(session: AsyncSession, member_id: int) -> list[str]:
    """The servers that received a local member's public posts: the remote followers of our
    public groups they published in (a group they only belong to is not told: that would
    publish who belongs to it)."""
    published_in = (
        select(Thread.group_id)
        .join(Post, Post.thread_id == Thread.id)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .where(
            Post.author_id == member_id,
            Post.held_at.is_(None),
            ConditionGroup.domain == LOCAL,
            ConditionGroup.visibility.in_(OPEN_VISIBILITIES),
        )
    )
    rows = await session.execute(
        select(Member.shared_inbox_url, Member.inbox_url)
        .join(Membership, Membership.member_id == Member.id)
        .where(
            Membership.group_id.in_(published_in),
            Membership.state == "active",
            Member.domain != LOCAL,
        )
    )
    inboxes = {delivery_inbox(shared, inbox) for shared, inbox in rows.all()}
    return sorted(inbox for inbox in inboxes if inbox)


async def shared_inboxes_of(session: AsyncSession, inboxes: list[str]) -> list[str]:
    """Inboxes things were delivered to, each replaced by its actor's shared inbox where this
    node knows one (on the same origin), once each: one delivery per server where possible."""
    if not inboxes:
        return []
    collapsed = {inbox: inbox for inbox in inboxes}
    for model in (Member, ConditionGroup):
        rows = await session.execute(
            select(model.inbox_url, model.shared_inbox_url).where(model.inbox_url.in_(inboxes))
        )
        for inbox, shared in rows.all():
            collapsed[inbox] = delivery_inbox(shared, inbox) or inbox
    return sorted(set(collapsed.values()))
