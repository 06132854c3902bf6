"""Fan-out: one new thread in a public group with 1,000 remote followers on 50 servers.

    .venv/bin/python -m bench.fanout [--followers 1000] [--servers 50] [--shared 25]

The receiving servers are 50 small aiohttp apps on 127.0.0.1 (each its own port, so each is its
own host to the delivery queue), run by one child process pinned to the second core; each
answers 202 and counts what it received. Half of them publish a sharedInbox, so their followers
collapse onto one inbox per server; the other half get one delivery per follower.

The node (SQLite in a temporary directory, domain 127.0.0.1:PORT) runs in this process, pinned
to the first core. Seeding (members, memberships) is not timed. Timed: from the transaction
that starts the thread (which queues the Announce deliveries) until every delivery row is
`delivered`, with the real DeliveryQueue run by Federation(node).start_workers().

A second thread is then posted under cProfile (same node, same followers) to show where the
time goes; its wall time is reported but is not the figure (profiling slows Python down).
The RSA-2048 signing rate is measured in the same process on the same core, with the group's
own key over the signing string of the Announce just delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import multiprocessing
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import func, select

from bench.common import (
    PEER_CORE,
    BenchFailure,
    Observer,
    SqlStats,
    cpu_seconds,
    max_rss_kib,
    next_command,
    node_settings,
    pin_to_core,
    profile_report,
    run_benchmark,
    say,
    serve_on_loopback,
    unused_port,
    wait_until,
)
from federation import httpsig
from federation.keysink import attach_actor_keys
from federation.service import Federation
from node import groups, posts, remote
from node.members import create_member
from node.policy import Action, Viewer
from node.runtime import NodeContext
from node.storage.models import Delivery, Membership, OutboxActivity, inbox_host
from web.cli import keep_what_started

DELIVERY_DEADLINE_SECONDS = 60.0
POLL_SECONDS = 0.02
SIGNING_SECONDS = 1.0
SEED_BATCH = 100

POST_BODY = (
    "Since starting the new pump I've had fewer lows at night, but mornings are still high.\n\n"
    "What worked for you: a later basal change, or an earlier breakfast bolus? I keep a log "
    "and can share it. Thanks to everyone who answered last week, it helped a lot."
)


# ---------------------------------------------------------------- the receiving servers


def run_receivers(conn: Any, servers: int, shared: int, latency: float) -> None:
    """Child process: `servers` receivers on loopback; answers commands on `conn`."""
    pinned = pin_to_core(PEER_CORE)
    asyncio.run(_receivers_main(conn, servers, shared, latency, pinned))


async def _receivers_main(
    conn: Any, servers: int, shared: int, latency: float, pinned: str
) -> None:
    counts: Counter[str] = Counter()  # "port path" -> activities received
    bad: Counter[str] = Counter()

    def make_handler(port_box: list[int]) -> Any:
        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            key = f"{port_box[0]} {request.path}"
            try:
                kind = json.loads(body).get("type")
            except ValueError:
                kind = None
            # Signed either way (RFC 9421 first, draft-cavage after a refusal), with a digest.
            digest = "Digest" in request.headers or "Content-Digest" in request.headers
            if "Signature" not in request.headers or not digest:
                bad[key + " unsigned"] += 1
            elif kind != "Announce":
                bad[key + f" {kind}"] += 1
            else:
                counts[key] += 1
            if latency:  # a far server: its answer takes a round trip of `latency`
                await asyncio.sleep(latency)
            return web.Response(status=202)

        return receive

    async def answer_late(request: web.Request) -> web.Response:
        await request.read()
        if latency:
            await asyncio.sleep(latency)
        return web.Response(status=204)

    runners: list[web.AppRunner] = []
    ports: list[int] = []
    for index in range(servers):
        app = web.Application()
        port_box = [0]
        handler = make_handler(port_box)
        app.router.add_post("/users/{name}/inbox", handler)
        app.router.add_post("/round-trip", answer_late)
        if index < shared:
            app.router.add_post("/inbox", handler)
        runner, port = await serve_on_loopback(app)
        port_box[0] = port
        runners.append(runner)
        ports.append(port)
    conn.send({"ports": ports, "pinned": pinned})
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, next_command, conn)
            if command == "snapshot":
                conn.send({"counts": dict(counts), "bad": dict(bad)})
            else:  # "stop"
                break
    finally:
        for runner in runners:
            await runner.cleanup()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with contextlib.suppress(OSError):  # the parent may be gone
            conn.send(
                {"counts": dict(counts), "bad": dict(bad), "cpu": usage.ru_utime + usage.ru_stime}
            )


class Receivers:
    """The parent's handle on the child process."""

    def __init__(self, servers: int, shared: int, latency: float = 0.0) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=run_receivers, args=(child_conn, servers, shared, latency), daemon=True
        )
        self.ports: list[int] = []
        self.pinned = ""

    def start(self) -> None:
        self.process.start()
        if not self.conn.poll(30):
            raise BenchFailure("the receiving servers did not start within 30 s")
        answer = self.conn.recv()
        self.ports, self.pinned = answer["ports"], answer["pinned"]

    def _ask(self, command: str) -> dict[str, Any]:
        self.conn.send(command)
        if not self.conn.poll(30):
            raise BenchFailure(f"the receiving servers did not answer {command!r}")
        answer: dict[str, Any] = self.conn.recv()
        return answer

    def snapshot(self) -> dict[str, Any]:
        return self._ask("snapshot")

    def stop(self) -> dict[str, Any] | None:
        answer = None
        if self.process.is_alive():
            try:
                answer = self._ask("stop")
            except (BenchFailure, OSError, EOFError):
                answer = None
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its handle
            self.process.join(5)
        return answer


