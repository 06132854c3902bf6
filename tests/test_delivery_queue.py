"""The delivery queue against real receivers: retries, give-up, circuit breaker, leases, pruning.

The node under test never runs its workers: each test calls `drain()` itself, and the node's
ManualClock alone decides what is due, so no test sleeps. The receivers are real aiohttp
servers on loopback ports that answer as each test scripts them (a status, a Retry-After, or a
hang past the client's timeout) and record every request, whose signature is checked here by
hand against the instance actor's public key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import select

from federation.client import ClientLimits, FederationClient
from federation.knock import CAVAGE, REMEMBER_FOR, RFC9421, SignaturePreference, origin_of
from federation.origins import received_origin
from federation.queue import (
    CIRCUIT_THRESHOLD,
    GIVE_UP_AFTER,
    LEASE,
    LONGEST_RETRY,
    PROBE_STEP,
    PRUNE_EVERY,
    RETENTION,
    DeliveryQueue,
    Outcome,
)
from federation.service import Federation
from node import groups, members, posts, remote
from node.actor_keys import INSTANCE_ACTOR
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import ActorKey, Delivery, OutboxActivity, RemoteHost
from tests.clock import ManualClock
from tests.conftest import NodeFactory
from tests.databases import BACKEND
from tests.federation_harness import eventually, free_port
from tests.peers import signature_family

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
CAVAGE_ONLY = frozenset({"draft-cavage"})


# ---------------------------------------------------------------- receivers


@dataclass
class Answer:
    """What a receiver says to one POST; `hang` holds the request until the test ends."""

    status: int = 202
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Receiver:
    """Another server's inboxes: answers from `script` in turn, then `default` forever.

    It reads the signature families in `accepts`, by shape (draft-cavage only by default, as
    most of the fediverse today): a POST signed otherwise is answered 401 at once, before the
    script, and kept in `refused`; the sender then knocks again (federation/knock.py), and
    `received` and `count` are what the receiver took in and answered from its script."""

    def __init__(self, default: Answer, accepts: frozenset[str] = CAVAGE_ONLY) -> None:
        self.default = default
        self.accepts = accepts
        self.script: list[Answer] = []
        self.received: list[Received] = []
        self.refused: list[Received] = []
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        if signature_family(headers) not in self.accepts:
            self.refused.append(Received(request.path_qs, headers, body))
            return web.json_response({"error": "signature not understood"}, status=401)
        self.received.append(Received(request.path_qs, headers, body))
        answer = self.script.pop(0) if self.script else self.default
        if answer.hang:
            await self.release.wait()
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.close()

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def inbox(self, name: str = "alice") -> str:
        return f"{self.base_url}/users/{name}/inbox"

    @property
    def count(self) -> int:
        return len(self.received)


# ---------------------------------------------------------------- the sending node


@dataclass
class World:
    node: NodeContext
    federation: Federation
    receivers: list[Receiver] = field(default_factory=list)
    followers: int = 0

    @property
    def clock(self) -> ManualClock:
        assert isinstance(self.node.clock, ManualClock)
        return self.node.clock

    def now(self) -> datetime:
        return self.clock.now()

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    async def drain(self) -> int:
        return await self.federation.delivery_queue.drain()

    async def receiver(
        self, default: Answer | None = None, accepts: frozenset[str] = CAVAGE_ONLY
    ) -> Receiver:
        receiver = Receiver(default or Answer(), accepts)
        await receiver.start()
        self.receivers.append(receiver)
        return receiver

    async def use_limits(self, limits: ClientLimits) -> None:
        """Swap the federation's client for one with other limits (closing the first)."""
        await self.federation.client.close()
        client = FederationClient(allow_loopback=True, limits=limits)
        self.federation.client = client
        self.federation.delivery_queue.client = client
        self.federation.directory.client = client

    async def queue_to(self, inbox: str) -> int:
        """Queue one delivery the real way: the instance actor rejects a remote Follow."""
        self.followers += 1
        name = f"person{self.followers}"
        base = inbox.split("/users/", 1)[0]
        facts = remote.RemoteActorFacts(
            iri=f"{base}/users/{name}",
            username=name,
            domain=base.removeprefix("http://"),
            display_name=name.title(),
            summary="",
            inbox=inbox,
            shared_inbox=None,
            profile_url=None,
        )
        async with self.node.transaction() as session:
            follower = await remote.upsert_remote_member(session, facts, self.now())
            follow = {
                "id": f"{facts.iri}#follow",
                "type": "Follow",
                "actor": facts.iri,
                "object": f"{self.node.settings.base_url}/g/hush",
            }
            await self.federation.outbox.reject_follow(session, follow, follower)
            delivery = (
                (
                    await session.execute(
                        select(Delivery)
                        .where(Delivery.inbox_url == inbox)
                        .order_by(Delivery.id.desc())
                    )
                )
                .scalars()
                .first()
            )
            assert delivery is not None
            return delivery.id

    async def put_in_flight(self, delivery_id: int, locked_until: datetime) -> None:
        """As a worker leaves a claimed row: in flight, leased until `locked_until`."""
        async with self.node.transaction() as session:
            row = await session.get(Delivery, delivery_id)
            assert row is not None
            row.state, row.locked_until = "in_flight", locked_until

    async def delivery(self, delivery_id: int) -> Delivery:
        async with self.node.transaction() as session:
            row = await session.get(Delivery, delivery_id)
            assert row is not None, f"delivery {delivery_id} is gone"
            return row

    async def exists(self, delivery_id: int) -> bool:
        async with self.node.transaction() as session:
            return await session.get(Delivery, delivery_id) is not None

    async def host(self, receiver: Receiver) -> RemoteHost:
        async with self.node.transaction() as session:
            row = await session.get(RemoteHost, receiver.host)
            assert row is not None, f"no health recorded for {receiver.host}"
            return row

    async def instance_public_pem(self) -> str:
        async with self.node.transaction() as session:
            row = await session.get(ActorKey, INSTANCE_ACTOR)
            assert row is not None
            return row.public_pem


