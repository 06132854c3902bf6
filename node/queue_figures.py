"""Queue depths and ages for an operator's metrics, read from the database at a bounded cost.

Each figure is one indexed statement: counts stop at COUNT_CAP rows (a queue that long is an
alert whatever its exact length), and the oldest queued row is found in id order (ids grow
with arrival), never by sorting the queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import Delivery, InboxItem, RemoteHost
from node.storage.states import DeliveryState, InboxItemState

COUNT_CAP = 100_000


@dataclass(frozen=True)
class QueueFigures:
    inbox_queued: int
    deliveries_queued: int
    deliveries_in_flight: int
    oldest_inbox_seconds: float  # 0 when nothing is queued
    oldest_delivery_seconds: float
    open_circuits: int


async def queue_figures(session: AsyncSession, now: datetime) -> QueueFigures:
    async def capped_count(model: type[InboxItem] | type[Delivery], state: str) -> int:
        rows = select(model.id).where(model.state == state).limit(COUNT_CAP).subquery()
        return int((await session.execute(select(func.count()).select_from(rows))).scalar_one())

    def age(when: datetime | None) -> float:
        return max((now - when).total_seconds(), 0.0) if when is not None else 0.0

    oldest_item = await session.execute(
        select(InboxItem.received_at)
        .where(InboxItem.state == InboxItemState.QUEUED)
        .order_by(InboxItem.id)
        .limit(1)
    )
    oldest_delivery = await session.execute(
        select(Delivery.created_at)
        .where(Delivery.state == DeliveryState.QUEUED)
        .order_by(Delivery.id)
        .limit(1)
    )
    open_circuits = await session.execute(
        select(func.count()).select_from(RemoteHost).where(RemoteHost.circuit_open_until > now)
    )
    return QueueFigures(
        inbox_queued=await capped_count(InboxItem, InboxItemState.QUEUED),
        deliveries_queued=await capped_count(Delivery, DeliveryState.QUEUED),
        deliveries_in_flight=await capped_count(Delivery, DeliveryState.IN_FLIGHT),
        oldest_inbox_seconds=age(oldest_item.scalar_one_or_none()),
        oldest_delivery_seconds=age(oldest_delivery.scalar_one_or_none()),
        open_circuits=int(open_circuits.scalar_one()),
    )
