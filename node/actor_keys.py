"""Storing actors' key pairs (generated and encrypted by keys/)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, cast, exists, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keys.pairs import KeyFactory, KeyPair, generate_key_pair
from node.policy import VISIBILITIES, stays_on_node
from node.storage.models import LOCAL, ActorKey, ConditionGroup, Member

INSTANCE_ACTOR = "instance"
MEMBER_OWNER = "member:"
GROUP_OWNER = "group:"


def member_key_owner(member_id: int) -> str:
    """ActorKey.owner of a local member's key."""
    return f"{MEMBER_OWNER}{member_id}"


def group_key_owner(group_id: int) -> str:
    """ActorKey.owner of a local group's key."""
    return f"{GROUP_OWNER}{group_id}"


async def ensure_local_actor_keys(
    session: AsyncSession, key_factory: KeyFactory, node_secret: bytes, now: datetime
) -> int:
    """Give a key pair to every local actor that signs what it sends and has none: members
    (not erased) and groups that leave the node (node/policy.py: never a private group).

    New ones get theirs in the transaction that creates them (federation/keysink.py); this
    is for rows written before keys existed, such as an early backup restored and migrated.
    Two statements find them all; gives how many keys were made."""
    member_owner = literal(MEMBER_OWNER, String) + cast(Member.id, String)
    group_owner = literal(GROUP_OWNER, String) + cast(ConditionGroup.id, String)
    leaving = [visibility for visibility in VISIBILITIES if not stays_on_node(visibility)]
    members = await session.scalars(
        select(Member.id)
        .where(Member.domain == LOCAL, Member.erased_at.is_(None))
        .where(~exists().where(ActorKey.owner == member_owner))
        .order_by(Member.id)
    )
    groups = await session.scalars(
        select(ConditionGroup.id)
        .where(ConditionGroup.domain == LOCAL, ConditionGroup.visibility.in_(leaving))
        .where(~exists().where(ActorKey.owner == group_owner))
        .order_by(ConditionGroup.id)
    )
    owners = [*map(member_key_owner, members.all()), *map(group_key_owner, groups.all())]
    for owner in owners:
        await store_key_pair(session, owner, key_factory(node_secret), now)
    return len(owners)


async def store_key_pair(session: AsyncSession, owner: str, pair: KeyPair, now: datetime) -> None:
    """Keep `pair` as the owner's key unless it has one already (perhaps made a moment ago by
    another process starting at the same time)."""
    if await session.get(ActorKey, owner) is not None:
        return
    try:
        async with session.begin_nested():
            session.add(
                ActorKey(
                    owner=owner,
                    public_pem=pair.public_pem,
                    private_key_sealed=pair.private_sealed,
                    created_at=now,
                )
            )
    except IntegrityError:
        pass  # the other one stands


async def replace_key_pair(session: AsyncSession, owner: str, pair: KeyPair, now: datetime) -> None:
    row = await session.get(ActorKey, owner)
    if row is None:
        raise LookupError(f"{owner} has no key pair to rotate")
    row.public_pem, row.private_key_sealed, row.created_at = (
        pair.public_pem,
        pair.private_sealed,
        now,
    )
    await session.flush()


async def public_pem_of(session: AsyncSession, owner: str) -> str | None:
    row = await session.get(ActorKey, owner)
    return row.public_pem if row else None


async def ensure_key_pair(
    session: AsyncSession, owner: str, node_secret: bytes, now: datetime
) -> KeyPair:
    if await session.get(ActorKey, owner) is None:
        await store_key_pair(session, owner, generate_key_pair(node_secret), now)
    row = await session.get(ActorKey, owner)
    assert row is not None
    return KeyPair(row.public_pem, row.private_key_sealed)