@pytest.fixture
async def world(make_node: NodeFactory) -> AsyncIterator[World]:
    node = await make_node("sender", domain=f"127.0.0.1:{free_port()}")
    world = World(node, Federation(node))
    yield world
    await world.federation.close()
    for receiver in world.receivers:
        await receiver.close()


# ---------------------------------------------------------------- checks


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def assert_signed(request: Received, public_pem: str, key_id: str) -> None:
    """draft-cavage rsa-sha256 over (request-target) host date digest, verified by hand."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', request.headers["signature"]))
    assert params["keyId"] == key_id
    assert params["algorithm"] == "rsa-sha256"
    covered = params["headers"].split()
    assert covered == ["(request-target)", "host", "date", "digest"]
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(request.body).digest()).decode()
    assert request.headers["digest"] == digest
    values = {
        "(request-target)": f"post {request.path}",
        "host": request.headers["host"],
        "date": request.headers["date"],
        "digest": request.headers["digest"],
    }
    text = "\n".join(f"{name}: {values[name]}" for name in covered)
    key = load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(  # raises InvalidSignature on any mismatch
        base64.b64decode(params["signature"]), text.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def assert_probe_wait(actual: timedelta, base: timedelta) -> None:
    """The circuit's probe interval: +/-10% jitter around `base`."""
    assert base * 0.9 <= actual <= base * 1.1, f"{actual} is not {base} +/- 10%"


def assert_jittered(actual: timedelta, base: timedelta) -> None:
    """The retry policy's +/-20% jitter around `base`."""
    assert base * 0.8 <= actual <= base * 1.2, f"{actual} is not {base} +/- 20%"


# ---------------------------------------------------------------- answers


async def test_a_2xx_answer_delivers_once_signed_with_the_clocks_date(world: World) -> None:
    # Given a receiver that accepts, and one activity queued for it
    receiver = await world.receiver(Answer(202))
    delivery_id = await world.queue_to(receiver.inbox())
    sent_at = world.now()

    # When the queue drains
    await world.drain()

    # Then it was delivered in one attempt, and the receiver got one POST signed now
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts) == ("delivered", 1)
    assert (delivery.last_status, delivery.last_error) == (202, "")
    assert delivery.locked_until is None
    assert receiver.count == 1
    request = receiver.received[0]
    assert request.path == "/users/alice/inbox"
    assert request.headers["date"] == http_date(sent_at)
    instance = f"{world.node.settings.base_url}/actor"
    assert_signed(request, await world.instance_public_pem(), instance + "#main-key")
    async with world.node.transaction() as session:
        activity = await session.get(OutboxActivity, delivery.activity_id)
        assert activity is not None
        assert request.body == activity.body.encode()
        assert (activity.type, activity.actor_iri, activity.signer) == (
            "Reject",
            instance,
            INSTANCE_ACTOR,
        )
    host = await world.host(receiver)
    assert (host.consecutive_failures, host.circuit_open_until) == (0, None)
    assert host.last_success_at == sent_at

    # And a later drain sends nothing more
    world.advance(timedelta(days=1))
    await world.drain()
    assert receiver.count == 1


async def test_each_attempt_is_signed_afresh_with_the_time_it_is_sent(world: World) -> None:
    # Given a receiver that fails once, then accepts
    receiver = await world.receiver(Answer(202))
    receiver.script = [Answer(500, "try later")]
    delivery_id = await world.queue_to(receiver.inbox())
    first_at = world.now()
    await world.drain()
    retry_at = (await world.delivery(delivery_id)).next_attempt_at

    # When the clock passes the retry time and the queue drains again
    world.advance(retry_at - first_at + SECOND)
    second_at = world.now()
    await world.drain()

    # Then the second POST carries the later Date, with a signature valid for it
    assert receiver.count == 2
    first, second = receiver.received
    assert first.headers["date"] == http_date(first_at)
    assert second.headers["date"] == http_date(second_at)
    assert first.headers["signature"] != second.headers["signature"]
    pem = await world.instance_public_pem()
    key_id = f"{world.node.settings.base_url}/actor#main-key"
    assert_signed(first, pem, key_id)
    assert_signed(second, pem, key_id)
    assert first.body == second.body
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 2, 202)


async def test_a_5xx_answer_is_retried_later_and_later(world: World) -> None:
    # Given a receiver that keeps failing with 500
    receiver = await world.receiver(Answer(500, "database on fire"))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then the delivery is queued again about a minute later, the error kept
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, 500)
    assert "500" in delivery.last_error and "database on fire" in delivery.last_error
    assert delivery.locked_until is None
    assert_jittered(delivery.next_attempt_at - world.now(), MINUTE)
    assert receiver.count == 1

    # When the clock moves to just before the retry time: nothing is sent
    world.advance(delivery.next_attempt_at - world.now() - SECOND)
    await world.drain()
    assert receiver.count == 1
    assert (await world.delivery(delivery_id)).attempts == 1

    # When it passes the retry time: the second attempt goes, and the next waits ~2 min
    world.advance(2 * SECOND)
    await world.drain()
    assert receiver.count == 2
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts) == ("queued", 2)
    assert_jittered(delivery.next_attempt_at - world.now(), 2 * MINUTE)

    # And the third waits ~4 min
    world.advance(delivery.next_attempt_at - world.now())
    await world.drain()
    assert receiver.count == 3
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts) == ("queued", 3)
    assert_jittered(delivery.next_attempt_at - world.now(), 4 * MINUTE)


