"""The database is the queue: incoming items and outgoing deliveries, claimed with leases.

One retry policy serves both: exponential backoff with jitter from about a minute to about a
day, giving up after about three days. A worker that dies leaves only leases that expire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import Delete, Row, Select, and_, event, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, Session

from federation.actors import ActorDirectory
from federation.client import FederationClient, FetchError, Signer
from federation.metrics import FederationMetrics
from federation.outbox import POST_DELETED, REFUSED_BY_POLICY
from federation.prefetch import NeedsFetch, Prefetcher, Wanted, wanted_text
from federation.processing import MAX_ANCESTOR_FETCHES, Processor, Rejected, Retry
from federation.replies import CLAIM, BatchedReplies
from keys.pairs import SealedKeyError
from node import addresses, ids, professionals, qa, remote
from node.events import PENDING_EVENTS
from node.runtime import NodeContext
from node.storage.models import Delivery, InboxItem, OutboxActivity, RemoteHost
from node.storage.states import (
    DELIVERY,
    INBOX_ITEM,
    RETRIES,
    DeliveryState,
    InboxItemState,
    StateGraph,
)

log = logging.getLogger(__name__)

FIRST_RETRY = RETRIES.first
LONGEST_RETRY = RETRIES.longest
GIVE_UP_AFTER = RETRIES.give_up_after
LEASE = DELIVERY.lease[DeliveryState.IN_FLIGHT]
POLL_SECONDS = 1.0
PRUNE_EVERY = timedelta(minutes=10)
QUEUED, IN_FLIGHT = DeliveryState.QUEUED, DeliveryState.IN_FLIGHT
QUEUED_ITEM = InboxItemState.QUEUED


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
        seconds = int(value.strip())
        delay = timedelta(seconds=max(-1, min(seconds, int(LONGEST_RETRY.total_seconds()))))
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
    """Runs `drain` whenever woken or every POLL_SECONDS, until stopped.

    With `pace`, a drain that handled fewer than `full` rows is followed by the next one no
    sooner than `pace` seconds after it began: under a steady stream, batches then gather
    what arrives meanwhile instead of costing a transaction for every few rows."""

    def __init__(
        self,
        name: str,
        drain: Callable[[], Awaitable[int]],
        pace: float = 0.0,
        full: int = 0,
    ) -> None:
        self.name = name
        self.drain = drain
        self.pace = pace
        self.full = full
        self.wake = Waker(asyncio.Event())
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

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
                while not self._stopping:
                    began = time.monotonic()
                    handled = await self.drain()
                    if not handled:
                        break
                    if handled < self.full:
                        await asyncio.sleep(max(0.0, began + self.pace - time.monotonic()))
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must survive a bad row or a lost connection
                log.exception("%s failed; retrying shortly", self.name)
            try:
                await asyncio.wait_for(self.wake.event.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
            self.wake.event.clear()


class Pruner:
    """Removes rows whose retention has passed, at most every PRUNE_EVERY: a table's finished
    rows once their state's retention (its state graph) has passed, and any other expired
    rows it is given (`also`, a DELETE for a time): the queue stays small."""

    def __init__(
        self,
        node: NodeContext,
        graph: StateGraph[Any],
        model: Any,
        finished_at: InstrumentedAttribute[datetime],
        also: tuple[Callable[[datetime], Delete], ...] = (),
    ) -> None:
        self.node = node
        self.graph = graph
        self.model = model
        self.finished_at = finished_at
        self.also = also
        self._pruned_at: datetime | None = None

    async def __call__(self, now: datetime) -> None:
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        async with self.node.transaction() as session:
            await session.execute(self.graph.prune(self.model, self.finished_at, now))
            for expired in self.also:
                await session.execute(expired(now))


class Housekeeping:
    """Node-wide chores that belong to no queue: at most every PRUNE_EVERY, client addresses
    past the node's retention (node/addresses.py) are purged and professional verifications
    that expired are announced with an actor Update (node/professionals.py); on every poll,
    expert Q&As whose window ended are locked (node/qa.py). Run by its own worker in whichever
    process runs the workers (`healthnode worker`, or `serve` without --no-workers)."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._purged_at: datetime | None = None

    async def drain(self) -> int:
        now = self.node.clock.now()
        await self._close_ended_qas(now)
        if self._purged_at is not None and now - self._purged_at < PRUNE_EVERY:
            return 0
        self._purged_at = now
        async with self.node.transaction() as session:
            purged = await addresses.purge_expired_addresses(
                session, now, self.node.settings.address_retention
            )
        if purged:
            log.info("purged %d client addresses past their retention", purged)
        async with self.node.transaction() as session:
            expired = await professionals.announce_expired(session, now)
        if expired:
            log.info("announced %d expired professional verifications", expired)
        return 0  # nothing queued waits on it: the worker polls again later

    async def _close_ended_qas(self, now: datetime) -> None:
        """Lock the threads of expert Q&As whose window ended (node/qa.py), looking first
        in a reading transaction so that an idle node takes no write lock for it."""
        async with self.node.transaction(reading=True) as session:
            if not await qa.any_to_close(session, now):
                return
        async with self.node.transaction() as session:
            closed = await qa.close_ended(session, now)
        log.info("locked the threads of %d expert Q&As whose window ended", closed)


