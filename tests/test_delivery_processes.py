"""Deliveries across real processes: a server killed mid-fan-out, two workers sharing one
PostgreSQL queue, and a receiver that was down while a conversation went on.

The hospital runs as a real `healthnode serve` or `healthnode worker` subprocess where the test
is about processes; receiving servers are small aiohttp apps in the test process that record
every (inbox path, activity id) they are sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select, text

from federation.convert import Documents
from federation.jsonld import PUBLIC
from federation.keysink import attach_actor_keys
from federation.origins import received_origin
from federation.outbox import Outbox
from keys.secret import SECRET_ENV
from node import groups, members, posts, remote
from node.actor_keys import INSTANCE_ACTOR
from node.clock import SystemClock
from node.config import Settings
from node.ids import new_object_id
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import (
    ConditionGroup,
    Delivery,
    InboxItem,
    Member,
    Membership,
    OutboxActivity,
    Post,
    Thread,
)
from tests import databases
from tests.browser import Browser
from tests.conftest import CHEAP_PASSWORDS, NodeFactory
from tests.federation_harness import Recorder, RunningNode, eventually, free_port, start_node
from tests.keypool import pooled_key_pair
from web.app import create_app
from web.cli import CLOCK_RATE_ENV, DATABASE_URL_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
SQLITE_ONLY = pytest.mark.skipif(
    databases.BACKEND == "postgresql",
    reason="SQLite's start-up recovery; PostgreSQL relies on leases",
)
POSTGRESQL_ONLY = pytest.mark.skipif(
    databases.BACKEND != "postgresql",
    reason="several worker processes share a queue on PostgreSQL only",
)


# --- the `healthnode` command as a subprocess --------------------------------------------------


def command_env() -> dict[str, str]:
    """The caller's environment without anything that would move the database or the secret."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (DATABASE_URL_ENV, SECRET_ENV, "PYTHONWARNINGS")
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


@contextmanager
def _log_file(path: Path) -> Iterator[IO[bytes]]:
    with path.open("ab") as handle:
        yield handle


