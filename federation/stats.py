"""Usage figures that NodeInfo publishes to anyone who asks."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.policy import OPEN_VISIBILITIES
from node.storage.models import LOCAL, ConditionGroup, Member, Post, Thread

ACTIVE_MONTH = timedelta(days=30)
ACTIVE_HALFYEAR = timedelta(days=180)


async def usage_counts(session: AsyncSession, now: datetime) -> dict[str, int]:
    """Counts for NodeInfo's `usage`, under the names nodeinfo_document takes.

    Posts count only in public groups: the number of posts in private groups, and how it
    changes, would tell strangers how lively a private health group is.
    """
    local_members = select(func.count()).select_from(Member).where(Member.domain == LOCAL)
    local_posts = (
        select(func.count())
        .select_from(Post)
        .join(Thread, Thread.id == Post.thread_id)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .join(Member, Member.id == Post.author_id)
        .where(
            Post.deleted_at.is_(None),
            Post.held_at.is_(None),  # not published until a moderator approves it
            Member.domain == LOCAL,
            ConditionGroup.domain == LOCAL,
            ConditionGroup.visibility.in_(OPEN_VISIBILITIES),
        )
    )
    row = (
        await session.execute(
            select(
                local_members.scalar_subquery(),
                local_members.where(Member.last_active_at >= now - ACTIVE_MONTH).scalar_subquery(),
                local_members.where(
                    Member.last_active_at >= now - ACTIVE_HALFYEAR
                ).scalar_subquery(),
                local_posts.scalar_subquery(),
            )
        )
    ).one()
    users_total, active_month, active_halfyear, posts = (int(value or 0) for value in row)
    return {
        "users_total": users_total,
        "active_month": active_month,
        "active_halfyear": active_halfyear,
        "local_posts": posts,
    }