# ---------------------------------------------------------------- seeding (not timed)


@dataclass
class Seeded:
    owner_id: int
    group_id: int
    inboxes: set[str]  # "port path" keys, as the receivers count them
    followers: int


def follower_facts(port: int, index: int, shared: bool) -> remote.RemoteActorFacts:
    base = f"http://127.0.0.1:{port}"
    iri = f"{base}/users/f{index}"
    return remote.RemoteActorFacts(
        iri=iri,
        username=f"f{index}",
        domain=f"127.0.0.1:{port}",
        display_name=f"Follower {index}",
        summary="",
        inbox=iri + "/inbox",
        shared_inbox=base + "/inbox" if shared else None,
        profile_url=iri,
    )


async def seed(node: NodeContext, ports: list[int], shared: int, followers: int) -> Seeded:
    now = node.clock.now()
    limits = node.settings.limits
    async with node.transaction() as session:
        owner = await create_member(
            session,
            node.passwords,
            limits,
            username="owner",
            password="correct horse battery",
            display_name="Owner",
            now=now,
        )
        group = await groups.create_group(
            session, limits, owner_id=owner.id, slug="pumps", name="Insulin pumps", now=now
        )
        owner_id, group_id = owner.id, group.id
    everyone = [
        follower_facts(ports[i % len(ports)], i, (i % len(ports)) < shared)
        for i in range(followers)
    ]
    inboxes = set()
    for facts in everyone:
        url = facts.shared_inbox or facts.inbox
        port_path = url.removeprefix("http://127.0.0.1:").split("/", 1)
        inboxes.add(f"{port_path[0]} /{port_path[1]}")
    for start in range(0, followers, SEED_BATCH):
        async with node.transaction() as session:
            for facts in everyone[start : start + SEED_BATCH]:
                member = await remote.upsert_remote_member(session, facts, now)
                session.add(
                    Membership(
                        group_id=group_id,
                        member_id=member.id,
                        state="active",
                        role="member",
                        created_at=now,
                        updated_at=now,
                    )
                )
            await session.flush()
    async with node.transaction() as session:
        active = (
            await session.execute(
                select(func.count())
                .select_from(Membership)
                .where(Membership.group_id == group_id, Membership.state == "active")
            )
        ).scalar_one()
    if active != followers + 1:  # the owner too
        raise BenchFailure(f"seeding made {active - 1} active remote members, not {followers}")
    return Seeded(owner_id, group_id, inboxes, followers)


