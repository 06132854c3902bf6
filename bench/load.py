"""Reading under load: `wrk` reads a group page and a 50-post thread page while a member posts
and a remote node delivers replies, for one process on SQLite, one on PostgreSQL, and two web
processes with two workers on PostgreSQL (README, "bench.load").

Every node runs as real `healthnode` subprocesses (`python -m web.cli`); the benchmark itself
seeds the database before they start, drives the background load over loopback HTTP, runs a
remote node in its own process (the driver), and starts `wrk`. Baselines measured in the same
run: an aiohttp hello-world, and for the thread page a bare SELECT of the same 50 posts plus the
jinja2 render of the same template (`python -m bench.load bare ...`).

    .venv/bin/python -m bench.load                        # SQLite only
    .venv/bin/python -m bench.load --pg-url postgresql+asyncpg://postgres@127.0.0.1/bench

With a PostgreSQL URL, the benchmark works in a schema of its own, `healthnode_bench`, which it
drops and creates again: never point it at a database whose schema of that name matters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select, text

from bench.common import (
    CHEAP_PASSWORDS,
    BenchFailure,
    run_in_scratch,
    say,
    unused_port,
    wait_until,
    wrk_missing,
)
from federation.keysink import attach_actor_keys
from node import groups, members, posts
from node.clock import SystemClock
from node.config import Limits, RateLimits, Settings
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.engine import create_engine
from node.storage.migrate import upgrade_to_head
from node.storage.models import Membership, Thread
from web.app import create_app

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_SCHEMA = "healthnode_bench"
PASSWORD = "correct horse battery"
THREAD_POSTS = 50
OWNER, REMOTE_MEMBER = "nurse", "bea"
# The background load and the remote node's posts must not run into the node's budgets: they
# are the load, not what a limit is for.
NODE_ENV = {"HEALTHNODE_RATE_POSTS_PER_MEMBER": "off", "HEALTHNODE_RATE_INBOX_PER_HOST": "off"}
UNLIMITED = Limits(rates=RateLimits(posts_per_member=None, inbox_per_host=None))


# --- wrk ---------------------------------------------------------------------------------------

LATENCY_LINE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class Measured:
    """One `wrk` run: requests per second and latency percentiles in milliseconds."""

    rate: float
    p50: float
    p99: float
    requests: int

    @classmethod
    def combined(cls, runs: list[Measured]) -> Measured:
        """Runs side by side (one per web process): rates add up; the percentiles are the
        worse of the runs' (wrk reports no distribution to merge)."""
        return cls(
            sum(run.rate for run in runs),
            max(run.p50 for run in runs),
            max(run.p99 for run in runs),
            sum(run.requests for run in runs),
        )

    def line(self) -> str:
        return f"{self.rate:8.0f} req/s  p50 {self.p50:6.2f} ms  p99 {self.p99:7.2f} ms"


WRK_SCRIPT = """
paths = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
"""


async def wrk(
    base_url: str,
    host: str,
    paths: list[str],
    seconds: int,
    connections: int,
    work_dir: Path,
    headers: list[str] | None = None,
) -> Measured:
    script = work_dir / f"wrk-{abs(hash(tuple(paths)))}.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{path}"' for path in paths))
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}",
        *(headers or []), "-s", str(script), base_url + paths[0],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
    report = output.decode()
    if process.returncode != 0:
        raise BenchFailure(f"wrk failed:\n{report}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    if bad:
        raise BenchFailure(f"{bad.group(1)} answers were not 2xx/3xx on {base_url}:\n{report}")
    errors = re.search(r"Socket errors: .*", report)
    if errors and re.search(r"(connect|read|write|timeout) [1-9]", errors.group(0)):
        raise BenchFailure(f"wrk: {errors.group(0)} on {base_url}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", report)
    total = re.search(r"(\d+) requests in", report)
    latencies = {p: float(v) * UNITS[u] for p, v, u in LATENCY_LINE.findall(report)}
    if not rate or not total or set(latencies) != {"50", "99"}:
        raise BenchFailure(f"could not read wrk's report:\n{report}")
    return Measured(float(rate.group(1)), latencies["50"], latencies["99"], int(total.group(1)))


# --- subprocesses ------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    log: Path

    def tail(self, lines: int = 20) -> str:
        text_ = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text_.splitlines()[-lines:])

    async def stop(self) -> None:
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()