async def test_429_with_retry_after_seconds_waits_exactly_that_long(world: World) -> None:
    # Given a receiver that answers 429 with Retry-After: 120
    receiver = await world.receiver(Answer(429, "slow down", {"Retry-After": "120"}))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then the next attempt is exactly 120 s away, not the policy's minute
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, 429)
    assert delivery.next_attempt_at == world.now() + timedelta(seconds=120)
    assert "slow down" in delivery.last_error

    # And nothing goes at 119 s; the retry goes at 120 s
    world.advance(timedelta(seconds=119))
    await world.drain()
    assert receiver.count == 1
    world.advance(SECOND)
    await world.drain()
    assert receiver.count == 2


async def test_503_with_retry_after_http_date_waits_until_that_date(world: World) -> None:
    # Given a receiver under maintenance until a given time, three hours from now
    until = world.now() + timedelta(hours=3)
    answer = Answer(503, "maintenance", {"Retry-After": http_date(until)})
    receiver = await world.receiver(answer)
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then the next attempt is at that date
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, 503)
    assert delivery.next_attempt_at == until
    assert "maintenance" in delivery.last_error
    world.advance(timedelta(hours=3) - SECOND)
    await world.drain()
    assert receiver.count == 1
    world.advance(SECOND)
    await world.drain()
    assert receiver.count == 2


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(str(3 * 24 * 3600), LONGEST_RETRY, id="three-days-in-seconds"),
        pytest.param("-30", SECOND, id="negative-seconds"),
        pytest.param("Sun, 01 Nov 2026 11:00:00 GMT", SECOND, id="date-in-the-past"),
        pytest.param("soon", MINUTE, id="unreadable"),
    ],
)
async def test_retry_after_is_bounded_by_the_policy(
    world: World, retry_after: str, expected: timedelta
) -> None:
    # Given a receiver asking for an unreasonable or unreadable wait (the clock is at
    # 2026-11-01 12:00 UTC)
    receiver = await world.receiver(Answer(429, "", {"Retry-After": retry_after}))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then the wait is held to a second .. a day; an unreadable one falls back to the policy
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, 429)
    if expected == MINUTE:
        assert_jittered(delivery.next_attempt_at - world.now(), MINUTE)
    else:
        assert delivery.next_attempt_at == world.now() + expected


async def test_an_absurdly_large_retry_after_is_capped_at_a_day(world: World) -> None:
    # Given a receiver answering 429 with a Retry-After too large for any date
    receiver = await world.receiver(Answer(429, "", {"Retry-After": "99999999999999"}))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then the wait is capped at a day like any other long wait
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, 429)
    assert delivery.next_attempt_at == world.now() + LONGEST_RETRY


async def test_410_gone_abandons_the_delivery_without_retrying(world: World) -> None:
    # Given a receiver whose recipient is gone
    receiver = await world.receiver(Answer(410, "no such person"))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains, then again much later
    await world.drain()
    world.advance(timedelta(days=1))
    await world.drain()

    # Then the delivery was abandoned after one attempt
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("abandoned", 1, 410)
    assert delivery.locked_until is None
    assert receiver.count == 1
    # And the host, which answered, is not counted as failing
    host = await world.host(receiver)
    assert (host.consecutive_failures, host.circuit_open_until) == (0, None)


async def test_400_fails_the_delivery_for_good_with_the_reason_kept(world: World) -> None:
    # Given a receiver that refuses the activity with a reason
    receiver = await world.receiver(Answer(400, "Signature header is malformed"))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains, then again much later
    await world.drain()
    world.advance(timedelta(days=1))
    await world.drain()

    # Then it failed after one attempt, and the receiver's words are kept
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 1, 400)
    assert "Signature header is malformed" in delivery.last_error
    assert "400" in delivery.last_error
    assert receiver.count == 1
    host = await world.host(receiver)
    assert (host.consecutive_failures, host.circuit_open_until) == (0, None)


async def test_a_receiver_that_hangs_past_the_timeout_is_retried_later(world: World) -> None:
    # Given a client that waits half a second in all, and a receiver that never answers
    await world.use_limits(ClientLimits(connect_seconds=0.5, total_seconds=0.5))
    receiver = await world.receiver(Answer(hang=True))
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    started = time.monotonic()
    await world.drain()
    elapsed = time.monotonic() - started

    # Then the attempt gave up on its timeout (the receiver never answers) and is queued for
    # a retry
    assert elapsed < 5, f"the drain took {elapsed:.2f} s"
    assert receiver.count == 1
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, None)
    assert "timed out" in delivery.last_error.lower() or "timeout" in delivery.last_error.lower()
    assert receiver.inbox() in delivery.last_error
    assert_jittered(delivery.next_attempt_at - world.now(), MINUTE)
    host = await world.host(receiver)
    assert host.consecutive_failures == 1
    assert host.last_error == delivery.last_error


async def test_a_delivery_failing_for_three_days_is_abandoned(world: World) -> None:
    # Given a receiver that fails every time
    receiver = await world.receiver(Answer(500, "down"))
    delivery_id = await world.queue_to(receiver.inbox())
    created = world.now()

    # When the clock moves to every retry time and the queue drains, until it stops retrying
    delays: list[timedelta] = []
    for attempt in range(1, 30):
        await world.drain()
        delivery = await world.delivery(delivery_id)
        assert delivery.attempts == attempt, "a due retry was not attempted"
        if delivery.state != "queued":
            break
        assert world.now() - created < GIVE_UP_AFTER, "still retrying after three days"
        delays.append(delivery.next_attempt_at - world.now())
        world.advance(delays[-1])

    # Then it was abandoned at the first attempt made three days after it was created
    assert (delivery.state, delivery.last_status) == ("abandoned", 500)
    assert world.now() - created >= GIVE_UP_AFTER
    assert world.now() - delays[-1] - created < GIVE_UP_AFTER
    assert receiver.count == delivery.attempts
    # And the delays doubled from a minute and were capped at a day
    for number, delay in enumerate(delays[:8], start=1):
        assert_jittered(delay, MINUTE * 2 ** (number - 1))
    assert all(delay <= LONGEST_RETRY * 1.2 for delay in delays)
    assert_jittered(delays[-1], LONGEST_RETRY)
    # And a drain days later sends nothing more
    world.advance(timedelta(days=2))
    await world.drain()
    assert receiver.count == delivery.attempts


