"""What this node has published, as other servers may page through it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import Member, OutboxActivity, Post, Thread


@dataclass(frozen=True)
class Page:
    total: int
    bodies: list[str]  # the stored JSON of each activity, newest first


async def group_announces(session: AsyncSession, actor_iri: str, page: int, size: int) -> Page:
    """A group's Announces of activities, newest first. Not its bare Announce{Page} boosts
    (sent for Mastodon's sake): Lemmy reads every item of a group's outbox as an Announce of
    an activity, and one boost would spoil the whole page."""
    listed = (
        OutboxActivity.actor_iri == actor_iri,
        OutboxActivity.type == "Announce",
        OutboxActivity.object_type.not_in(("Page", "Note")),
    )
    total = (
        await session.execute(select(func.count()).select_from(OutboxActivity).where(*listed))
    ).scalar_one()
    rows = await session.execute(
        select(OutboxActivity.body)
        .where(*listed)
        .order_by(OutboxActivity.created_at.desc(), OutboxActivity.id.desc())
        .offset((page - 1) * size)
        .limit(size)
    )
    return Page(int(total), list(rows.scalars()))


async def activity(session: AsyncSession, activity_id: str) -> OutboxActivity | None:
    """One published activity by the id in its IRI (a Tombstone once its post is deleted)."""
    return await session.get(OutboxActivity, activity_id)


FEATURED_MAX = 50


async def pinned_threads(session: AsyncSession, group_id: int) -> list[tuple[Post, Thread, Member]]:
    """A group's pinned threads (its `featured` collection), newest pin first: each opening
    post with its thread and author. Deleted or held openings are not shown."""
    rows = await session.execute(
        select(Post, Thread, Member)
        .join(Thread, Thread.id == Post.thread_id)
        .join(Member, Member.id == Post.author_id)
        .where(
            Thread.group_id == group_id,
            Thread.pinned_at.is_not(None),
            Post.parent_id.is_(None),
            Post.deleted_at.is_(None),
            Post.held_at.is_(None),
        )
        .order_by(Thread.pinned_at.desc(), Thread.id)
        .limit(FEATURED_MAX)
    )
    return [(post, thread, author) for post, thread, author in rows.all()]