# Fetches between transactions that one item may need, at most: enough for an announced
# reply (the Create by id, its object, its author) whose MAX_ANCESTOR_FETCHES missing
# ancestors and their authors are fetched too. An item that wants more fails for good.
MAX_FETCH_ROUNDS = 2 * MAX_ANCESTOR_FETCHES + 4


class InboxQueue:
    """Processes stored incoming activities. A write transaction never waits on the network:
    an item that needs something fetched is left queued, the batch commits, the fetch runs
    with no transaction open, and the item is processed again at once."""

    def __init__(
        self,
        node: NodeContext,
        processor: Processor,
        prefetcher: Prefetcher,
        batch: int = 20,
        metrics: FederationMetrics | None = None,
    ) -> None:
        self.node = node
        self.metrics = metrics or FederationMetrics()
        self.processor = processor
        self.prefetcher = prefetcher
        self.batch = batch
        # The fast path: runs of plain replies in a batch are processed together.
        self.replies = BatchedReplies(node, processor)
        # Processed items are kept a while (failed ones longer, for admins), then removed.
        self._prune = Pruner(
            node, INBOX_ITEM, InboxItem, InboxItem.received_at, also=(remote.expired_deletions,)
        )  # tombstones of posts deleted before they arrived expire too
        # Items waiting for a fetch: how many rounds so far, and the fetch generation when
        # they first asked (what they use must be newer).
        self._fetch_rounds: dict[int, int] = {}
        self._asked_at: dict[int, int] = {}

    async def drain(self) -> int:
        """Process due items, oldest first, a batch per transaction: runs of plain replies
        together (federation/replies.py), every other item in a savepoint of its own; answers
        how many were claimed. Should the batch's transaction itself fail, its items are
        processed one per transaction instead."""
        await self._prune(self.node.clock.now())
        # Processing asks the policy without waiting (Processor.blocked): read it fresh here.
        await self.node.federation_policy.current()
        try:
            return await self._process_batch()
        except DBAPIError:
            log.warning("processing a batch of inbox items together failed; one by one")
        now = self.node.clock.now()
        async with self.node.transaction(reading=True) as session:
            ids = list(
                (await session.execute(self._due(now).with_only_columns(InboxItem.id))).scalars()
            )
        for item_id in ids:
            await self.process_one(item_id)
        return len(ids)

    def _due(self, now: datetime) -> Select[tuple[InboxItem]]:
        statement = (
            select(InboxItem)
            .where(InboxItem.state == QUEUED_ITEM, InboxItem.next_attempt_at <= now)
            .order_by(InboxItem.id)
            .limit(self.batch)
        )
        # Locked until the batch commits: another worker skips these, never doubles them.
        return statement.with_for_update(skip_locked=True)

    async def _process_batch(self) -> int:
        now = self.node.clock.now()
        waiting: dict[int, Wanted] = {}
        outcomes: list[str] = []  # counted once the batch has committed
        settled_together = self.replies.settled
        async with self.node.transaction() as session:
            _keep_loaded_rows(session)
            items = list((await session.execute(self._due(now).limit(CLAIM))).scalars())
            async for item in self.replies.left_over(session, items, now, self.batch):
                error, retry = await self._process_in_savepoint(session, item, now)
                if isinstance(error, NeedsFetch):
                    # Left queued, untouched, and so is every later item of the batch: one
                    # may depend on this one (a Like of the post it creates), and arrival
                    # order is kept.
                    waiting[item.id] = error.wanted
                    break
                else:
                    self._forget(item.id)
                    if error is None:
                        item.state, item.processed_at = InboxItemState.DONE, now
                        outcomes.append("processed")
                    else:
                        outcomes.append(self._failed(item, error, retry, now))
        self.metrics.count_inbox("processed", self.replies.settled - settled_together)
        for outcome in outcomes:
            self.metrics.count_inbox(outcome)
        await self._fetch_for(waiting, now)
        await self.prefetcher.refresh_stale(now)
        return len(items)

    async def _fetch_for(self, waiting: dict[int, Wanted], now: datetime) -> None:
        """Fetch what waiting items need, no transaction open; an item whose fetch fails is
        retried later or fails as processing would have, and one that keeps needing more
        than MAX_FETCH_ROUNDS fails for good (another attempt would fetch as much again)."""
        if not waiting:
            return
        if len(self._fetch_rounds) > 10_000:  # left by items another worker finished
            self._fetch_rounds.clear()
            self._asked_at.clear()
        failures: dict[int, tuple[str, bool]] = {}
        for item_id, wanted in waiting.items():
            self._asked_at.setdefault(item_id, self.processor.fetched.generation)
            rounds = self._fetch_rounds.get(item_id, 0) + 1
            self._fetch_rounds[item_id] = rounds
            if rounds > MAX_FETCH_ROUNDS:
                failures[item_id] = (
                    f"still {wanted_text(wanted)} after {rounds - 1} fetches",
                    False,
                )
        asked = {wanted for item_id, wanted in waiting.items() if item_id not in failures}
        failed = await self.prefetcher.fetch(asked, now)
        for item_id, wanted in waiting.items():
            if wanted in failed:
                error = failed[wanted]
                failures[item_id] = (str(error), error.kind == "unavailable")
        if failures:
            outcomes = []
            async with self.node.transaction() as session:
                for item_id, (error_text, retry) in failures.items():
                    self._forget(item_id)
                    item = await self._queued_item(session, item_id)
                    if item is not None:
                        outcomes.append(self._failed(item, error_text, retry, now))
            for outcome in outcomes:
                self.metrics.count_inbox(outcome)

    async def _queued_item(self, session: AsyncSession, item_id: int) -> InboxItem | None:
        """The item, locked, if it is still queued (another worker may have finished it)."""
        claim = (
            select(InboxItem)
            .where(InboxItem.id == item_id, InboxItem.state == QUEUED_ITEM)
            .with_for_update(skip_locked=True)
        )
        return (await session.execute(claim)).scalar_one_or_none()

    async def _apply(self, session: AsyncSession, item: InboxItem, now: datetime) -> None:
        """Process one stored item, with what was fetched for it and the group it came to."""
        await self.processor.process(
            session,
            json.loads(item.body),
            now,
            self._asked_at.get(item.id),
            item.addressed_group_id,
        )

    def _forget(self, item_id: int) -> None:
        self._fetch_rounds.pop(item_id, None)
        self._asked_at.pop(item_id, None)

    async def _process_in_savepoint(
        self, session: AsyncSession, item: InboxItem, now: datetime
    ) -> tuple[str | NeedsFetch | None, bool]:
        """(error, retry): what processing one item inside the batch came to; the error is a
        NeedsFetch when it waits for the network. Its changes and the events they recorded
        are kept only when it succeeds."""
        events_before = list(session.info.get(PENDING_EVENTS, []))
        outcome: str | NeedsFetch
        try:
            async with session.begin_nested():
                await self._apply(session, item, now)
                await self.node.publish_pending(session)
            return None, False
        except NeedsFetch as needs:
            outcome, retry = needs, False
        except Retry as reason:
            outcome, retry = str(reason), True
        except Rejected as reason:
            outcome, retry = str(reason), False
        except DBAPIError:
            raise  # the batch's transaction may be unusable: the caller goes one by one
        except Exception as unexpected:
            log.exception("processing inbox item %s failed", item.id)
            outcome, retry = f"{type(unexpected).__name__}: {unexpected}", True
        session.info[PENDING_EVENTS] = events_before
        return outcome, retry

    def _failed(self, item: InboxItem, error: str, retry: bool, now: datetime) -> str:
        """Record a failed attempt; answers the outcome, "retry" or "failed"."""
        item.attempts += 1
        item.error = error[:2000]
        if retry and now - item.received_at < GIVE_UP_AFTER:
            item.next_attempt_at = now + retry_delay(item.attempts)
            return "retry"
        item.state = InboxItemState.FAILED
        return "failed"

    async def process_one(self, item_id: int) -> None:
        now = self.node.clock.now()
        error: str | None = None
        retry = False
        try:
            async with self.node.transaction() as session:
                item = await self._queued_item(session, item_id)
                if item is None:
                    return
                await self._apply(session, item, now)
                item.state, item.processed_at = InboxItemState.DONE, now
            self.metrics.count_inbox("processed")
        except NeedsFetch as needs:
            await self._fetch_for({item_id: needs.wanted}, now)
            return
        except Retry as reason:
            error, retry = str(reason), True
        except Rejected as reason:
            error = str(reason)
        except Exception as unexpected:
            log.exception("processing inbox item %s failed", item_id)
            error, retry = f"{type(unexpected).__name__}: {unexpected}", True
        self._forget(item_id)
        if error is None:
            return
        outcome = ""
        async with self.node.transaction() as session:
            item = await self._queued_item(session, item_id)
            if item is not None:
                outcome = self._failed(item, error, retry, now)
        if outcome:
            self.metrics.count_inbox(outcome)