async def test_a_host_that_refuses_connections_is_retried_later(world: World) -> None:
    # Given an inbox on a port where nothing listens
    inbox = f"http://127.0.0.1:{free_port()}/users/alice/inbox"
    delivery_id = await world.queue_to(inbox)

    # When the queue drains
    await world.drain()

    # Then the delivery waits for a retry, the transport error kept
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, None)
    assert "cannot reach" in delivery.last_error and inbox in delivery.last_error
    assert_jittered(delivery.next_attempt_at - world.now(), MINUTE)


# ---------------------------------------------------------------- circuit breaker


async def test_the_circuit_opens_after_three_failures_and_a_probe_closes_it(world: World) -> None:
    # Given a failing host that has failed three times in a row, each attempt made after the
    # last failure was recorded (one delivery per drain)
    sick = await world.receiver(Answer(500, "overloaded"))
    healthy = await world.receiver(Answer(202))
    failed = []
    for _ in range(CIRCUIT_THRESHOLD):
        failed.append(await world.queue_to(sick.inbox()))
        await world.drain()
    assert sick.count == CIRCUIT_THRESHOLD
    host = await world.host(sick)
    assert host.consecutive_failures == CIRCUIT_THRESHOLD
    assert host.circuit_open_until is not None
    open_until = host.circuit_open_until
    assert_probe_wait(open_until - world.now(), PROBE_STEP)

    # When a delivery to it and one to a healthy host are due in the same drain
    waiting = await world.queue_to(sick.inbox())
    queued_at = world.now()
    other = await world.queue_to(healthy.inbox())
    await world.drain()

    # Then the sick host is not contacted: its delivery waits for the circuit, costing nothing
    # and keeping its own schedule
    assert sick.count == CIRCUIT_THRESHOLD
    delivery = await world.delivery(waiting)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 0, None)
    assert delivery.next_attempt_at == queued_at
    assert delivery.locked_until is None
    # And the healthy host got its delivery
    assert healthy.count == 1
    assert (await world.delivery(other)).state == "delivered"

    # When the circuit half opens and the host still fails
    schedules = {d: (await world.delivery(d)).next_attempt_at for d in failed}
    world.advance(open_until - world.now())
    await world.drain()

    # Then exactly one probe went: the delivery with the earliest schedule, due or not
    assert sick.count == CIRCUIT_THRESHOLD + 1
    assert (await world.delivery(waiting)).attempts == 1
    # And the circuit opened again for the next probe interval, the others' schedules untouched
    host = await world.host(sick)
    assert host.consecutive_failures == CIRCUIT_THRESHOLD + 1
    assert host.circuit_open_until is not None
    assert_probe_wait(host.circuit_open_until - world.now(), 2 * PROBE_STEP)
    assert {d: (await world.delivery(d)).next_attempt_at for d in failed} == schedules
    rows = [await world.delivery(d) for d in [*failed, waiting]]
    assert all(row.state == "queued" for row in rows)

    # When the host recovers and the circuit half opens: one probe goes and succeeds
    sick.default = Answer(202)
    world.advance(host.circuit_open_until - world.now())
    assert world.now() < min(schedules.values()), "the test needs the others not yet due"
    assert await world.drain() == 1
    assert sick.count == CIRCUIT_THRESHOLD + 2
    host = await world.host(sick)
    assert (host.consecutive_failures, host.circuit_open_until) == (0, None)

    # Then every delivery that waited is released at once: due now, and sent at the next drain
    rows = [await world.delivery(d) for d in [*failed, waiting]]
    assert [row.state for row in rows].count("delivered") == 1
    assert all(row.next_attempt_at <= world.now() for row in rows if row.state == "queued")
    await world.drain()
    rows = [await world.delivery(d) for d in [*failed, waiting]]
    assert all(row.state == "delivered" for row in rows), [row.state for row in rows]
    assert sick.count == CIRCUIT_THRESHOLD + 2 + len(rows) - 1


async def test_a_burst_of_concurrent_failures_is_one_piece_of_evidence(world: World) -> None:
    # Given 19 deliveries due to one host that answers 503 for a moment
    sick = await world.receiver(Answer(503, "restarting"))
    ids = [await world.queue_to(sick.inbox(f"p{n}")) for n in range(19)]

    # When one drain attempts them all concurrently
    await world.drain()

    # Then each delivery failed once, and the host counts a single failure: its circuit stays
    # closed, and each delivery retries on its own schedule in about a minute
    assert sick.count == 19
    rows = [await world.delivery(d) for d in ids]
    assert [row.attempts for row in rows] == [1] * 19
    for row in rows:
        assert_jittered(row.next_attempt_at - world.now(), MINUTE)
    host = await world.host(sick)
    assert (host.consecutive_failures, host.circuit_open_until) == (1, None)


