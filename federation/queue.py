"""The database is the queue: incoming items and outgoing deliveries, claimed with leases.

One retry policy serves both: exponential backoff with jitter from about a minute to about a
day, giving up after about three days. A worker that dies leaves only leases that expire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from sqlalchemy import or_, select

from federation.actors import ActorDirectory
from federation.client import FederationClient, FetchError
from federation.processing import Processor, Rejected, Retry
from node.runtime import NodeContext
from node.storage.models import Delivery, InboxItem, OutboxActivity

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(days=1)
GIVE_UP_AFTER = timedelta(days=3)
LEASE = timedelta(minutes=2)
POLL_SECONDS = 1.0


def retry_delay(attempts: int, rng: random.Random | None = None) -> timedelta:
    """After `attempts` failed tries: 1, 2, 4 ... minutes, capped at a day, +/-20% jitter."""
    base = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LONGEST_RETRY)
    jitter = (rng or random).uniform(0.8, 1.2)
    return base * jitter


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header (seconds or an HTTP date), bounded to the policy's range."""
    if not value:
        return None
    try:
        delay = timedelta(seconds=int(value.strip()))
    except ValueError:
        try:
            delay = parsedate_to_datetime(value) - now
        except (TypeError, ValueError):
            return None
    return min(max(delay, timedelta(seconds=1)), LONGEST_RETRY)


@dataclass
class Waker:
    event: asyncio.Event

    def __call__(self) -> None:
        self.event.set()


class Worker:
    """Runs `drain` whenever woken or every POLL_SECONDS, until stopped."""

    def __init__(self, name: str, drain: Callable[[], Awaitable[int]]) -> None:
        self.name = name
        self.drain = drain
        self.wake = Waker(asyncio.Event())
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Let the batch in hand finish (its rows then need no lease to expire), then stop;
        cancel only a batch that overruns the grace period."""
        if self._task is None:
            return
        self._stopping = True
        self.wake.event.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
        except TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while not self._stopping:
            try:
                while not self._stopping and await self.drain():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a bad row or a lost connection
                log.exception("%s failed; retrying shortly", self.name)
            try:
                await asyncio.wait_for(self.wake.event.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
            self.wake.event.clear()


class InboxQueue:
    def __init__(self, node: NodeContext, processor: Processor, batch: int = 20) -> None:
        self.node = node
        self.processor = processor
        self.batch = batch

    async def drain(self) -> int:
        """Process the due items, oldest first; answers how many were handled."""
        now = self.node.clock.now()
        async with self.node.transaction() as session:
            ids = list(
                (
                    await session.execute(
                        select(InboxItem.id)
                        .where(InboxItem.state == "queued", InboxItem.next_attempt_at <= now)
                        .order_by(InboxItem.id)
                        .limit(self.batch)
                    )
                ).scalars()
            )
        for item_id in ids:
            await self.process_one(item_id)
        return len(ids)

    async def process_one(self, item_id: int) -> None:
        now = self.node.clock.now()
        error: str | None = None
        retry = False
        try:
            async with self.node.transaction() as session:
                item = await session.get(InboxItem, item_id)
                if item is None or item.state != "queued":
                    return
                await self.processor.process(session, json.loads(item.body), now)
                item.state, item.processed_at = "done", now
        except Retry as reason:
            error, retry = str(reason), True
        except Rejected as reason:
            error = str(reason)
        except Exception as unexpected:
            log.exception("processing inbox item %s failed", item_id)
            error, retry = f"{type(unexpected).__name__}: {unexpected}", True
        if error is None:
            return
        async with self.node.transaction() as session:
            item = await session.get(InboxItem, item_id)
            if item is None:
                return
            item.attempts += 1
            item.error = error[:2000]
            if retry and now - item.received_at < GIVE_UP_AFTER:
                item.next_attempt_at = now + retry_delay(item.attempts)
            else:
                item.state = "failed"


class DeliveryQueue:
    def __init__(
        self,
        node: NodeContext,
        client: FederationClient,
        directory: ActorDirectory,
        batch: int = 64,
        per_host: int = 4,
        overall: int = 32,
    ) -> None:
        self.node = node
        self.client = client
        self.directory = directory
        self.batch = batch
        self.per_host = per_host
        self._overall = asyncio.Semaphore(overall)
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.per_host)
        )

    async def drain(self) -> int:
        now = self.node.clock.now()
        async with self.node.transaction() as session:
            statement = (
                select(Delivery)
                .where(
                    Delivery.state == "queued",
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
                )
                .order_by(Delivery.id)
                .limit(self.batch)
            )
            if self.node.engine.dialect.name == "postgresql":
                statement = statement.with_for_update(skip_locked=True)
            claimed = list((await session.execute(statement)).scalars())
            for delivery in claimed:
                delivery.locked_until = now + LEASE
            ids = [delivery.id for delivery in claimed]
        await asyncio.gather(*(self._attempt(delivery_id) for delivery_id in ids))
        return len(ids)

    async def _attempt(self, delivery_id: int) -> None:
        async with self.node.transaction() as session:
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None or delivery.state != "queued":
                return
            activity = await session.get(OutboxActivity, delivery.activity_id)
            assert activity is not None
            key_id = self.directory_key_id(activity)
            signer = await self.directory.signer(session, activity.signer, key_id)
            inbox, body = delivery.inbox_url, activity.body.encode()
        host = urlsplit(inbox).netloc
        status, text, headers, error, final = None, "", {}, "", False
        async with self._overall, self._hosts[host]:
            try:
                status, text, headers = await self.client.post_signed(
                    inbox, body, signer, self.node.clock.now()
                )
            except FetchError as failure:
                error, final = str(failure), failure.kind == "refused"
        await self._record(delivery_id, status, text, headers, error, final)

    def directory_key_id(self, activity: OutboxActivity) -> str:
        return activity.actor_iri + "#main-key"

    async def _record(
        self,
        delivery_id: int,
        status: int | None,
        text: str,
        headers: dict[str, str],
        error: str,
        final: bool = False,
    ) -> None:
        now = self.node.clock.now()
        async with self.node.transaction() as session:
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None:
                return
            delivery.attempts += 1
            delivery.updated_at = now
            delivery.locked_until = None
            delivery.last_status = status
            if status is not None and 200 <= status < 300:
                delivery.state, delivery.last_error = "delivered", ""
                return
            delivery.last_error = (error or f"HTTP {status}: {text[:500]}")[:2000]
            if status == 410:
                delivery.state = "abandoned"  # the recipient is gone
            elif final:
                delivery.state = "failed"  # an address this node never sends to
            elif status is not None and 400 <= status < 500 and status not in (408, 429):
                delivery.state = "failed"  # refused for good; the reason is kept
            elif now - delivery.created_at >= GIVE_UP_AFTER:
                delivery.state = "abandoned"
            else:
                wait = (
                    retry_after(headers.get("Retry-After"), now) if status in (429, 503) else None
                )
                delivery.next_attempt_at = now + (wait or retry_delay(delivery.attempts))