@dataclass
class Command:
    """One running `healthnode` subprocess, its output going to a log file."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    async def stop(self, signum: int = signal.SIGKILL, seconds: float = 15.0) -> int:
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signum)
        return await asyncio.wait_for(self.process.wait(), seconds)


async def spawn(
    name: str, work_dir: Path, *args: str | Path, env: dict[str, str] | None = None
) -> Command:
    log = work_dir / f"{name}.log"
    with _log_file(log) as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "web.cli",
            *map(str, args),
            cwd=work_dir,
            env={**command_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Command(name, process, log)


async def stop_all(commands: list[Command]) -> None:
    """For finally blocks: whatever still runs is killed."""
    for command in commands:
        with suppress(Exception):
            await command.stop(signal.SIGKILL, seconds=10)


async def wait_until_serving(command: Command, base_url: str, seconds: float = 30.0) -> None:
    async def answering() -> bool:
        if command.process.returncode is not None:
            raise AssertionError(f"{command.name} exited early:\n{command.tail()}")
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(base_url + "/", timeout=aiohttp.ClientTimeout(total=2)) as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await eventually(answering, f"{command.name} to answer on {base_url}", seconds, interval=0.1)


# --- receiving servers in the test process -----------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    inbox: str  # host:port/path
    activity_id: str
    activity_type: str
    sender_port: int


@dataclass
class Receivers:
    """Several receiving servers that answer 202 after `delay` seconds and record what came."""

    delay: float
    servers: list[TestServer] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    handling: int = 0  # requests received and not yet answered

    @classmethod
    async def start(cls, count: int, delay: float) -> Receivers:
        receivers = cls(delay)
        for _ in range(count):
            app = web.Application()
            app.router.add_post("/{tail:.*}", receivers._inbox)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            receivers.servers.append(server)
        return receivers

    async def _inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        document = json.loads(body)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.receipts.append(
            Receipt(
                request.host + request.path,
                str(document.get("id")),
                str(document.get("type")),
                int(peer[1]) if peer else 0,
            )
        )
        self.handling += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # a receiver that answers slowly on purpose
        finally:
            self.handling -= 1
        return web.Response(status=202)

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers if server.port is not None]

    def pairs(self) -> Counter[tuple[str, str]]:
        return Counter((receipt.inbox, receipt.activity_id) for receipt in self.receipts)

    async def close(self) -> None:
        for server in self.servers:
            await server.close()


# --- nodes -------------------------------------------------------------------------------------


async def count(node: NodeContext, statement: Any) -> int:
    async with node.transaction() as session:
        return int((await session.execute(statement)).scalar() or 0)


async def scalar(node: NodeContext, statement: Any) -> Any:
    async with node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def states(node: NodeContext, activity_ids: list[str]) -> Counter[str]:
    async with node.transaction() as session:
        rows = await session.execute(
            select(Delivery.state, func.count())
            .where(Delivery.activity_id.in_(activity_ids))
            .group_by(Delivery.state)
        )
        return Counter({state: int(number) for state, number in rows.all()})


async def registered(running: RunningNode, username: str) -> Browser:
    browser = await running.browser()
    await browser.register(username)
    return browser


async def follow(browser: Browser, handle: str) -> None:
    await browser.get("/authorize_interaction")
    page = await browser.post("/groups/follow", {"handle": handle})
    assert page.status == 200, page.text[:500]


async def accepted_follow(running: RunningNode) -> int:
    """Local members of the node whose Follow of a remote group was accepted."""
    return await count(
        running.node,
        select(func.count())
        .select_from(Membership)
        .where(Membership.state == "active", Membership.follow_activity_id.is_not(None)),
    )


async def start_real_clock_node(make_node: NodeFactory, name: str) -> RunningNode:
    """start_node with the system clock: a subprocess signs with the real time."""
    port = free_port()
    node = await make_node(name, domain=f"127.0.0.1:{port}", clock=SystemClock())
    recorder = Recorder()
    server = TestServer(
        create_app(node, trace_configs=[recorder.trace_config()]), host="127.0.0.1", port=port
    )
    await server.start_server()
    return RunningNode(name, node, server, recorder)


async def prepare_hospital(settings: Settings) -> None:
    """A data dir with a member, nurse, who owns a public group, t1d."""
    node = await NodeContext.open(settings)
    attach_actor_keys(node, pooled_key_pair)
    try:
        async with node.transaction() as session:
            nurse = await members.create_member(
                session, node.passwords, settings.limits, username="nurse",
                password="correct horse battery", display_name="Nurse", now=node.clock.now(),
            )  # fmt: skip
            await groups.create_group(
                session, settings.limits, owner_id=nurse.id, slug="t1d",
                name="Type 1 diabetes", now=node.clock.now(),
            )  # fmt: skip
    finally:
        await node.close()


async def add_remote_followers(
    node: NodeContext, group_slug: str, ports: list[int], per_server: int
) -> list[str]:
    """Remote people on the given servers follow the group, each with an inbox of their own;
    answers the inboxes (host:port/path). Nothing is sent: no outbox sink is attached here."""
    inboxes = []
    async with node.transaction() as session:
        group = await groups.find_group(session, group_slug)
        assert group is not None
        group_iri = f"{node.settings.base_url}/g/{group.slug}"
        now = node.clock.now()
        for port in ports:
            for index in range(per_server):
                iri = f"http://127.0.0.1:{port}/users/f{index}"
                facts = remote.RemoteActorFacts(
                    iri=iri, username=f"f{index}", domain=f"127.0.0.1:{port}",
                    display_name=f"Follower {index}", summary="", inbox=f"{iri}/inbox",
                    shared_inbox=None, profile_url=None,
                )  # fmt: skip
                member = await remote.upsert_remote_member(session, facts, now)
                follow_activity = {
                    "id": f"{iri}#follow", "type": "Follow", "actor": iri, "object": group_iri,
                }  # fmt: skip
                await remote.accept_remote_follow(
                    session, group, member, received_origin(session, follow_activity), now
                )
                inboxes.append(f"127.0.0.1:{port}/users/f{index}/inbox")
    return inboxes


async def start_thread(node: NodeContext, username: str, slug: str, title: str, body: str) -> str:
    """The domain service, with this process's outbox sink queueing what federates."""
    async with node.transaction() as session:
        author = await members.find_member(session, username)
        assert author is not None
        view = await groups.view_group(session, slug, Viewer(author.id))
        thread = await posts.start_thread(
            session, node.settings.limits, view, title=title, draft=posts.Draft(body),
            now=node.clock.now(),
        )  # fmt: skip
        return thread.id