@pytest.mark.parametrize("outage", [timedelta(seconds=20), 3 * MINUTE, timedelta(seconds=290)])
async def test_a_short_outage_heals_within_two_minutes_of_recovery(
    world: World, outage: timedelta
) -> None:
    # Given a server with 19 deliveries queued for it, which then answers 503 for `outage`
    server = await world.receiver(Answer(503, "down for maintenance"))
    ids = [await world.queue_to(server.inbox(f"p{n}")) for n in range(19)]
    down_since = world.now()
    step = timedelta(seconds=5)
    ever_open_until: list[timedelta] = []
    recovered_at: datetime | None = None

    # When the worker drains every few seconds, as it does, until everything is delivered
    for _ in range(int(timedelta(hours=1) / step)):
        if recovered_at is None and world.now() - down_since >= outage:
            server.default, recovered_at = Answer(202), world.now()
        while await world.drain():
            pass
        rows = [await world.delivery(d) for d in ids]
        host = await world.host(server)
        if host.circuit_open_until is not None:
            ever_open_until.append(host.circuit_open_until - world.now())
        if all(row.state == "delivered" for row in rows):
            break
        world.advance(step)

    # Then everything arrived within two minutes of the server coming back
    assert recovered_at is not None
    assert all(row.state == "delivered" for row in rows), [row.state for row in rows]
    assert world.now() - recovered_at <= 2 * MINUTE, world.now() - recovered_at
    # And the circuit never shut the server out for longer than its probe intervals
    assert all(wait <= 10 * PROBE_STEP for wait in ever_open_until), ever_open_until


# ---------------------------------------------------------------- leases


async def test_an_expired_lease_is_claimed_again_and_a_live_one_is_left(world: World) -> None:
    # Given a queue that is running (its start-up drain is done), and two deliveries in
    # flight: one whose worker died (its lease expired), one whose worker is still at it
    receiver = await world.receiver(Answer(202))
    assert await world.drain() == 0
    dead = await world.queue_to(receiver.inbox("dead"))
    live = await world.queue_to(receiver.inbox("live"))
    now = world.now()
    await world.put_in_flight(dead, now - SECOND)
    await world.put_in_flight(live, now + MINUTE)

    # When the queue drains
    await world.drain()

    # Then the abandoned one is delivered, and the one still leased is not touched
    assert [request.path for request in receiver.received] == ["/users/dead/inbox"]
    delivered = await world.delivery(dead)
    assert (delivered.state, delivered.attempts, delivered.locked_until) == ("delivered", 1, None)
    untouched = await world.delivery(live)
    assert (untouched.state, untouched.attempts) == ("in_flight", 0)
    assert untouched.locked_until == now + MINUTE

    # And once its lease runs out, it is claimed too
    world.advance(MINUTE + SECOND)
    await world.drain()
    assert receiver.count == 2
    assert (await world.delivery(live)).state == "delivered"


async def test_a_restarted_queue_takes_back_what_it_had_in_flight(world: World) -> None:
    # Given a delivery in flight under a live lease when the process stopped
    receiver = await world.receiver(Answer(202))
    delivery_id = await world.queue_to(receiver.inbox())
    now = world.now()
    await world.put_in_flight(delivery_id, now + LEASE)

    # When a new queue (a restarted process) drains for the first time
    federation = world.federation
    restarted = DeliveryQueue(world.node, federation.client, federation.directory)
    await restarted.drain()

    # Then on SQLite (one worker process by design) it is sent at once; on PostgreSQL, where
    # another worker may hold it, it waits for its lease to expire
    delivery = await world.delivery(delivery_id)
    if BACKEND == "sqlite":
        assert (delivery.state, delivery.attempts, receiver.count) == ("delivered", 1, 1)
    else:
        assert (delivery.state, delivery.attempts, receiver.count) == ("in_flight", 0, 0)
        world.advance(LEASE + SECOND)
        await restarted.drain()
        delivery = await world.delivery(delivery_id)
        assert (delivery.state, delivery.attempts, receiver.count) == ("delivered", 1, 1)


# ---------------------------------------------------------------- retention


async def test_finished_deliveries_are_pruned_after_the_retention_period(world: World) -> None:
    # Given a delivered, a failed and an abandoned delivery, finished at the start
    accepting = await world.receiver(Answer(202))
    refusing = await world.receiver(Answer(400, "no"))
    gone = await world.receiver(Answer(410))
    old = [
        await world.queue_to(accepting.inbox()),
        await world.queue_to(refusing.inbox()),
        await world.queue_to(gone.inbox()),
    ]
    await world.drain()
    assert [(await world.delivery(d)).state for d in old] == ["delivered", "failed", "abandoned"]
    # And one delivered six days later, and one still waiting to be retried
    world.advance(timedelta(days=6))
    recent = await world.queue_to(accepting.inbox("bob"))
    await world.drain()
    assert (await world.delivery(recent)).state == "delivered"
    failing = await world.receiver(Answer(500))
    pending = await world.queue_to(failing.inbox())

    # When a drain runs just before the old ones are past retention
    world.advance(RETENTION - timedelta(days=6) - MINUTE)
    await world.drain()
    # Then nothing was pruned
    assert all([await world.exists(d) for d in [*old, recent, pending]])

    # When the old ones pass retention within PRUNE_EVERY of that prune: still kept
    world.advance(2 * MINUTE)
    await world.drain()
    assert all([await world.exists(d) for d in old])

    # When PRUNE_EVERY has passed since the last prune
    world.advance(PRUNE_EVERY)
    await world.drain()

    # Then the old finished rows are gone, the recent one and the queued one are kept
    assert [await world.exists(d) for d in old] == [False, False, False]
    assert await world.exists(recent)
    assert (await world.delivery(pending)).state == "queued"


# ---------------------------------------------------------------- shared inboxes


