"""Remote posts deleted before they reached this node, remembered with who deleted them, so
that a late Create of one is not applied when the one who deleted it could: its author, or
its group or a moderator of that group. Anyone else's Delete of an id not here suppresses
nothing (it is kept all the same: the post may yet arrive in a group that person moderates).
Tombstones expire: a Create still late after TOMBSTONES_KEPT is applied."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Delete, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import ConditionGroup, DeletedObject, Member, Membership

# Longer than a sender keeps retrying a delivery (ours give up after 3 days, Mastodon's
# after about as long): a Create that is later still is no longer a retry of the deleted one.
TOMBSTONES_KEPT = timedelta(days=7)
MODERATING_ROLES = ("moderator", "owner")


async def remember_deleted(
    session: AsyncSession, ap_id: str, deleted_by: str, now: datetime
) -> None:
    known = await session.execute(
        select(DeletedObject.id).where(
            DeletedObject.ap_id == ap_id, DeletedObject.deleted_by == deleted_by
        )
    )
    if known.first() is None:
        session.add(DeletedObject(ap_id=ap_id, deleted_by=deleted_by, deleted_at=now))
        await session.flush()


async def deleters_among(session: AsyncSession, ap_ids: Iterable[str]) -> dict[str, set[str]]:
    """Who deleted each of these ids before it arrived, with one query (ids no one deleted
    are left out)."""
    wanted = sorted(set(ap_ids))
    found: dict[str, set[str]] = defaultdict(set)
    if wanted:
        rows = await session.execute(
            select(DeletedObject.ap_id, DeletedObject.deleted_by).where(
                DeletedObject.ap_id.in_(wanted)
            )
        )
        for ap_id, deleted_by in rows.all():
            found[ap_id].add(deleted_by)
    return dict(found)


async def was_deleted(
    session: AsyncSession, ap_id: str, author_iri: str, group: ConditionGroup | None
) -> bool:
    """Whether one who may delete the post deleted it before it arrived: its author, the
    group it is going to (a remote group's announced Delete is kept in the group's name),
    or an active moderator of that group."""
    deleters = (await deleters_among(session, [ap_id])).get(ap_id, set())
    if not deleters:
        return False
    if author_iri in deleters:
        return True
    if group is None:
        return False
    if group.actor_iri is not None and group.actor_iri in deleters:
        return True
    moderator = await session.execute(
        select(Member.id)
        .join(Membership, Membership.member_id == Member.id)
        .where(
            Membership.group_id == group.id,
            Membership.state == "active",
            Membership.role.in_(MODERATING_ROLES),
            Member.actor_iri.in_(sorted(deleters)),
        )
        .limit(1)
    )
    return moderator.first() is not None


def expired_deletions(now: datetime) -> Delete:
    """The tombstones older than TOMBSTONES_KEPT, to prune."""
    return delete(DeletedObject).where(DeletedObject.deleted_at < now - TOMBSTONES_KEPT)