# ---------------------------------------------------------------- one fan-out


@dataclass
class FanOut:
    announces: int
    deliveries: int
    wall: float
    cpu: float


async def post_and_deliver(
    node: NodeContext,
    observer: Observer,
    seeded: Seeded,
    title: str,
    before: int,
    deadline: float = DELIVERY_DEADLINE_SECONDS,
) -> FanOut:
    """Start a thread, then wait until every delivery it queued is delivered (timed)."""
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    async with node.transaction() as session:
        view = await groups.group_view_by_id(
            session, seeded.group_id, Viewer(seeded.owner_id), need=Action.POST
        )
        await posts.start_thread(
            session,
            node.settings.limits,
            view,
            title=title,
            draft=posts.Draft(POST_BODY),
            now=node.clock.now(),
        )

    total = {"rows": 0}

    async def all_delivered() -> bool:
        states = await observer.delivery_states()
        stuck = {s: n for s, n in states.items() if s in ("failed", "abandoned", "retrying")}
        if stuck:
            raise BenchFailure(f"deliveries failed (a receiver did not answer 2xx): {stuck}")
        total["rows"] = sum(states.values())
        return total["rows"] > before and states.get("delivered", 0) == total["rows"]

    await wait_until(
        all_delivered,
        "every delivery to be delivered",
        deadline,
        POLL_SECONDS,
        asyncio.sleep,
    )
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    deliveries = total["rows"] - before
    announces = await count_announces(node)
    return FanOut(announces, deliveries, wall, cpu)


async def count_announces(node: NodeContext) -> int:
    async with node.transaction() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(OutboxActivity)
                    .where(OutboxActivity.type == "Announce")
                )
            ).scalar_one()
        )


async def hosts_per_batch(node: NodeContext, batch: int) -> float:
    """How many receiving servers one claimed batch spans, in the queue's claim order
    (next_attempt_at, id): with `per_host` sends per server, this bounds the concurrency."""
    async with node.transaction() as session:
        inboxes = list(
            (
                await session.execute(
                    select(Delivery.inbox_url).order_by(Delivery.next_attempt_at, Delivery.id)
                )
            ).scalars()
        )
    windows = [inboxes[i : i + batch] for i in range(0, len(inboxes), batch)]
    return sum(len({inbox_host(url) for url in window}) for window in windows) / len(windows)


async def retried(node: NodeContext) -> int:
    async with node.transaction() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(Delivery).where(Delivery.attempts != 1)
                )
            ).scalar_one()
        )


# ---------------------------------------------------------------- the signing baseline


async def signing_rate(node: NodeContext, federation: Federation, port: int) -> tuple[float, int]:
    """RSA-2048 PKCS#1 v1.5 / SHA-256 signatures per second over a delivery's signing string:
    the group's key, the Announce just delivered, the headers sign_cavage covers."""
    async with node.transaction() as session:
        activity = (
            await session.execute(
                select(OutboxActivity).where(OutboxActivity.type == "Announce").limit(1)
            )
        ).scalar_one()
        signer = await federation.directory.signer(
            session, activity.signer, activity.actor_iri + "#main-key"
        )
    body = activity.body.encode()
    headers = {
        "host": f"127.0.0.1:{port}",
        "date": "Sun, 01 Nov 2026 12:00:00 GMT",
        "digest": httpsig.digest_header(body),
    }
    text = httpsig.cavage_signing_string(
        "POST", "/inbox", headers, ("(request-target)", "host", "date", "digest")
    ).encode()
    key = signer.private_key
    if key.key_size != 2048:
        raise BenchFailure(f"the group's key is RSA-{key.key_size}, not RSA-2048")
    signs = 0
    start = time.perf_counter()
    deadline = start + SIGNING_SECONDS
    while time.perf_counter() < deadline and signs < 1_000_000:
        key.sign(text, padding.PKCS1v15(), hashes.SHA256())
        signs += 1
    return signs / (time.perf_counter() - start), len(body)


# ---------------------------------------------------------------- the run