async def test_announces_go_once_per_shared_inbox(world: World) -> None:
    # Given a public group with three followers on a server with a shared inbox, and two on a
    # server without one
    node = world.node
    shared = await world.receiver(Answer(202))
    plain = await world.receiver(Answer(202))
    now = world.now()
    async with node.transaction() as session:
        owner = await members.create_member(
            session, node.passwords, node.settings.limits, username="nurse",
            password="correct horse battery", display_name="Nurse", now=now,
        )  # fmt: skip
        group = await groups.create_group(
            session, node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1 diabetes", now=now,
        )  # fmt: skip
        followers = [(shared, name, shared.base_url + "/inbox") for name in ("a", "b", "c")]
        followers += [(plain, name, None) for name in ("d", "e")]
        for server, name, shared_inbox in followers:
            iri = f"{server.base_url}/users/{name}"
            facts = remote.RemoteActorFacts(
                iri=iri, username=name, domain=server.host, display_name=name, summary="",
                inbox=server.inbox(name), shared_inbox=shared_inbox, profile_url=None,
            )  # fmt: skip
            member = await remote.upsert_remote_member(session, facts, now)
            follow = {"id": iri + "#follow", "type": "Follow", "actor": iri}
            await remote.accept_remote_follow(
                session, group, member, received_origin(session, follow), now
            )

    # When a member starts a thread in the group
    async with node.transaction() as session:
        view = await groups.view_group(session, "t1d", Viewer(owner.id))
        await posts.start_thread(
            session, node.settings.limits, view, title="Pumps",
            draft=posts.Draft("Which pump do you use?"), now=now,
        )  # fmt: skip

    # Then each Announce is queued once per distinct inbox: the shared one, and each
    # personal inbox on the server without one
    async with node.transaction() as session:
        rows = (
            await session.execute(
                select(OutboxActivity.id, Delivery.inbox_url)
                .join(Delivery, Delivery.activity_id == OutboxActivity.id)
                .where(OutboxActivity.type == "Announce")
            )
        ).all()
    by_activity: dict[str, list[str]] = {}
    for activity_id, inbox in rows:
        by_activity.setdefault(activity_id, []).append(inbox)
    expected = sorted([shared.base_url + "/inbox", plain.inbox("d"), plain.inbox("e")])
    assert len(by_activity) == 2  # Announce{Create} and Announce{Page}
    assert all(sorted(inboxes) == expected for inboxes in by_activity.values())

    # And draining sends them so: two POSTs to the shared inbox, two to each personal one
    await world.drain()
    announces: dict[str, int] = {}
    for server in (shared, plain):
        for request in server.received:
            if b'"type":"Announce"' in request.body:
                url = server.base_url + request.path
                announces[url] = announces.get(url, 0) + 1
    assert announces == dict.fromkeys(expected, 2)
    group_key = f"{node.settings.base_url}/g/t1d#main-key"
    assert all(
        f'keyId="{group_key}"' in request.headers["signature"]
        for server in (shared, plain)
        for request in server.received
    )


async def test_a_410_from_a_persons_own_inbox_ends_their_memberships(world: World) -> None:
    from node import groups, members
    from node.storage.models import Member, Membership

    # Given a remote person who follows a public group here, and whose inbox now says 410
    receiver = await world.receiver(Answer(410, "gone"))
    delivery_id = await world.queue_to(receiver.inbox())
    async with world.node.transaction() as session:
        owner = await members.create_member(
            session, world.node.passwords, world.node.settings.limits, username="owner",
            password="correct horse battery", display_name="Owner", now=world.now(),
        )  # fmt: skip
        group = await groups.create_group(
            session, world.node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1", now=world.now(),
        )  # fmt: skip
        person = (
            await session.execute(select(Member).where(Member.inbox_url == receiver.inbox()))
        ).scalar_one()
        session.add(
            Membership(
                group_id=group.id, member_id=person.id, state="active", role="member",
                created_at=world.now(), updated_at=world.now(),
            )
        )  # fmt: skip

    # When a delivery to that inbox is answered 410
    await world.drain()

    # Then the delivery is abandoned and the person no longer belongs to the group
    delivery = await world.delivery(delivery_id)
    assert delivery.state == "abandoned"
    async with world.node.transaction() as session:
        remaining = (
            await session.execute(select(Membership).where(Membership.member_id == person.id))
        ).all()
    assert remaining == []


# ---------------------------------------------------------------- claimed, then deleted


async def at_least(receiver: Receiver, count: int) -> bool:
    return receiver.count >= count


async def test_a_delivery_claimed_before_its_post_was_deleted_is_not_sent(world: World) -> None:
    # Given two deliveries to one host that takes one at a time, the first answer held back
    receiver = await world.receiver(Answer(202))
    receiver.script = [Answer(202, hang=True)]
    await world.queue_to(receiver.inbox("a"))
    second = await world.queue_to(receiver.inbox("b"))
    queue = world.federation.delivery_queue
    queue.per_host, queue.body_fresh_seconds = 1, 0.0
    draining = asyncio.create_task(world.drain())
    await eventually(lambda: at_least(receiver, 1), "the first delivery under way")
    # When what the second one carries is deleted meanwhile (as Outbox._forget_content
    # leaves an activity whose post was deleted: a tombstone)
    async with world.node.transaction() as session:
        delivery = await session.get(Delivery, second)
        assert delivery is not None and delivery.state == "in_flight"
        activity = await session.get(OutboxActivity, delivery.activity_id)
        assert activity is not None
        activity.type, activity.body = "Tombstone", '{"type":"Tombstone"}'
    receiver.release.set()
    await draining
    # Then it was never sent, and it is abandoned with the reason
    assert receiver.count == 1
    row = await world.delivery(second)
    assert (row.state, row.last_error, row.attempts) == ("abandoned", "the post was deleted", 0)


async def test_a_delivery_nothing_here_can_sign_fails_alone(world: World) -> None:
    # Given a delivery signed by the instance actor, and its key gone from the database
    receiver = await world.receiver(Answer(202))
    first = await world.queue_to(receiver.inbox("a"))
    async with world.node.transaction() as session:
        key = await session.get(ActorKey, INSTANCE_ACTOR)
        assert key is not None
        await session.delete(key)
    # When the queue drains
    await world.drain()
    # Then that delivery fails for good with the reason, and the queue is not stuck on it
    row = await world.delivery(first)
    assert row.state == "failed" and "no key to sign with" in row.last_error
    assert receiver.count == 0
    assert await world.drain() == 0


# ---------------------------------------------------------------- signatures: double-knocking
#
# The receivers here read signatures by shape only (see Receiver); the signatures themselves
# are verified by hand in the test, with the instance actor's public key.

