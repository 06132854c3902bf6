"""Storing actors' key pairs (generated and encrypted by keys/)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keys.pairs import KeyPair, generate_key_pair
from node.storage.models import ActorKey

INSTANCE_ACTOR = "instance"


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