def check_received(
    seeded: Seeded, announces: int, snapshot: dict[str, Any], previous: dict[str, int]
) -> int:
    counts: dict[str, int] = snapshot["counts"]
    if snapshot["bad"]:
        raise BenchFailure(f"receivers got unexpected requests: {snapshot['bad']}")
    unexpected = set(counts) - seeded.inboxes
    if unexpected:
        raise BenchFailure(f"deliveries to inboxes nobody follows from: {sorted(unexpected)[:5]}")
    wrong = {
        inbox: counts.get(inbox, 0) - previous.get(inbox, 0)
        for inbox in seeded.inboxes
        if counts.get(inbox, 0) - previous.get(inbox, 0) != announces
    }
    if wrong:
        sample = dict(list(wrong.items())[:5])
        raise BenchFailure(f"{len(wrong)} inboxes did not get {announces} Announces: {sample}")
    return sum(counts.values()) - sum(previous.values())


async def round_trip(port: int, tries: int = 5) -> float:
    """The shortest of a few POSTs to a receiver that answers as late as its inboxes do: the
    round trip as this process sees it, the delivery's own work aside."""
    best = float("inf")
    async with aiohttp.ClientSession() as http:
        for _ in range(tries):
            start = time.perf_counter()
            async with http.post(f"http://127.0.0.1:{port}/round-trip", data=b"{}") as response:
                await response.read()
            best = min(best, time.perf_counter() - start)
    return best