RFC9421_ONLY = frozenset({"rfc9421"})
BOTH = frozenset({"rfc9421", "draft-cavage"})
_SIGNATURE_INPUT = re.compile(r'^sig1=\(((?:"[^"]+"\s*)+)\)((?:;[a-z]+=(?:"[^"]*"|\d+))+)$')


def assert_rfc9421_signed(
    request: Received, url: str, public_pem: str, key_id: str, created: datetime
) -> list[str]:
    """RFC 9421 rsa-v1_5-sha256 over what Mastodon requires and what we send, verified by hand
    (the signature base of RFC 9421 section 2.5, built here); answers the covered components."""
    match = _SIGNATURE_INPUT.fullmatch(request.headers["signature-input"])
    assert match, request.headers["signature-input"]
    components = re.findall(r'"([^"]+)"', match.group(1))
    params = dict(re.findall(r';([a-z]+)=("[^"]*"|\d+)', match.group(2)))
    assert params == {
        "created": str(int(created.timestamp())),
        "keyid": f'"{key_id}"',
        "alg": '"rsa-v1_5-sha256"',
    }
    assert {"@method", "@target-uri", "content-digest", "content-type"} <= set(components)
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(request.body).digest()).decode() + ":"
    assert request.headers["content-digest"] == digest
    derived = {"@method": "POST", "@target-uri": url}
    lines = [
        f'"{name}": {derived[name] if name.startswith("@") else request.headers[name].strip()}'
        for name in components
    ]
    lines.append(f'"@signature-params": ({match.group(1)}){match.group(2)}')
    signature = request.headers["signature"]
    assert signature.startswith("sig1=:") and signature.endswith(":")
    key = load_pem_public_key(public_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(  # raises InvalidSignature on any mismatch
        base64.b64decode(signature[len("sig1=:") : -1]),
        "\n".join(lines).encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return components


def instance_key_id(world: World) -> str:
    return f"{world.node.settings.base_url}/actor#main-key"


async def test_a_receiver_reading_only_draft_cavage_gets_it_at_the_second_knock_then_directly(
    world: World,
) -> None:
    # Given a receiver that answers 401 to RFC 9421 (as Mastodon before 4.5 does)
    receiver = await world.receiver(Answer(202))
    first = await world.queue_to(receiver.inbox())
    sent_at = world.now()
    pem = await world.instance_public_pem()

    # When the queue drains
    await world.drain()

    # Then two requests went: RFC 9421 first (refused), then the same body signed draft-cavage
    [knock] = receiver.refused
    [delivered] = receiver.received
    assert_rfc9421_signed(knock, receiver.inbox(), pem, instance_key_id(world), sent_at)
    assert "signature" in knock.headers and "digest" not in knock.headers
    assert_signed(delivered, pem, instance_key_id(world))
    assert "signature-input" not in delivered.headers
    assert knock.body == delivered.body
    # And the queue saw one attempt, which delivered: the refused knock is no failed attempt
    delivery = await world.delivery(first)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 202)
    host = await world.host(receiver)
    assert (host.consecutive_failures, host.last_error) == (0, "")

    # When another delivery to the same server drains, an hour later
    world.advance(timedelta(hours=1))
    second = await world.queue_to(receiver.inbox("bob"))
    await world.drain()

    # Then it goes straight to draft-cavage: one request, signed once
    assert (len(receiver.refused), receiver.count) == (1, 2)
    assert_signed(receiver.received[1], pem, instance_key_id(world))
    assert (await world.delivery(second)).state == "delivered"


async def test_a_receiver_reading_rfc9421_gets_it_at_the_first_knock(world: World) -> None:
    # Given a receiver that reads both families (as Mastodon 4.5 and Fedify do)
    receiver = await world.receiver(Answer(202), accepts=BOTH)
    delivery_id = await world.queue_to(receiver.inbox())
    sent_at = world.now()

    # When the queue drains, twice
    await world.drain()
    world.advance(MINUTE)
    await world.queue_to(receiver.inbox("bob"))
    await world.drain()

    # Then each delivery was one request, signed RFC 9421 only, over the components that
    # Mastodon requires and the headers sent, with the Date and `created` of the clock
    assert (receiver.count, receiver.refused) == (2, [])
    first = receiver.received[0]
    components = assert_rfc9421_signed(
        first, receiver.inbox(), await world.instance_public_pem(), instance_key_id(world),
        sent_at,
    )  # fmt: skip
    assert components == ["@method", "@target-uri", "content-type", "date", "content-digest"]
    assert first.headers["date"] == http_date(sent_at)
    assert "digest" not in first.headers
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts) == ("delivered", 1)


async def test_a_server_that_drops_draft_cavage_is_reached_with_rfc9421_again(
    world: World,
) -> None:
    # Given a receiver remembered to read only draft-cavage
    receiver = await world.receiver(Answer(202))
    await world.queue_to(receiver.inbox())
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (1, 1)
    # When it now reads RFC 9421 only, and two more deliveries go to it
    receiver.accepts = RFC9421_ONLY
    world.advance(MINUTE)
    first = await world.queue_to(receiver.inbox("bob"))
    await world.drain()
    # Then the remembered draft-cavage is refused and RFC 9421 follows at once
    assert (len(receiver.refused), receiver.count) == (2, 2)
    assert "signature-input" not in receiver.refused[1].headers
    assert "signature-input" in receiver.received[1].headers
    assert (await world.delivery(first)).state == "delivered"
    # And the next goes straight with RFC 9421
    world.advance(MINUTE)
    await world.queue_to(receiver.inbox("carol"))
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (2, 3)
    assert "signature-input" in receiver.received[2].headers


