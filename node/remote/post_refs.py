"""Posts and marks by the ids other servers gave them, with the thread and group around them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import ConditionGroup, Post, Reaction, Thread


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