async def start(
    name: str, work_dir: Path, args: list[str], env: Mapping[str, str] | None = None
) -> Process:
    log = work_dir / f"{name}.log"
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HEALTHNODE_") and key != "PYTHONWARNINGS"
    }
    environment.update({"PYTHONPATH": str(REPO_ROOT), **(env or {})})
    handle: IO[bytes]
    with log.open("ab") as handle:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=work_dir, env=environment,
            stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Process(name, process, log)


async def answering(process: Process, url: str, host: str, seconds: float = 60) -> None:
    async def ok() -> bool:
        if process.process.returncode is not None:
            raise BenchFailure(f"{process.name} exited early:\n{process.tail()}")
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(url, headers={"Host": host}, timeout=aiohttp.ClientTimeout(total=2)) as r,
            ):
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    try:
        await wait_until(ok, f"{process.name} to answer", seconds, 0.1, asyncio.sleep)
    except BenchFailure as failure:
        raise BenchFailure(f"{failure}:\n{process.tail()}") from None


# --- a person at a browser, over loopback --------------------------------------------------------


CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


class Person:
    """Forms submitted over HTTP with cookies and CSRF tokens, to a node's web process(es):
    every request names the node's domain in Host, whichever process's port it goes to."""

    def __init__(self, domain: str, base_urls: list[str]) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.domain = domain
        self.base_urls = base_urls
        self.token = ""
        self.turn = 0

    def _next_url(self) -> str:
        self.turn += 1
        return self.base_urls[self.turn % len(self.base_urls)]

    async def get(self, path: str) -> tuple[int, str, str]:
        async with self.http.get(self._next_url() + path, headers={"Host": self.domain}) as r:
            return self._seen(r.status, r.url.path, await r.text())

    async def post(self, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        if not self.token:
            await self.get("/")
        data = {**fields, "csrf_token": self.token}
        async with self.http.post(
            self._next_url() + path, data=data, headers={"Host": self.domain}
        ) as r:
            return self._seen(r.status, r.url.path, await r.text())

    def _seen(self, status: int, path: str, html: str) -> tuple[int, str, str]:
        match = CSRF.search(html)
        if match:
            self.token = match.group(1)
        return status, path, html

    async def sign_in(self, username: str) -> None:
        await self.get("/login")
        status, _, html = await self.post("/login", {"username": username, "password": PASSWORD})
        await self.get("/")
        if status != 200 or 'action="/logout"' not in html:
            raise BenchFailure(f"{username} could not sign in on {self.domain}: {status}")

    async def close(self) -> None:
        await self.http.close()


# --- seeding -----------------------------------------------------------------------------------


async def seed(settings: Settings) -> str:
    """The owner, a public group, and a thread of 50 posts; answers the thread's id. Nothing is
    queued for delivery: no outbox is attached here."""
    node = await NodeContext.open(settings, clock=SystemClock())
    attach_actor_keys(node)
    try:
        async with node.transaction() as session:
            now = node.clock.now()
            owner = await members.create_member(
                session, node.passwords, settings.limits, username=OWNER, password=PASSWORD,
                display_name="Nurse", now=now,
            )  # fmt: skip
            await groups.create_group(
                session, settings.limits, owner_id=owner.id, slug="t1d",
                name="Type 1 diabetes", visibility="public", now=now,
            )  # fmt: skip
            view = await groups.view_group(session, "t1d", Viewer(owner.id))
            thread = await posts.start_thread(
                session, settings.limits, view, title="What helps at night",
                draft=posts.Draft("What helps you with night hypos? " * 4), now=now,
            )  # fmt: skip
            for number in range(THREAD_POSTS - 1):
                await posts.reply(
                    session, settings.limits, Viewer(owner.id), thread_id=thread.id,
                    parent_id=None, now=now,
                    draft=posts.Draft(f"Reply {number}: a *snack* before bed, and a check. " * 3),
                )  # fmt: skip
            return thread.id
    finally:
        await node.close()


async def fresh_pg_schema(pg_url: str) -> str:
    """The benchmark's own schema, dropped and created again, migrated; answers its URL."""
    admin = create_engine(pg_url)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
            await connection.execute(text(f'CREATE SCHEMA "{PG_SCHEMA}"'))
    finally:
        await admin.dispose()
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={PG_SCHEMA}"
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    return url


# --- the remote node (in the driver's process) ---------------------------------------------------


@dataclass
class Remote:
    node: NodeContext
    runner: web.AppRunner
    person: Person

    @classmethod
    async def start(cls, work_dir: Path) -> Remote:
        port = unused_port()
        data_dir = work_dir / "clinic"
        data_dir.mkdir(mode=0o700)
        settings = Settings(
            domain=f"127.0.0.1:{port}", data_dir=data_dir, password_cost=CHEAP_PASSWORDS,
            limits=UNLIMITED,
        )  # fmt: skip
        node = await NodeContext.open(settings, clock=SystemClock())
        attach_actor_keys(node)
        async with node.transaction() as session:
            await members.create_member(
                session, node.passwords, settings.limits, username=REMOTE_MEMBER,
                password=PASSWORD, display_name="Bea", now=node.clock.now(),
            )  # fmt: skip
        runner = web.AppRunner(create_app(node))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        person = Person(settings.domain, [settings.base_url])
        await person.sign_in(REMOTE_MEMBER)
        return cls(node, runner, person)

    async def thread_id(self, title: str) -> str | None:
        async with self.node.transaction() as session:
            found = await session.execute(select(Thread.id).where(Thread.title == title))
            return found.scalars().first()

    async def following(self) -> bool:
        """The group accepted the remote member's Follow."""
        async with self.node.transaction() as session:
            found = await session.execute(
                select(func.count())
                .select_from(Membership)
                .where(Membership.state == "active", Membership.follow_activity_id.is_not(None))
            )
            return bool(found.scalar())

    async def close(self) -> None:
        await self.person.close()
        await self.runner.cleanup()
        await self.node.close()


# --- one configuration -------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    mixed: Measured
    thread: Measured
    bare: Measured | None
    posted: int
    remote_replies: int
    server_errors: int  # replies answered 500 meanwhile


@dataclass
class Config:
    label: str
    database_url: str | None  # None: SQLite in the data dir
    web_processes: int
    worker_processes: int
    bare: bool = True
    notes: list[str] = field(default_factory=list)


async def background(
    owner: Person, remote: Person, hospital_thread: str, remote_thread: str, stop: asyncio.Event
) -> tuple[int, int, int]:
    """The owner replies on the node, and the remote member replies from her node (delivered
    to the node's inbox), each about four times a second, until `stop`."""
    counts, errors = [0, 0], [0, 0]

    async def loop(person: Person, path: str, index: int, label: str) -> None:
        while not stop.is_set():
            status, _, html = await person.post(path, {"body": f"{label} {counts[index]}"})
            if status == 500:  # counted and reported (README: a deadlock on PostgreSQL)
                errors[index] += 1
            elif status != 200:
                raise BenchFailure(f"{label}'s reply was refused: {status} {html[:300]}")
            else:
                counts[index] += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)  # the load's pace, not a wait for work

    await asyncio.gather(
        loop(owner, f"/t/{hospital_thread}/reply", 0, "From the nurse"),
        loop(remote, f"/t/{remote_thread}/reply", 1, "From the clinic"),
    )
    return counts[0], counts[1], sum(errors)


