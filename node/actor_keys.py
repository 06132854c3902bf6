"""Storing actors' key pairs (generated and encrypted by keys/)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keys.pairs import KeyPair, generate_key_pair
from node.storage.models import ActorKey

INSTANCE_ACTOR = "instance"


async def store_key_pair(session: AsyncSession, owner: str, pair: KeyPair, now: datetime) -> None:
    if await session.get(ActorKey, owner) is None:
        session.add(
            ActorKey(
                owner=owner,
                public_pem=pair.public_pem,
                private_key_sealed=pair.private_sealed,
                created_at=now,
            )
        )
        await session.flush()


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
    row = await session.get(ActorKey, owner)
    if row is None:
        pair = generate_key_pair(node_secret)
        try:
            async with session.begin_nested():
                row = ActorKey(
                    owner=owner,
                    public_pem=pair.public_pem,
                    private_key_sealed=pair.private_sealed,
                    created_at=now,
                )
                session.add(row)
        except IntegrityError:  # another process starting at the same moment made it
            row = await session.get(ActorKey, owner)
            assert row is not None
    return KeyPair(row.public_pem, row.private_key_sealed)