def _keep_loaded_rows(session: AsyncSession) -> None:
    """Hold every row the batch loads until the batch ends. The session's identity map only
    holds rows weakly, and the items of a batch keep asking for the same group, thread and
    authors by key: held, those are answered from memory instead of by a query each."""
    held: list[object] = session.info.setdefault(HELD_ROWS, [])

    def hold(_session: Session, instance: object) -> None:
        held.append(instance)

    event.listen(session.sync_session, "loaded_as_persistent", hold)


HELD_ROWS = "healthnode.held_rows"


@dataclass(frozen=True)
class Claim:
    """A delivery this worker holds until `claimed_until`, with what it is to send."""

    delivery_id: int
    host: str
    inbox_url: str
    activity_id: str
    body: bytes
    signer: Signer
    claimed_until: datetime
    read_at: float  # time.monotonic() when `body` was read
    failures_seen: int = 0  # the host's consecutive_failures when this was claimed
    probe: bool = False  # sent through a half-open circuit


ClaimedRow = Row[tuple[int, str, str, str]]  # Delivery (id, host, inbox_url, activity_id)


@dataclass
class Outcome:
    """What one delivery attempt got: an answer (status, text, headers) or an error."""

    delivery_id: int
    host: str = ""
    status: int | None = None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    final: bool = False
    abandoned: str = ""  # not sent, for this reason (no answer to record)
    failures_seen: int = 0
    probe: bool = False
    lease: datetime | None = None  # the claim's lease: the result is this worker's to record