async def run_config(config: Config, work_dir: Path, seconds: int, connections: int) -> Result:
    """`measure_config`; a failure carries the end of each process's log."""
    directory = work_dir / re.sub(r"[^a-z0-9]+", "-", config.label.lower())
    try:
        return await measure_config(config, directory, seconds, connections)
    except BenchFailure as failure:
        logs = "".join(
            f"\n--- {log.name}\n{_end_of(log)}" for log in sorted(directory.glob("*.log"))
        )
        kept = Path(tempfile.mkdtemp(prefix="healthnode-bench-load-logs-"))
        for log in directory.glob("*.log"):
            shutil.copy(log, kept / log.name)
        raise BenchFailure(f"{config.label}: {failure}{logs}\n(the logs: {kept})") from None


def _end_of(log: Path, lines: int = 40) -> str:
    """A log's last traceback, or its last lines."""
    text_ = log.read_text(errors="replace")
    start = text_.rfind("Traceback")
    return "\n".join((text_[start:] if start >= 0 else text_).splitlines()[-lines:])


async def measure_config(config: Config, directory: Path, seconds: int, connections: int) -> Result:
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, mode=0o700)
    ports = [unused_port() for _ in range(config.web_processes)]
    domain = f"127.0.0.1:{ports[0]}"
    base_urls = [f"http://127.0.0.1:{port}" for port in ports]
    settings = Settings(
        domain=domain, data_dir=data_dir, database_url=config.database_url,
        password_cost=CHEAP_PASSWORDS, limits=UNLIMITED,
    )  # fmt: skip
    thread_id = await seed(settings)
    storage = ["--domain", domain, "--data-dir", str(data_dir)]
    if config.database_url:
        storage += ["--database-url", config.database_url]
    async with AsyncExitStack() as cleanup:
        processes: list[Process] = []

        async def stop_all() -> None:
            await asyncio.gather(*(process.stop() for process in processes))

        cleanup.push_async_callback(stop_all)
        split = ["--no-workers"] if config.worker_processes else []
        for index, port in enumerate(ports):
            processes.append(
                await start(
                    f"web-{index + 1}", directory,
                    ["-m", "web.cli", "serve", "--port", str(port), *split, *storage], NODE_ENV,
                )
            )  # fmt: skip
        for index in range(config.worker_processes):
            processes.append(
                await start(
                    f"worker-{index + 1}",
                    directory,
                    ["-m", "web.cli", "worker", *storage],
                    NODE_ENV,
                )
            )
        for process, base_url in zip(processes, base_urls, strict=False):
            await answering(process, base_url + "/g/t1d", domain)

        # The remote member follows the group; the owner starts a thread for the chatter,
        # which reaches the remote node as the group's Announce
        remote = await Remote.start(directory)
        cleanup.push_async_callback(remote.close)
        await remote.person.get("/authorize_interaction")
        status, _, html = await remote.person.post("/groups/follow", {"handle": f"t1d@{domain}"})
        if status != 200:
            raise BenchFailure(f"the remote follow was refused: {status} {html[:300]}")
        owner = Person(domain, base_urls)
        cleanup.push_async_callback(owner.close)
        await owner.sign_in(OWNER)
        await wait_until(remote.following, "the Accept on the remote node", 60, 0.1, asyncio.sleep)

        status, path, html = await owner.post(
            "/g/t1d/new", {"title": "Chatter", "body": "Say anything here."}
        )
        if status != 200 or not path.startswith("/t/"):
            raise BenchFailure(f"the chatter thread was refused: {status} {html[:300]}")
        chatter = path.removeprefix("/t/")
        remote_chatter = await wait_until(
            lambda: remote.thread_id("Chatter"), "the chatter thread on the remote node", 60,
            0.1, asyncio.sleep,
        )  # fmt: skip

        reading = [f"/t/{thread_id}", "/g/t1d"]
        thread_only = [f"/t/{thread_id}"]
        for base_url in base_urls:  # warm-up: templates compiled, statements cached
            await wrk(base_url, domain, reading, 2, connections, directory)

        # Quiet: the thread page alone, to compare with the bare SELECT + render
        thread = Measured.combined(
            await asyncio.gather(
                *(
                    wrk(url, domain, thread_only, seconds, connections // len(base_urls), directory)
                    for url in base_urls
                )
            )
        )

        # Under load: group and thread pages while members post and the remote node delivers
        stop = asyncio.Event()
        load = asyncio.create_task(background(owner, remote.person, chatter, remote_chatter, stop))
        try:
            mixed = Measured.combined(
                await asyncio.gather(
                    *(
                        wrk(url, domain, reading, seconds, connections // len(base_urls), directory)
                        for url in base_urls
                    )
                )
            )
        finally:
            stop.set()
            posted, remote_replies, server_errors = await load
        for process in processes:
            if process.process.returncode is not None:
                raise BenchFailure(f"{process.name} exited:\n{process.tail()}")

        # The remote replies reached the node: the chatter thread's page shows the last one
        async def arrived() -> bool:
            _, _, html = await owner.get(f"/t/{chatter}")
            return f"From the clinic {remote_replies - 1}" in html

        await wait_until(
            arrived, "the remote node's last reply on the node", 60, 0.2, asyncio.sleep
        )

        bare = None
        if config.bare:
            await stop_all()
            processes.clear()
            port = unused_port()
            processes.append(
                await start(
                    "bare", directory,
                    ["-m", "bench.load", "bare", "--port", str(port), "--thread", thread_id,
                     *storage],
                )
            )  # fmt: skip
            bare_url = f"http://127.0.0.1:{port}"
            await answering(processes[-1], f"{bare_url}/bare/{thread_id}", domain)
            await wrk(bare_url, domain, [f"/bare/{thread_id}"], 2, connections, directory)
            bare = await wrk(
                bare_url, domain, [f"/bare/{thread_id}"], seconds, connections, directory
            )
    return Result(config.label, mixed, thread, bare, posted, remote_replies, server_errors)


# --- the baselines' servers ----------------------------------------------------------------------


def hello_main(port: int) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def bare_main(args: argparse.Namespace) -> None:
    """The node's app (its middlewares: session, viewer, CSRF token) with one more route,
    /bare/{thread_id}: one SELECT of the thread's 50 posts as plain rows, and the render of
    thread.html through the same `render_group_page`, with the context the real page built on
    the first request (kept, not rebuilt: that is the work the page does and this does not)."""
    from web import routes_threads
    from web.appkeys import NODE
    from web.pages import db, render_group_page

    settings = Settings(
        domain=args.domain, data_dir=args.data_dir, database_url=args.database_url,
        password_cost=CHEAP_PASSWORDS,
    )  # fmt: skip
    kept: dict[str, Any] = {}

    async def bare(request: web.Request) -> web.Response:
        rows = (
            await db(request).execute(
                text(
                    "SELECT * FROM posts WHERE thread_id = :thread ORDER BY created_at, id LIMIT 50"
                ),
                {"thread": request.match_info["thread_id"]},
            )
        ).all()
        if len(rows) != THREAD_POSTS:
            raise web.HTTPInternalServerError(text=f"{len(rows)} posts, not {THREAD_POSTS}")
        if not kept:
            real = routes_threads.render_group_page

            def keep(
                request: web.Request, group: Any, template: str, context: Any, status: int = 200
            ) -> Any:
                kept.update(group=group, template=template, context=context)
                return real(request, group, template, context, status)

            routes_threads.render_group_page = keep  # type: ignore[assignment]
            try:
                return await routes_threads.thread_page(request)
            finally:
                routes_threads.render_group_page = real
        return render_group_page(request, kept["group"], kept["template"], kept["context"])

    async def main() -> None:
        node = await NodeContext.open(settings, clock=SystemClock())
        attach_actor_keys(node)
        app = create_app(node, run_workers=False)
        assert app[NODE] is node
        app.router.add_get("/bare/{thread_id}", bare)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await node.close()

    with suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        asyncio.run(main())


# --- the driver --------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, work_dir: Path) -> None:
    say(f"wrk: 1 thread, {args.connections} connections, {args.seconds} s a run, loopback only")
    hello_port = unused_port()
    hello = await start("hello", work_dir, ["-m", "bench.load", "hello", "--port", str(hello_port)])
    try:
        await answering(hello, f"http://127.0.0.1:{hello_port}/", "127.0.0.1")
        base_url = f"http://127.0.0.1:{hello_port}"
        await wrk(base_url, "127.0.0.1", ["/"], 2, args.connections, work_dir)
        baseline = await wrk(base_url, "127.0.0.1", ["/"], args.seconds, args.connections, work_dir)
    finally:
        await hello.stop()
    say(f"aiohttp hello-world:          {baseline.line()}")

    configs = [Config("1 process, SQLite", None, 1, 0)]
    if args.pg_url:
        pg = await fresh_pg_schema(args.pg_url)
        configs.append(Config("1 process, PostgreSQL", pg, 1, 0))
        configs.append(Config("2 web + 2 workers, PostgreSQL", pg, 2, 2, bare=False))
    else:
        say("no --pg-url (or HEALTHNODE_BENCH_PG_URL): the PostgreSQL runs are skipped")
    if args.only:
        configs = [config for config in configs if args.only in config.label]
    results = []
    for config in configs:
        if config.database_url and results and results[-1].label.endswith("PostgreSQL"):
            await fresh_pg_schema(args.pg_url)
        result = await run_config(config, work_dir, args.seconds, args.connections)
        results.append(result)
        say(f"--- {config.label}")
        say(f"  group+thread pages under load: {result.mixed.line()}")
        say(f"  meanwhile {result.posted} local and {result.remote_replies} remote replies")
        if result.server_errors:
            say(f"  !! {result.server_errors} replies were answered 500 (see the web logs)")
        say(f"  thread page alone, quiet:      {result.thread.line()}")
        if result.bare:
            say(f"  bare SELECT + render, quiet:   {result.bare.line()}")

    say("")
    say("| configuration | pages under load req/s | p50 | p99 | ratio to hello-world |"
        " thread page req/s | bare SELECT+render req/s | thread / bare |")  # fmt: skip
    say("|---|---|---|---|---|---|---|---|")
    say(f"| aiohttp hello-world | {baseline.rate:,.0f} | {baseline.p50:.2f} ms |"
        f" {baseline.p99:.2f} ms | 1 | | | |")  # fmt: skip
    bare_rate = None
    for result in results:
        bare_rate = result.bare.rate if result.bare else bare_rate
        ratio = f"**{result.thread.rate / bare_rate:.2f}**" if bare_rate else ""
        say(
            f"| {result.label} | {result.mixed.rate:,.0f} | {result.mixed.p50:.1f} ms |"
            f" {result.mixed.p99:.1f} ms | {result.mixed.rate / baseline.rate:.3f} |"
            f" {result.thread.rate:,.0f} | {f'{bare_rate:,.0f}' if bare_rate else ''} | {ratio} |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", help="only the configurations whose label contains this")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("HEALTHNODE_BENCH_PG_URL", ""),
        help="PostgreSQL (SQLAlchemy asyncpg URL); its schema healthnode_bench is replaced",
    )
    commands = parser.add_subparsers(dest="role")
    hello = commands.add_parser("hello")
    hello.add_argument("--port", type=int, required=True)
    bare = commands.add_parser("bare")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--thread", required=True)
    bare.add_argument("--domain", required=True)
    bare.add_argument("--data-dir", type=Path, required=True)
    bare.add_argument("--database-url")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "hello":
        hello_main(args.port)
        return 0
    if args.role == "bare":
        bare_main(args)
        return 0
    if wrk_missing():
        return 1
    return run_in_scratch("load", lambda work_dir: measure(args, work_dir))


if __name__ == "__main__":
    sys.exit(main())
