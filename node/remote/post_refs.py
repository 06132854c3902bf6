"""Posts and marks by the ids other servers gave them, with the thread and group around them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
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


@dataclass(frozen=True)
class PostRefs:
    """Posts found by `post_refs`, with their thread and group, by what they were asked by."""

    by_ap_id: dict[str, PostRef]
    by_id: dict[str, PostRef]
    opening_of: dict[str, PostRef]  # a thread's opening post, by the thread's id


async def post_refs(
    session: AsyncSession,
    *,
    ap_ids: Iterable[str] = (),
    post_ids: Iterable[str] = (),
    opening_of: Iterable[str] = (),
) -> PostRefs:
    """`post_by_ap_id`, `post_ref` and the opening posts of threads, for many at once: one
    query for all of them."""
    wanted_ap_ids, wanted_ids, wanted_threads = set(ap_ids), set(post_ids), set(opening_of)
    conditions = []
    if wanted_ap_ids:
        conditions.append(Post.ap_id.in_(sorted(wanted_ap_ids)))
    if wanted_ids:
        conditions.append(Post.id.in_(sorted(wanted_ids)))
    if wanted_threads:
        conditions.append(
            and_(Post.thread_id.in_(sorted(wanted_threads)), Post.parent_id.is_(None))
        )
    found = PostRefs({}, {}, {})
    if not conditions:
        return found
    rows = await session.execute(
        select(Post, Thread, ConditionGroup)
        .join(Thread, Thread.id == Post.thread_id)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .where(or_(*conditions))
    )
    for post, thread, group in rows.all():
        ref = PostRef(post, thread, group)
        if post.ap_id is not None and post.ap_id in wanted_ap_ids:
            found.by_ap_id[post.ap_id] = ref
        if post.id in wanted_ids:
            found.by_id[post.id] = ref
        if post.parent_id is None and post.thread_id in wanted_threads:
            found.opening_of[post.thread_id] = ref
    return found


async def reaction_by_activity(session: AsyncSession, activity_id: str) -> Reaction | None:
    return (
        await session.execute(select(Reaction).where(Reaction.activity_id == activity_id))
    ).scalar_one_or_none()