CIRCUIT_THRESHOLD = 3  # failures in a row, each after the last was recorded, open the circuit
PROBE_STEP = timedelta(seconds=15)
LONGEST_PROBE = timedelta(minutes=30)
RETENTION = DELIVERY.retention[DeliveryState.DELIVERED]


class DeliveryQueue:
    def __init__(
        self,
        node: NodeContext,
        client: FederationClient,
        directory: ActorDirectory,
        batch: int = 64,
        per_host: int = 8,
        overall: int = 64,
        body_fresh_seconds: float = 1.0,
        metrics: FederationMetrics | None = None,
    ) -> None:
        self.node = node
        self.metrics = metrics or FederationMetrics()
        # A claimed delivery that waits longer than this for a send slot reads its activity
        # again: if its post was deleted meanwhile, it is abandoned instead of sent.
        self.body_fresh_seconds = body_fresh_seconds
        self.client = client
        self.directory = directory
        self.batch = batch
        self.per_host = per_host
        self._overall = asyncio.Semaphore(overall)
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.per_host)
        )
        # Finished deliveries are kept a while, then removed.
        self._prune = Pruner(node, DELIVERY, Delivery, Delivery.updated_at)
        self._swept_at: datetime | None = None
        self._recovered = False

    async def drain(self) -> int:
        """Claim due deliveries (and those whose worker died) of hosts whose circuit is
        closed, plus one probe for each host whose circuit has half opened, and attempt them
        concurrently within the per-host and overall limits."""
        if not self._recovered:
            self._recovered = True
            await self.recover()
        now = self.node.clock.now()
        await self._prune(now)
        await self._give_up(now)
        async with self.node.transaction() as session:
            lease_end = now + LEASE
            claimed = await self._due(session, now)
            circuits = await self._circuits(session, {delivery.host for delivery in claimed})
            # Read before a probe is chosen: a failure counts only if none was recorded
            # since its attempt was claimed.
            evidence = {name: row.consecutive_failures for name, row in circuits.items()}
            probes = await self._probes(session, now, lease_end)
            probe_ids = {probe.id for probe in probes}
            # Due deliveries to a half-open host wait for its probe, keeping their schedule.
            half_open = {name for name, row in circuits.items() if row.circuit_open_until}
            held_back = [d.id for d in claimed if d.host in half_open and d.id not in probe_ids]
            sending = [d for d in claimed if d.host not in half_open and d.id not in probe_ids]
            sending.extend(probes)
            if held_back:
                await session.execute(
                    DELIVERY.update(Delivery, [IN_FLIGHT], QUEUED, locked_until=None).where(
                        Delivery.id.in_(held_back)
                    )
                )
            if sending:
                await session.execute(
                    DELIVERY.update(
                        Delivery, [QUEUED, IN_FLIGHT], IN_FLIGHT, locked_until=lease_end
                    ).where(Delivery.id.in_([delivery.id for delivery in sending]))
                )
            # What each claimed delivery sends is read here, once per activity and signer,
            # not once per delivery: a batch usually holds one or two activities.
            claims = await self._claims(session, sending, lease_end, evidence, probe_ids)
        self.metrics.count_delivery("failed", len(sending) - len(claims))  # unsignable
        outcomes = await asyncio.gather(*(self._attempt(claim) for claim in claims))
        await self._record_all([outcome for outcome in outcomes if outcome is not None])
        return len(sending)

    async def _give_up(self, now: datetime) -> None:
        """Deliveries still queued a retry interval past the give-up period end as abandoned:
        those that waited behind an open circuit all along and were never attempted again
        (any other would have been attempted, and abandoned, by then)."""
        if self._swept_at is not None and now - self._swept_at < PRUNE_EVERY:
            return
        self._swept_at = now
        async with self.node.transaction() as session:
            given_up = await session.execute(
                DELIVERY.update(
                    Delivery,
                    [QUEUED],
                    DeliveryState.ABANDONED,
                    updated_at=now,
                    last_error=f"no answer for {GIVE_UP_AFTER.days} days",
                ).where(Delivery.created_at < now - GIVE_UP_AFTER - LONGEST_RETRY * 1.25)
            )
        self.metrics.count_delivery("abandoned", _rows(given_up))

    async def _due(self, session: AsyncSession, now: datetime) -> list[ClaimedRow]:
        """Due deliveries, earliest schedule first, except to hosts whose circuit is open:
        those wait untouched, each keeping its own schedule. Deliveries whose worker died
        (their lease expired) are due again."""
        circuit_open = select(RemoteHost.host).where(RemoteHost.circuit_open_until > now)
        statement = (
            select(Delivery.id, Delivery.host, Delivery.inbox_url, Delivery.activity_id)
            .where(
                or_(
                    and_(Delivery.state == QUEUED, Delivery.next_attempt_at <= now),
                    and_(Delivery.state == IN_FLIGHT, Delivery.locked_until < now),
                ),
                Delivery.host.not_in(circuit_open),
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(self.batch)
        )
        if self.node.engine.dialect.name == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        return list((await session.execute(statement)).all())

    async def _probes(
        self, session: AsyncSession, now: datetime, lease_end: datetime
    ) -> list[ClaimedRow]:
        """For each host whose circuit has half opened, the one delivery that probes it: the
        queued delivery with the earliest schedule, due or not (a recovered host should not
        wait for some delivery's own back-off to find out). The circuit stays shut to every
        other delivery until the probe's lease ends."""
        waiting = (
            select(Delivery.id)
            .where(Delivery.host == RemoteHost.host, Delivery.state == QUEUED)
            .exists()
        )
        half_open = (
            select(RemoteHost)
            .where(RemoteHost.circuit_open_until <= now, waiting)
            .order_by(RemoteHost.circuit_open_until)
            .limit(self.batch)
        )
        if self.node.engine.dialect.name == "postgresql":
            half_open = half_open.with_for_update(skip_locked=True)
        probes = []
        for host in (await session.execute(half_open)).scalars():
            first = (
                select(Delivery.id, Delivery.host, Delivery.inbox_url, Delivery.activity_id)
                .where(Delivery.host == host.host, Delivery.state == QUEUED)
                .order_by(Delivery.next_attempt_at, Delivery.id)
                .limit(1)
            )
            if self.node.engine.dialect.name == "postgresql":
                first = first.with_for_update(skip_locked=True)
            probe = (await session.execute(first)).first()
            if probe is not None:
                host.circuit_open_until = lease_end
                probes.append(probe)
        return probes

    async def _claims(
        self,
        session: AsyncSession,
        deliveries: list[ClaimedRow],
        claimed_until: datetime,
        evidence: dict[str, int],
        probe_ids: set[int],
    ) -> list[Claim]:
        if not deliveries:
            return []
        activity_ids = {delivery.activity_id for delivery in deliveries}
        activities = {
            activity.id: activity
            for activity in (
                await session.execute(
                    select(OutboxActivity).where(OutboxActivity.id.in_(activity_ids))
                )
            ).scalars()
        }
        signers: dict[tuple[str, str], Signer | str] = {}
        claims, unsignable = [], []
        read_at = time.monotonic()
        for delivery in deliveries:
            activity = activities[delivery.activity_id]
            signed_by = (activity.signer, ids.key_id(activity.actor_iri))
            if signed_by not in signers:
                try:
                    signers[signed_by] = await self.directory.signer(session, *signed_by)
                except (LookupError, SealedKeyError) as error:
                    signers[signed_by] = f"no key to sign with: {error}"
            signer = signers[signed_by]
            if isinstance(signer, str):
                unsignable.append((delivery.id, signer))
                continue
            claims.append(
                Claim(
                    delivery_id=delivery.id,
                    host=delivery.host,
                    inbox_url=delivery.inbox_url,
                    activity_id=delivery.activity_id,
                    body=activity.body.encode(),
                    signer=signer,
                    claimed_until=claimed_until,
                    read_at=read_at,
                    failures_seen=evidence.get(delivery.host, 0),
                    probe=delivery.id in probe_ids,
                )
            )
        # A delivery nothing here can sign fails for good with its reason; the rest go on.
        for delivery_id, reason in unsignable:
            await session.execute(
                DELIVERY.update(
                    Delivery,
                    [IN_FLIGHT],
                    DeliveryState.FAILED,
                    locked_until=None,
                    last_error=reason[:2000],
                    updated_at=claimed_until - LEASE,  # the claim's time
                ).where(Delivery.id == delivery_id)
            )
        return claims

    async def recover(self) -> int:
        """At start-up on SQLite, which runs one worker process by design, nothing can still
        be in flight: deliveries a killed process had claimed go back to the queue at once
        instead of waiting for their leases. (On PostgreSQL other workers may be alive, so
        leases expire instead.)"""
        if self.node.engine.dialect.name != "sqlite":
            return 0
        async with self.node.transaction() as session:
            result = await session.execute(
                DELIVERY.update(Delivery, [IN_FLIGHT], QUEUED, locked_until=None)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _circuits(self, session: AsyncSession, hosts: set[str]) -> dict[str, RemoteHost]:
        if not hosts:
            return {}
        rows = await session.execute(select(RemoteHost).where(RemoteHost.host.in_(hosts)))
        return {row.host: row for row in rows.scalars()}

    async def _attempt(self, claim: Claim) -> Outcome | None:
        """Send one claimed delivery; what happened is recorded with the batch's others."""
        async with self._overall, self._hosts[claim.host]:
            body = claim.body
            # Waiting for a slot may have eaten into the lease: then renew it, and send only
            # if it is still ours. Within the first half of the lease no one else can hold it.
            lease = claim.claimed_until
            waited_long = self.node.clock.now() > lease - LEASE / 2
            if waited_long or time.monotonic() - claim.read_at > self.body_fresh_seconds:
                # Read what is sent again: a post may have been deleted meanwhile.
                async with self.node.transaction(reading=not waited_long) as session:
                    if waited_long:
                        renewed = await self._renew(session, claim)
                        if renewed is None:
                            return None  # another worker has claimed it meanwhile
                        lease = renewed
                    current = await session.get(OutboxActivity, claim.activity_id)
                    if current is None or current.type == "Tombstone":
                        # Its post was deleted meanwhile: nothing of it is sent any more.
                        return Outcome(
                            claim.delivery_id, claim.host, abandoned=POST_DELETED, lease=lease
                        )
                    body = current.body.encode()
            if not (await self.node.federation_policy.current()).permits(claim.inbox_url):
                # Queued before the policy refused its server: it is never sent.
                return Outcome(
                    claim.delivery_id, claim.host, abandoned=REFUSED_BY_POLICY, lease=lease
                )
            outcome = Outcome(
                claim.delivery_id,
                claim.host,
                failures_seen=claim.failures_seen,
                probe=claim.probe,
                lease=lease,
            )
            try:
                # Signed on each attempt: a fresh Date every time.
                outcome.status, outcome.text, outcome.headers = await self.client.post_signed(
                    claim.inbox_url, body, claim.signer, self.node.clock.now()
                )
            except FetchError as failure:
                outcome.error, outcome.final = str(failure), failure.kind == "refused"
            return outcome

    async def _renew(self, session: AsyncSession, claim: Claim) -> datetime | None:
        """A new lease for a claim still held, or None if another worker has taken it."""
        lease = self.node.clock.now() + LEASE
        renewed = await session.execute(
            update(Delivery)
            .where(
                Delivery.id == claim.delivery_id,
                Delivery.state == IN_FLIGHT,
                Delivery.locked_until == claim.claimed_until,
            )
            .values(locked_until=lease)
        )
        return lease if getattr(renewed, "rowcount", 0) else None

    async def _record_all(self, outcomes: list[Outcome]) -> None:
        """One transaction for a batch's results: group commit keeps the write lock brief.

        Host rows are locked in host order, so that workers recording at once never wait on
        each other in a circle; should the database still refuse the batch (a deadlock or
        serialisation failure), each result is recorded on its own."""
        if not outcomes:
            return
        try:
            async with self.node.transaction() as session:
                recorded = await self._record(session, outcomes)
        except DBAPIError:
            log.warning("recording %d delivery results together failed; one by one", len(outcomes))
            recorded = Counter()
            for outcome in outcomes:
                async with self.node.transaction() as session:
                    recorded += await self._record(session, [outcome])
        for name, times in recorded.items():
            self.metrics.count_delivery(name, times)

    async def _record(self, session: AsyncSession, outcomes: list[Outcome]) -> Counter[str]:
        """Record a batch's results; answers how many reached each outcome (for metrics)."""
        recorded: Counter[str] = Counter()
        now = self.node.clock.now()
        hosts = await self._hosts_locked(session, {outcome.host for outcome in outcomes})
        delivered = [outcome for outcome in outcomes if _succeeded(outcome)]
        for outcome in delivered:
            host = hosts[outcome.host]
            await self._host_answered(session, host, now)
            host.last_success_at = now
        # Most attempts succeed: one statement per answer status (and lease) for all of them.
        # A row whose lease another worker has taken since is its to record, not ours.
        for status, lease in sorted(
            {(outcome.status, outcome.lease) for outcome in delivered if outcome.status},
            key=lambda pair: (pair[0] or 0, pair[1] or now),
        ):
            ids = [
                outcome.delivery_id
                for outcome in delivered
                if outcome.status == status and outcome.lease == lease
            ]
            done = dict(updated_at=now, locked_until=None, last_error="")
            result = await session.execute(
                DELIVERY.update(Delivery, [IN_FLIGHT], DeliveryState.DELIVERED, **done)
                .where(Delivery.id.in_(ids), Delivery.locked_until == lease)
                .values(attempts=Delivery.attempts + 1, last_status=status)
                .execution_options(synchronize_session=False)
            )
            recorded["delivered"] += _rows(result)
        failed = [outcome for outcome in outcomes if not _succeeded(outcome)]
        if not failed:
            return recorded
        ids = [outcome.delivery_id for outcome in failed]
        deliveries = {
            delivery.id: delivery
            for delivery in (
                await session.execute(select(Delivery).where(Delivery.id.in_(ids)))
            ).scalars()
        }
        for outcome in sorted(failed, key=lambda item: (item.host, item.delivery_id)):
            delivery = deliveries.get(outcome.delivery_id)
            still_ours = (
                delivery is not None
                and delivery.state == IN_FLIGHT
                and delivery.locked_until == outcome.lease
            )
            if delivery is not None and still_ours:
                await self._apply(session, delivery, hosts[outcome.host], outcome, now)
                recorded[OUTCOME_OF[DeliveryState(delivery.state)]] += 1
        return recorded

    async def _apply(
        self,
        session: AsyncSession,
        delivery: Delivery,
        host: RemoteHost,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        delivery.updated_at, delivery.locked_until = now, None
        if outcome.abandoned:
            delivery.state, delivery.last_error = DeliveryState.ABANDONED, outcome.abandoned
            return
        status, text, headers = outcome.status, outcome.text, outcome.headers
        error, final = outcome.error, outcome.final
        delivery.attempts += 1
        delivery.last_status = status
        delivery.last_error = (error or f"HTTP {status}: {text[:500]}")[:2000]
        host.last_error, host.last_error_at = delivery.last_error, now
        unreachable = status is None or status >= 500 or status in (408, 429)
        if unreachable and not final:
            asked = retry_after(headers.get("Retry-After"), now) if status in (429, 503) else None
            _host_failed(host, outcome, now, asked)
        else:
            # It answered: the host itself is up, whatever it thought of this delivery.
            await self._host_answered(session, host, now)
        if status == 410:
            delivery.state = DeliveryState.ABANDONED  # the recipient is gone
            await remote.inbox_gone(session, delivery.inbox_url)
        elif final:
            delivery.state = DeliveryState.FAILED  # an address this node never sends to
        elif status is not None and 400 <= status < 500 and status not in (408, 429):
            delivery.state = DeliveryState.FAILED  # refused for good; the reason is kept
        elif now - delivery.created_at >= GIVE_UP_AFTER:
            delivery.state = DeliveryState.ABANDONED
        else:
            wait = retry_after(headers.get("Retry-After"), now) if status in (429, 503) else None
            delivery.state = QUEUED
            delivery.next_attempt_at = now + (wait or retry_delay(delivery.attempts))

    async def _host_answered(self, session: AsyncSession, host: RemoteHost, now: datetime) -> None:
        """The host is up. If its circuit was open, every delivery waiting for it is due at
        once: a recovered server gets its backlog now, not at each delivery's own back-off."""
        if host.circuit_open_until is not None:
            await session.execute(
                update(Delivery)
                .where(
                    Delivery.host == host.host,
                    Delivery.state == QUEUED,
                    Delivery.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
                .execution_options(synchronize_session=False)
            )
        host.consecutive_failures, host.circuit_open_until = 0, None

    async def _hosts_locked(self, session: AsyncSession, names: set[str]) -> dict[str, RemoteHost]:
        """The hosts' rows, locked in host order until commit: concurrent workers must not lose
        counts, nor wait on each other in a circle. Rows are created on first contact."""
        locked = (
            select(RemoteHost)
            .where(RemoteHost.host.in_(names))
            .order_by(RemoteHost.host)
            .with_for_update()
        )
        found = {row.host: row for row in (await session.execute(locked)).scalars()}
        for name in sorted(names - found.keys()):
            found[name] = await self._host(session, name)
        return found

    async def _host(self, session: AsyncSession, host: str) -> RemoteHost:
        """The host's row, locked until commit: concurrent attempts must not lose counts."""
        locked = select(RemoteHost).where(RemoteHost.host == host).with_for_update()
        row = (await session.execute(locked)).scalar_one_or_none()
        if row is None:
            try:
                async with session.begin_nested():
                    row = RemoteHost(host=host, consecutive_failures=0, last_error="")
                    session.add(row)
            except IntegrityError:  # another worker recorded this host first
                row = (await session.execute(locked)).scalar_one_or_none()
        assert row is not None
        return row


def _host_failed(
    host: RemoteHost, outcome: Outcome, now: datetime, asked: timedelta | None
) -> None:
    """One failed attempt as evidence about its host. Attempts that were in flight together
    are one piece of evidence: a failure counts only if no other was counted since this
    attempt was claimed. While the circuit is open only its probe is sent, so the back-off
    grows per failed probe, never per delivery in flight."""
    if outcome.failures_seen != host.consecutive_failures and not outcome.probe:
        return
    host.consecutive_failures += 1
    if host.consecutive_failures >= CIRCUIT_THRESHOLD:
        wait = probe_interval(host.consecutive_failures - CIRCUIT_THRESHOLD)
        host.circuit_open_until = now + max(wait, min(asked or wait, LONGEST_PROBE))


def probe_interval(failed_probes: int) -> timedelta:
    """How long an open circuit waits before its next probe: 15 s, 30 s, 45 s ... growing by
    a step per failed probe up to half an hour, +/-10% jitter. An outage of five minutes is
    noticed over within about two; one of a day within half an hour."""
    base = min(PROBE_STEP * (failed_probes + 1), LONGEST_PROBE)
    return base * random.uniform(0.9, 1.1)


# A failed attempt's outcome, by the state it left its delivery in.
OUTCOME_OF = {
    DeliveryState.QUEUED: "retry",
    DeliveryState.FAILED: "failed",
    DeliveryState.ABANDONED: "abandoned",
}


def _rows(result: Any) -> int:
    """How many rows an UPDATE changed."""
    return int(getattr(result, "rowcount", 0) or 0)


def _succeeded(outcome: Outcome) -> bool:
    return outcome.status is not None and 200 <= outcome.status < 300