async def bench(args: argparse.Namespace, receivers: Receivers, data_dir: Path) -> None:
    node_port = unused_port()  # the node does not serve here; its domain only needs a port
    node = await NodeContext.open(node_settings(data_dir, node_port))
    observer = Observer(node.settings.resolved_database_url)
    federation: Federation | None = None
    try:
        attach_actor_keys(node)
        t = time.perf_counter()
        seeded = await seed(node, receivers.ports, args.shared, args.followers)
        seed_seconds = time.perf_counter() - t
        say(
            f"seeded {seeded.followers} remote followers on {len(receivers.ports)} servers "
            f"({args.shared} with a sharedInbox) -> {len(seeded.inboxes)} distinct inboxes "
            f"in {seed_seconds:.1f} s (not timed)"
        )
        federation = Federation(node)
        queue = federation.delivery_queue
        if args.delivery_batch:  # an experiment: the code's default is left alone otherwise
            queue.batch = args.delivery_batch
        federation.start_workers()
        keep_what_started()

        # ---- the timed run
        deadline = DELIVERY_DEADLINE_SECONDS
        if args.latency:  # a far server: at least a round trip per `per_host` deliveries
            rtt = await round_trip(receivers.ports[0])
            deadline += 4 * len(seeded.inboxes) * rtt / queue.per_host
        first = await post_and_deliver(
            node, observer, seeded, "Night-time lows on a new pump", 0, deadline
        )
        if first.deliveries != first.announces * len(seeded.inboxes):
            raise BenchFailure(
                f"{first.deliveries} deliveries queued for {first.announces} Announces to "
                f"{len(seeded.inboxes)} inboxes"
            )
        snapshot = receivers.snapshot()
        received = check_received(seeded, first.announces, snapshot, {})
        if await retried(node):
            raise BenchFailure("some deliveries needed more than one attempt")
        rate = first.deliveries / first.wall
        rss_after_timed = max_rss_kib()
        spread = await hosts_per_batch(node, queue.batch)

        # ---- the signing baseline, same process, same core
        signs_per_second, body_bytes = await signing_rate(node, federation, receivers.ports[0])

        # ---- the profiled run (diagnostics only; a far server's run is bound by its latency)
        profile = cProfile.Profile()
        with SqlStats(node.engine) as sql:
            if not args.latency:
                profile.enable()
                second = await post_and_deliver(
                    node, observer, seeded, "Morning highs: basal or bolus?", first.deliveries
                )
                profile.disable()
                snapshot2 = receivers.snapshot()
                check_received(
                    seeded, second.announces - first.announces, snapshot2, snapshot["counts"]
                )
    finally:
        if federation is not None:
            await federation.close()
        await observer.close()
        await node.close()
    rss_after = max_rss_kib()

    say()
    say("== fan-out: 1 thread -> remote followers (timed run, no profiler) ==")
    say(f"followers                  {seeded.followers} on {len(receivers.ports)} servers")
    say(f"inboxes after collapsing   {len(seeded.inboxes)}")
    say(f"Announces queued           {first.announces} (Announce{{Create}} + Announce{{Page}})")
    say(f"deliveries                 {first.deliveries}")
    say(f"requests received          {received} (every inbox got each Announce exactly once)")
    say(f"wall time                  {first.wall:.2f} s (start_thread -> last delivered)")
    say(f"deliveries/s               {rate:.0f}")
    say(
        f"node CPU during the run    {first.cpu:.2f} s = {100 * first.cpu / first.wall:.0f}% "
        "of one core"
    )
    say(
        f"node CPU per delivery      {1000 * first.cpu / first.deliveries:.2f} ms "
        f"(a CPU-bound ceiling of {first.deliveries / first.cpu:.0f} deliveries/s on one core)"
    )
    say(
        f"delivery queue             batch {queue.batch}, per_host {queue.per_host}; a claimed "
        f"batch spans {spread:.1f} servers on average (claim order)"
    )
    say(f"RSA-2048 signing rate      {signs_per_second:.0f} signatures/s ({body_bytes} B body)")
    say(f"deliveries/s / signing/s   {rate / signs_per_second:.3f}")
    say(
        f"signing share of the run   {100 * first.deliveries / signs_per_second / first.wall:.0f}% "
        "of the wall time would be signing at that rate"
    )
    say(f"peak RSS before seeding    {args.rss_before / 1024:.1f} MiB")
    say(f"peak RSS after timed run   {rss_after_timed / 1024:.1f} MiB")
    say(
        f"peak RSS at the end        {rss_after / 1024:.1f} MiB "
        f"(delta {(rss_after - args.rss_before) / 1024:+.1f} MiB)"
    )
    say(f"processes                  node {args.pinned}; receivers {receivers.pinned}")
    if args.latency:
        bound = queue.per_host / rtt
        say()
        say(f"== a far server: every answer takes {1000 * args.latency:.0f} ms ==")
        say(f"round trip measured        {1000 * rtt:.0f} ms (one POST, this run)")
        say(f"in flight per server       {queue.per_host}")
        say(f"in-flight / round trip     {bound:.1f} deliveries/s (the latency's bound)")
        say(f"deliveries/s / that bound  {rate / bound:.3f} (goal >= 0.9)")
        return
    say()
    say("== profiled run (a second thread, same followers; cProfile inflates the time) ==")
    say(
        f"wall time under cProfile   {second.wall:.2f} s for {second.deliveries} deliveries "
        f"({second.deliveries / second.wall:.0f}/s)"
    )
    say(sql.report(second.deliveries, "delivery"))
    say(profile_report(profile))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--shared", type=int, default=25, help="servers with a sharedInbox")
    parser.add_argument(
        "--delivery-batch",
        type=int,
        default=0,
        help="experiment: set DeliveryQueue.batch (default: leave the code's value)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds each receiver takes to answer (a far server); skips the profiled run",
    )
    args = parser.parse_args()
    if not (0 < args.servers <= 200 and 0 <= args.shared <= args.servers):
        parser.error("need 0 < servers <= 200 and 0 <= shared <= servers")
    if not 0 < args.followers <= 20_000:
        parser.error("need 0 < followers <= 20000")
    if not 0 <= args.delivery_batch <= 10_000:
        parser.error("need 0 <= delivery-batch <= 10000")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.rss_before = max_rss_kib()
    if not 0 <= args.latency <= 5:
        parser.error("need 0 <= latency <= 5")
    receivers = Receivers(args.servers, args.shared, args.latency)
    return run_benchmark(
        "fanout",
        receivers,
        "receivers'",
        lambda data_dir: bench(args, receivers, data_dir),
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
