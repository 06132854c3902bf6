"""A remote person deleted their account at home: what this node kept of them goes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.events import AccountErased, Origin, record
from node.membership import remove_membership
from node.posts import tombstone
from node.storage.models import (
    LOCAL,
    Member,
    Membership,
    Post,
    ProfessionalVerification,
    Reaction,
    Thread,
)


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
    # Posts they deleted before count too: their groups' followers may not have heard of
    # the account's deletion (the Deletes of the posts can arrive before that of the actor).
    written = await session.execute(
        select(Post, Thread)
        .join(Thread, Thread.id == Post.thread_id)
        .where(Post.author_id == member_id)
    )
    post_ids: list[str] = []
    group_ids: set[int] = set()
    for post, thread in written.all():
        group_ids.add(thread.group_id)
        if post.deleted_at is None:
            await tombstone(session, post, thread, now)
            post_ids.append(post.id)
    await session.execute(delete(Reaction).where(Reaction.member_id == member_id))
    # A professional title is about the person: it goes with the account.
    await session.execute(
        delete(ProfessionalVerification).where(ProfessionalVerification.member_id == member_id)
    )
    memberships = await session.execute(
        select(Membership)
        .where(Membership.member_id == member_id, Membership.state != "banned")
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for row in memberships.scalars():
        await remove_membership(session, row, origin)
    member.display_name, member.bio = member.username[:60], ""
    member.profile_url, member.fetched_at = None, None
    await session.flush()
    record(session, AccountErased(member_id, tuple(post_ids), tuple(sorted(group_ids)), origin))
