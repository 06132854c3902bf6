"""Federation health for admins: delivery counts and circuit state per host, failed items."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.paging import FIRST_PAGE, KeyKind, Page, PageRequest, beyond, order, page_of
from node.storage.models import Delivery, InboxItem, RemoteHost, inbox_host
from node.storage.states import InboxItemState


@dataclass
class HostHealth:
    host: str
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_success_at: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    circuit_open_until: datetime | None = None
    consecutive_failures: int = 0

    @property
    def waiting(self) -> int:
        return self.counts["queued"] + self.counts["in_flight"]

    def circuit(self, now: datetime) -> str:
        if self.circuit_open_until is not None and self.circuit_open_until > now:
            return "open"
        if self.consecutive_failures:
            return "failing"
        return "closed"

    def state_in_words(self, now: datetime) -> str:
        """The circuit's state as a volunteer running the node would say it."""
        return CIRCUIT_WORDS[self.circuit(now)]


CIRCUIT_WORDS = {
    "open": "Paused after repeated failures",
    "failing": "Waiting to retry after a failure",
    "closed": "Working",
}


async def hosts_health(session: AsyncSession) -> list[HostHealth]:
    hosts: dict[str, HostHealth] = {}
    rows = await session.execute(
        select(Delivery.inbox_url, Delivery.state, func.count()).group_by(
            Delivery.inbox_url, Delivery.state
        )
    )
    for inbox, state, count in rows.all():
        host = inbox_host(inbox)
        hosts.setdefault(host, HostHealth(host)).counts[state] += count
    for row in (await session.execute(select(RemoteHost))).scalars():
        health = hosts.setdefault(row.host, HostHealth(row.host))
        health.last_success_at = row.last_success_at
        health.last_error, health.last_error_at = row.last_error, row.last_error_at
        health.circuit_open_until = row.circuit_open_until
        health.consecutive_failures = row.consecutive_failures
    return sorted(hosts.values(), key=lambda health: (-health.waiting, health.host))


# The cursor of the failed incoming activities: when each was received (newest first), then
# its id.
FAILED_KEYS: tuple[KeyKind, ...] = ("moment", "number")


async def failed_inbox_items(
    session: AsyncSession, request: PageRequest = FIRST_PAGE
) -> Page[InboxItem]:
    """A page of the incoming activities that failed, newest first (node/paging.py)."""
    keys = [InboxItem.received_at, InboxItem.id]
    statement = select(InboxItem).where(InboxItem.state == InboxItemState.FAILED)
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer))
    rows = await session.scalars(
        statement.order_by(*order(keys, request.newer)).limit(request.size + 1)
    )
    return page_of(list(rows), request, lambda item: (item.received_at, item.id))


async def retry_inbox_item(session: AsyncSession, item_id: int, now: datetime) -> bool:
    """Put a failed incoming activity back in the queue, at once."""
    item = await session.get(InboxItem, item_id)
    if item is None or item.state != "failed":
        return False
    item.state, item.next_attempt_at, item.error = InboxItemState.QUEUED, now, ""
    await session.flush()
    return True
