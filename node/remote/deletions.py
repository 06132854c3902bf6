"""Remote posts deleted before they reached this node, remembered so that a late Create of
one is not applied (its author wanted it gone)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import DeletedObject


async def remember_deleted(session: AsyncSession, ap_id: str, now: datetime) -> None:
    if await session.get(DeletedObject, ap_id) is None:
        try:
            async with session.begin_nested():
                session.add(DeletedObject(ap_id=ap_id, deleted_at=now))
        except IntegrityError:
            pass  # remembered by a concurrent worker


async def was_deleted(session: AsyncSession, ap_id: str) -> bool:
    return await session.get(DeletedObject, ap_id) is not None


async def deleted_among(session: AsyncSession, ap_ids: Iterable[str]) -> set[str]:
    """`was_deleted` for many ids with one query: those deleted before they arrived."""
    wanted = sorted(set(ap_ids))
    if not wanted:
        return set()
    rows = await session.execute(select(DeletedObject.ap_id).where(DeletedObject.ap_id.in_(wanted)))
    return set(rows.scalars())