async def test_the_remembered_choice_expires_a_day_after_it_was_learnt(world: World) -> None:
    # Given a receiver that reads only draft-cavage, learnt at the first delivery
    receiver = await world.receiver(Answer(202))
    learnt_at = world.now()
    await world.queue_to(receiver.inbox())
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (1, 1)

    # When deliveries go just before a day has passed: straight to draft-cavage, and these
    # successes do not extend the memory
    for hours in (12, 23):
        world.advance(learnt_at + timedelta(hours=hours) - world.now())
        await world.queue_to(receiver.inbox())
        await world.drain()
    world.advance(learnt_at + REMEMBER_FOR - SECOND - world.now())
    await world.queue_to(receiver.inbox())
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (1, 4)

    # When a day has passed since it was learnt: RFC 9421 is offered again, then draft-cavage
    world.advance(SECOND)
    relearnt_at = world.now()
    await world.queue_to(receiver.inbox())
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (2, 5)
    assert "signature-input" in receiver.refused[1].headers

    # And the choice is learnt again, for a day from then
    world.advance(relearnt_at + REMEMBER_FOR - SECOND - world.now())
    await world.queue_to(receiver.inbox())
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (2, 6)


async def test_a_refusal_of_both_families_is_one_failed_attempt_with_the_last_answer(
    world: World,
) -> None:
    # Given a receiver that refuses RFC 9421 with 401, and draft-cavage with its own 401
    receiver = await world.receiver(Answer(401, "we do not federate with you"))
    first = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then the delivery failed for good after one attempt, with the second knock's answer
    delivery = await world.delivery(first)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 1, 401)
    assert "we do not federate with you" in delivery.last_error
    assert "not understood" not in delivery.last_error
    assert (len(receiver.refused), receiver.count) == (1, 1)

    # And nothing was learnt: the next delivery knocks with RFC 9421 first again
    await world.queue_to(receiver.inbox("bob"))
    await world.drain()
    assert (len(receiver.refused), receiver.count) == (2, 2)


async def test_a_5xx_to_rfc9421_is_retried_later_not_knocked_again(world: World) -> None:
    # Given a receiver reading RFC 9421 that fails with 500, then recovers
    receiver = await world.receiver(Answer(202), accepts=BOTH)
    receiver.script = [Answer(500, "database on fire")]
    delivery_id = await world.queue_to(receiver.inbox())

    # When the queue drains
    await world.drain()

    # Then one request went (a 5xx says nothing about the signature), to be retried later
    assert (receiver.count, receiver.refused) == (1, [])
    delivery = await world.delivery(delivery_id)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("queued", 1, 500)
    # And the retry is signed RFC 9421 again, and delivers
    world.advance(delivery.next_attempt_at - world.now())
    await world.drain()
    assert receiver.count == 2
    assert all("signature-input" in request.headers for request in receiver.received)
    assert (await world.delivery(delivery_id)).state == "delivered"


def test_the_memory_is_per_origin_and_bounded() -> None:
    # Given a memory of two origins
    memory = SignaturePreference(remember_for=timedelta(hours=1), size=2)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    # Then an origin never seen is offered RFC 9421
    assert memory.first(origin_of("https://a.example/inbox"), now) == RFC9421
    # When three origins are learnt, the first is forgotten; ports and schemes are origins
    for url in ("https://a.example/inbox", "https://a.example:8443/x", "http://a.example/y"):
        memory.remember(origin_of(url), CAVAGE, now)
    assert len(memory) == 2
    assert memory.first("https://a.example", now) == RFC9421
    assert memory.first("https://a.example:8443", now) == CAVAGE
    assert memory.first(origin_of("HTTP://A.EXAMPLE/z"), now) == CAVAGE
    # And a remembered choice ends when its hour has passed
    assert memory.first("http://a.example", now + timedelta(minutes=59)) == CAVAGE
    assert memory.first("http://a.example", now + timedelta(hours=1)) == RFC9421


# ---------------------------------------------------------------- found in review


async def test_deliveries_behind_a_circuit_that_never_closes_are_given_up(world: World) -> None:
    # Given 40 deliveries to a server that never answers anything but 503
    dead = await world.receiver(Answer(503, "down"))
    ids = [await world.queue_to(dead.inbox(f"p{n}")) for n in range(40)]
    start = world.now()

    # When the queue drains for five days, as often as its circuit lets a probe through
    while world.now() - start < timedelta(days=5):
        host = await world.host(dead) if dead.count else None
        until = host.circuit_open_until if host is not None else None
        step = until - world.now() if until is not None and until > world.now() else MINUTE
        world.advance(max(step, SECOND))
        await world.drain()

    # Then none of them is still waiting: each was abandoned after the give-up period, those
    # the circuit held back without another attempt
    rows = [await world.delivery(d) for d in ids]
    assert {row.state for row in rows} == {"abandoned"}, {row.state for row in rows}
    assert all(row.updated_at - start >= GIVE_UP_AFTER for row in rows)


async def test_an_outcome_for_a_row_another_worker_took_is_not_recorded(world: World) -> None:
    # Given two deliveries claimed by this worker, of which one was meanwhile claimed again
    # and delivered by another worker (its lease had run out)
    receiver = await world.receiver(Answer(202))
    taken = await world.queue_to(receiver.inbox("a"))
    ours = await world.queue_to(receiver.inbox("b"))
    lease = world.now()
    await world.put_in_flight(taken, lease)
    await world.put_in_flight(ours, lease)
    async with world.node.transaction() as session:
        row = await session.get(Delivery, taken)
        assert row is not None
        row.state, row.locked_until = "delivered", None

    # When this worker records a failure for the first and a success for the second
    await world.federation.delivery_queue._record_all(
        [
            Outcome(taken, receiver.host, status=503, text="busy", lease=lease),
            Outcome(ours, receiver.host, status=202, lease=lease),
        ]
    )

    # Then the other worker's result stands, and this worker's own result is recorded
    assert (await world.delivery(taken)).state == "delivered"
    assert (await world.delivery(ours)).state == "delivered"