async def announces_of(node: NodeContext, since_ids: set[str]) -> dict[str, str]:
    """The group's Announce activities not in `since_ids`: row id -> activity IRI."""
    async with node.transaction() as session:
        rows = await session.execute(
            select(OutboxActivity.id, OutboxActivity.body).where(OutboxActivity.type == "Announce")
        )
        return {
            row_id: json.loads(body)["id"] for row_id, body in rows.all() if row_id not in since_ids
        }


# --- 1. a server killed mid-fan-out ------------------------------------------------------------


@SQLITE_ONLY
async def test_a_node_killed_mid_fanout_delivers_everything_after_restart(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    # Given a hospital data dir with a member who owns a public group, served by `healthnode
    # serve` on a port of its own
    port = free_port()
    domain = f"127.0.0.1:{port}"
    base_url = f"http://{domain}"
    data_dir = tmp_path / "hospital-data"
    settings = Settings(domain=domain, data_dir=data_dir, password_cost=CHEAP_PASSWORDS)
    await prepare_hospital(settings)
    serve_args = ("serve", "--domain", domain, "--port", str(port), "--data-dir", data_dir)
    async with AsyncExitStack() as cleanup:
        commands: list[Command] = []
        hospital = await NodeContext.open(settings, clock=SystemClock())
        cleanup.push_async_callback(hospital.close)
        receivers = await Receivers.start(5, delay=0.05)
        cleanup.push_async_callback(receivers.close)
        charity = await start_real_clock_node(make_node, "charity")
        cleanup.push_async_callback(charity.close)
        cleanup.push_async_callback(stop_all, commands)  # first of all: no process outlives it
        commands.append(await spawn("serve-1", tmp_path, *serve_args))
        await wait_until_serving(commands[-1], base_url)

        # And a charity node in this process whose member follows the group over HTTP
        bea = await registered(charity, "bea")
        await follow(bea, f"t1d@{domain}")
        await eventually(lambda: accepted_follow(charity), "the Accept on the charity")
        # (the charity already knows the nurse, so what it is sent needs no fetch from a
        # hospital that may be down at that moment)
        async with charity.node.transaction() as session:
            await charity.federation.directory.fetch_actor(
                session, f"{base_url}/u/nurse", charity.node.clock.now()
            )

        # And 300 more followers on 5 slow receiving servers, written into the running
        # node's SQLite database from this process
        inboxes = await add_remote_followers(hospital, "t1d", receivers.ports, per_server=60)
        assert len(set(inboxes)) == 300

        # When a thread is started (its two announces are queued for 301 inboxes)
        hospital.sinks.append(Outbox(Documents(settings), hospital.clock, lambda: None))
        before = set(await announces_of(hospital, set()))
        await start_thread(hospital, "nurse", "t1d", "Killed mid fan-out", "Does it arrive?")
        announces = await announces_of(hospital, before)
        assert len(announces) == 2, announces  # Announce{Create{Page}} and Announce{Page}
        expected = {(inbox, iri) for inbox in inboxes for iri in announces.values()}

        # And the server is killed with SIGKILL while receivers are still being sent to
        async def mid_fan_out() -> bool:
            return len(receivers.receipts) >= 150 and receivers.handling > 0

        await eventually(mid_fan_out, "the fan-out to begin", seconds=20, interval=0.005)
        await commands[-1].stop(signal.SIGKILL)
        received_at_kill = len(set(receivers.pairs()) & expected)
        left_at_kill = await states(hospital, list(announces))
        assert received_at_kill < len(expected), "the fan-out had finished before the kill"
        assert left_at_kill["in_flight"] > 0, left_at_kill  # claimed and being sent when killed

        # And `healthnode serve` is started again on the same data dir
        commands.append(await spawn("serve-2", tmp_path, *serve_args))
        await wait_until_serving(commands[-1], base_url)

        # Then every receiver's inbox gets both announces at least once
        async def all_received() -> bool:
            return expected <= set(receivers.pairs())

        try:
            await eventually(all_received, "every inbox to get both announces", seconds=25)
        except AssertionError:
            pytest.fail(
                f"{len(expected - set(receivers.pairs()))} (inbox, announce) pairs never "
                f"arrived; queue: {await states(hospital, list(announces))}\n"
                f"{commands[-1].tail()}"
            )

        # And every delivery ends delivered, none failed
        async def settled() -> Counter[str] | None:
            found = await states(hospital, list(announces))
            return found if set(found) == {"delivered"} else None

        final = await eventually(settled, "every delivery to be recorded as delivered", seconds=10)
        assert final["delivered"] == 2 * 301

        # And the charity, which runs our own inbox, shows the thread exactly once
        async def charity_has_both() -> bool:
            done = await count(
                charity.node,
                select(func.count())
                .select_from(InboxItem)
                .where(InboxItem.activity_id.in_(announces.values()), InboxItem.state == "done"),
            )
            return done == 2

        await eventually(charity_has_both, "both announces processed on the charity", seconds=10)
        threads = await count(
            charity.node,
            select(func.count()).select_from(Thread).where(Thread.title == "Killed mid fan-out"),
        )
        assert threads == 1
        posts_in_thread = await count(
            charity.node,
            select(func.count())
            .select_from(Post)
            .join(Thread, Thread.id == Post.thread_id)
            .where(Thread.title == "Killed mid fan-out"),
        )
        assert posts_in_thread == 1
        failed = await count(
            charity.node,
            select(func.count()).select_from(InboxItem).where(InboxItem.state != "done"),
        )
        assert failed == 0


# --- 2. two worker processes on one PostgreSQL queue -------------------------------------------


def local_ports_of(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (Linux /proc), to tell senders apart."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        with suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@POSTGRESQL_ONLY
async def test_two_worker_processes_on_postgresql_send_each_delivery_once(
    test_databases: databases.TestDatabases, tmp_path: Path
) -> None:
    # Given a hospital schema on PostgreSQL, its instance key sealed with the data dir's secret
    data_dir = tmp_path / "hospital-data"
    data_dir.mkdir()
    url = await test_databases.fresh("hospital_workers", data_dir)
    domain = f"127.0.0.1:{free_port()}"
    settings = Settings(domain=domain, data_dir=data_dir, database_url=url)
    async with AsyncExitStack() as cleanup:
        receivers = await Receivers.start(10, delay=0.03)
        cleanup.push_async_callback(receivers.close)
        hospital = await NodeContext.open(settings, clock=SystemClock())
        cleanup.push_async_callback(hospital.close)
        commands: list[Command] = []
        cleanup.push_async_callback(stop_all, commands)

        # And 20 activities by the instance actor queued for 100 inboxes on 10 servers
        documents = Documents(settings)
        actor = f"{settings.base_url}/actor"
        inboxes = [
            f"http://127.0.0.1:{receivers.ports[index % 10]}/inbox/{index}" for index in range(100)
        ]
        now = hospital.clock.now()
        activity_iris = []
        async with hospital.transaction() as session:
            for number in range(20):
                activity_id = new_object_id()
                document = documents.activity(
                    activity_id, "Create", actor,
                    {"id": f"{actor}/notes/{number}", "type": "Note", "content": f"n{number}"},
                    to=[PUBLIC],
                )  # fmt: skip
                activity_iris.append(document["id"])
                session.add(
                    OutboxActivity(
                        id=activity_id, actor_iri=actor, signer=INSTANCE_ACTOR, type="Create",
                        body=json.dumps(document), created_at=now,
                    )
                )  # fmt: skip
                await session.flush()
                session.add_all(
                    Delivery(
                        activity_id=activity_id,
                        inbox_url=inbox,
                        state="queued",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                        last_error="",
                    )
                    for inbox in inboxes
                )
        expected = {
            (inbox.removeprefix("http://"), iri) for inbox in inboxes for iri in activity_iris
        }
        assert len(expected) == 2000

        # When two worker processes start at once on the same database and data dir, held back
        # by a table lock until both wait on it, so that their first claims race each other
        worker_args = ("worker", "--domain", domain, "--database-url", url, "--data-dir", data_dir)
        async with hospital.engine.connect() as held:
            await held.execute(text("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE"))
            commands.append(await spawn("worker-1", tmp_path, *worker_args))
            commands.append(await spawn("worker-2", tmp_path, *worker_args))

            async def both_waiting() -> bool:
                for command in commands:
                    if command.process.returncode is not None:
                        raise AssertionError(f"{command.name} exited:\n{command.tail()}")
                waiting = await count(
                    hospital,
                    text(
                        "SELECT count(DISTINCT pid) FROM pg_locks"
                        " WHERE relation = 'deliveries'::regclass AND NOT granted"
                    ),
                )
                return waiting >= 2

            await eventually(both_waiting, "both workers to wait for the queue", seconds=30)
            await held.commit()

        # Then every (inbox, activity) pair is received, and every row ends delivered
        async def all_delivered() -> bool:
            for command in commands:
                if command.process.returncode is not None:
                    raise AssertionError(f"{command.name} exited:\n{command.tail()}")
            if len(receivers.receipts) < 2000:
                return False
            delivered = await count(
                hospital,
                select(func.count()).select_from(Delivery).where(Delivery.state == "delivered"),
            )
            return delivered == 2000

        try:
            await eventually(all_delivered, "2,000 deliveries", seconds=60, interval=0.1)
        except AssertionError as error:
            pytest.fail(
                f"{error}; received {len(receivers.receipts)}\n"
                + "\n".join(command.tail() for command in commands)
            )
        senders = [local_ports_of(command.pid) for command in commands]

        # When the workers are sent SIGTERM
        returncodes = await asyncio.gather(
            *(command.stop(signal.SIGTERM, seconds=10) for command in commands)
        )

        # Then they exit cleanly, each after the batch in hand: whatever they sent has arrived,
        # and nothing more can, so a late duplicate would be among the receipts now
        assert returncodes == [0, 0], "\n".join(command.tail() for command in commands)

        # And each was received exactly once
        pairs = receivers.pairs()
        duplicates = {pair: times for pair, times in pairs.items() if times > 1}
        assert not duplicates, f"{len(duplicates)} pairs sent more than once: {duplicates}"
        assert set(pairs) == expected
        assert len(receivers.receipts) == 2000
        async with hospital.transaction() as session:
            rows = await session.execute(
                select(Delivery.state, Delivery.attempts, func.count()).group_by(
                    Delivery.state, Delivery.attempts
                )
            )
            assert [tuple(row) for row in rows.all()] == [("delivered", 1, 2000)]
        # And both workers took part (told apart by the local ports of their connections)
        shares = [
            sum(1 for receipt in receivers.receipts if receipt.sender_port in ports)
            for ports in senders
        ]
        assert all(share > 0 for share in shares), f"one worker sent nothing: {shares}"


# --- 3. a receiver that was down ---------------------------------------------------------------


async def test_a_receiver_that_was_down_gets_everything_in_causal_order(
    make_node: NodeFactory,
) -> None:
    async with AsyncExitStack() as cleanup:
        hospital = await start_node(make_node, "hospital")
        cleanup.push_async_callback(hospital.close)
        charity = await start_node(make_node, "charity")
        cleanup.push_async_callback(charity.close)

        # Given a public group on the hospital, followed by a member of the charity
        nurse = await registered(hospital, "nurse")
        await nurse.get("/groups/new")
        page = await nurse.post(
            "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
        )
        assert page.path == "/g/t1d", page.text[:300]
        bea = await registered(charity, "bea")
        await follow(bea, f"t1d@{hospital.domain}")
        await eventually(lambda: accepted_follow(charity), "the Accept on the charity")
        charity_inbox = (
            await scalar(
                hospital.node,
                select(Member.shared_inbox_url).where(Member.username == "bea"),
            )
        ) or await scalar(hospital.node, select(Member.inbox_url).where(Member.username == "bea"))
        assert charity_inbox and charity_inbox.startswith(charity.base_url), charity_inbox

        # And the charity's server is stopped (its database is kept)
        port = charity.server.port
        await charity.server.close()

        # When the hospital publishes a thread and then a reply to it
        page = await nurse.post("/g/t1d/new", {"title": "While you were out", "body": "First."})
        assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
        page = await nurse.post(f"{page.path}/reply", {"body": "And a reply to it."})
        assert page.status == 200, page.text[:300]

        # And every attempt to deliver them fails, to be retried later
        async def attempted() -> list[Any] | None:
            async with hospital.node.transaction() as session:
                rows = (
                    await session.execute(
                        select(Delivery.state, Delivery.attempts, Delivery.last_error)
                        .join(OutboxActivity, OutboxActivity.id == Delivery.activity_id)
                        .where(
                            Delivery.inbox_url == charity_inbox,
                            OutboxActivity.type == "Announce",
                        )
                    )
                ).all()
            if len(rows) == 3 and all(state == "queued" and n >= 1 for state, n, _ in rows):
                return list(rows)
            return None

        tried = await eventually(attempted, "three failed attempts to reach the charity")
        assert all(error for _, _, error in tried), tried

        # When the charity's server is started again on the same port, the hospital's clock
        # passes the retry time, and its delivery worker is woken
        restarted = TestServer(create_app(charity.node), host="127.0.0.1", port=port)
        await restarted.start_server()
        cleanup.push_async_callback(restarted.close)
        hospital.node.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
        hospital.federation.delivery_worker.wake()

        # Then the charity has the thread and the reply, the reply under the thread's first post
        async def reply_on_charity() -> Any:
            return await scalar(
                charity.node, select(Post.id).where(Post.source == "And a reply to it.")
            )

        reply_id = await eventually(reply_on_charity, "the reply on the charity")
        async with charity.node.transaction() as session:
            reply = await session.get(Post, reply_id)
            assert reply is not None
            thread = await session.get(Thread, reply.thread_id)
            assert thread is not None and thread.title == "While you were out"
            first = await posts.first_post(session, thread.id)
            group = await session.get(ConditionGroup, thread.group_id)
        assert first.source == "First."
        assert reply.parent_id == first.id
        assert group is not None and group.domain == hospital.domain
        assert (
            await count(
                charity.node,
                select(func.count())
                .select_from(Thread)
                .where(Thread.title == "While you were out"),
            )
            == 1
        )
        assert (
            await count(
                charity.node,
                select(func.count()).select_from(Post).where(Post.thread_id == thread.id),
            )
            == 2
        )

        # And the hospital records every delivery to the charity as delivered
        async def delivered() -> bool:
            found = await scalar(
                hospital.node,
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.inbox_url == charity_inbox, Delivery.state != "delivered"),
            )
            return found == 0

        await eventually(delivered, "the hospital to record the deliveries")

        # And the charity applied each of them without a failure or a retry left over
        unfinished = await count(
            charity.node,
            select(func.count()).select_from(InboxItem).where(InboxItem.state != "done"),
        )
        assert unfinished == 0


# --- 4. a receiver down for minutes ------------------------------------------------------------


class Switchable:
    """A receiving server on a fixed port that can be stopped (connections refused) and
    started again; records (inbox path, activity id) of what it is sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: set[tuple[str, str]] = set()
        self.server: TestServer | None = None

    async def _inbox(self, request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        self.received.add((request.path, str(document.get("id"))))
        return web.Response(status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._inbox)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


async def test_a_receiver_down_for_four_minutes_gets_its_backlog_within_two_of_returning(
    test_databases: databases.TestDatabases, tmp_path: Path
) -> None:
    # Given a hospital whose group has 15 followers on one server, and a `healthnode worker`
    # process whose clock runs 20 times faster than the wall clock (a minute in 3 s)
    rate = 20.0
    data_dir = tmp_path / "hospital-data"
    data_dir.mkdir()
    url = await test_databases.fresh("hospital_outage", data_dir)
    domain = f"127.0.0.1:{free_port()}"
    settings = Settings(
        domain=domain, data_dir=data_dir, database_url=url, password_cost=CHEAP_PASSWORDS
    )
    await prepare_hospital(settings)
    receiver = Switchable(free_port())
    async with AsyncExitStack() as cleanup:
        cleanup.push_async_callback(receiver.stop)
        hospital = await NodeContext.open(settings, clock=SystemClock())
        cleanup.push_async_callback(hospital.close)
        inboxes = await add_remote_followers(hospital, "t1d", [receiver.port], per_server=15)
        commands: list[Command] = []
        cleanup.push_async_callback(stop_all, commands)
        worker_args = ("worker", "--domain", domain, "--database-url", url, "--data-dir", data_dir)
        commands.append(
            await spawn("worker", tmp_path, *worker_args, env={CLOCK_RATE_ENV: str(rate)})
        )

        # When the receiving server is down and a thread is started (30 deliveries for it)
        hospital.sinks.append(Outbox(Documents(settings), hospital.clock, lambda: None))
        await start_thread(hospital, "nurse", "t1d", "While the server was down", "Hello?")
        announces = await announces_of(hospital, set())
        expected = {
            ("/" + inbox.split("/", 1)[1], iri) for inbox in inboxes for iri in announces.values()
        }
        assert len(expected) == 30

        # And it stays down for four minutes of the worker's time, every attempt failing
        async def all_failed_once() -> bool:
            if commands[0].process.returncode is not None:
                raise AssertionError(f"the worker exited:\n{commands[0].tail()}")
            tried = await count(
                hospital,
                select(func.count()).select_from(Delivery).where(Delivery.attempts >= 1),
            )
            return tried == 30

        await eventually(all_failed_once, "the first attempts to fail", seconds=30)
        await asyncio.sleep(4 * 60 / rate)  # the outage itself: wall-clock time by design
        assert not receiver.received

        # And then it comes back
        await receiver.start()
        back_at = time.monotonic()

        # Then within about two minutes of the worker's time it has received everything
        async def everything_arrived() -> bool:
            return expected <= receiver.received

        try:
            await eventually(everything_arrived, "the backlog to arrive", seconds=12 * 60 / rate)
        except AssertionError:
            pytest.fail(
                f"{len(expected - receiver.received)} of 30 never arrived; queue: "
                f"{await states(hospital, list(announces))}\n{commands[0].tail()}"
            )
        healed_after = (time.monotonic() - back_at) * rate
        assert healed_after <= 150, f"the backlog took {healed_after:.0f} s of the node's time"
