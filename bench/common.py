"""Shared helpers for the benchmarks: core pinning, resource figures, profiles, node set-up.

Nothing here is timed work of its own: these helpers only set things up and report.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import logging
import os
import pstats
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from node.config import Limits, PasswordCost, RateLimits, Settings
from node.storage.engine import begin_for_reading, create_engine, session_factory
from node.storage.models import Delivery, InboxItem

T = TypeVar("T")

# argon2 at its production cost would add 64 MiB to the peak RSS and ~0.2 s per member created:
# the benchmarks create one local member, and measure neither.
CHEAP_PASSWORDS = PasswordCost(time_cost=1, memory_cost_kib=8, parallelism=1)

NODE_CORE = 0  # the node under test
PEER_CORE = 1  # the load generator / receiving servers


class BenchFailure(Exception):
    """Something the benchmark checks did not hold: the run fails (non-zero exit)."""


def pin_to_core(core: int) -> str:
    """Pin this process (and the threads it starts later) to one core, when there are two."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return "not pinned (no sched_setaffinity)"
    if len(available) < 2:
        return f"not pinned (only core {available} available)"
    chosen = available[core % len(available)]
    os.sched_setaffinity(0, {chosen})
    return f"pinned to core {chosen}"


def max_rss_kib() -> int:
    """The process's RSS high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    """User + system CPU of this process, all its threads (aiosqlite's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reserve_port() -> tuple[socket.socket, int]:
    """A listening loopback socket held open (no race with other programs for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock, sock.getsockname()[1]


async def serve_on_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on a free loopback port; answers its runner (to clean up) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    return runner, runner.addresses[0][1]


def unused_port() -> int:
    sock, port = reserve_port()
    sock.close()
    return port


def node_settings(data_dir: Path, port: int) -> Settings:
    """A development node (loopback domain: http IRIs, loopback peers allowed) on SQLite."""
    return Settings(
        domain=f"127.0.0.1:{port}",
        data_dir=data_dir,
        database_url=None,  # the default: SQLite in the data dir
        password_cost=CHEAP_PASSWORDS,
        # The benchmark's one sender is its load: a real peer's budget would measure the limit.
        limits=Limits(rates=RateLimits(inbox_per_host=None)),
    )


class Observer:
    """The benchmark's own view of the node's database: a separate engine, so its polling
    takes none of the node's pooled connections and is not counted in the node's SQL
    statistics; reads begin DEFERRED (WAL), so they never wait for nor hold the write lock."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)
        self.sessions = session_factory(self.engine)

    async def states(self, model: Any, unfinished: bool = False) -> dict[str, int]:
        """Rows per state; rows that were tried and must be tried again count as "retrying".
        `unfinished` counts only queued and failed rows: a range of the state index, cheap
        however many rows are done."""
        retrying = (model.state == "queued") & (model.attempts > 0)
        statement = select(model.state, retrying, func.count()).group_by(model.state, retrying)
        if unfinished:
            statement = statement.where(model.state.in_(("queued", "failed")))
        async with self.sessions() as session:
            await begin_for_reading(session)
            rows = await session.execute(statement)
            counts: Counter[str] = Counter()
            for state, again, count in rows.all():
                counts["retrying" if again else state] += int(count)
            return dict(counts)

    async def delivery_states(self) -> dict[str, int]:
        return await self.states(Delivery)

    async def inbox_states(self, unfinished: bool = False) -> dict[str, int]:
        return await self.states(InboxItem, unfinished)

    async def close(self) -> None:
        await self.engine.dispose()


async def wait_until(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    seconds: float,
    interval: float,
    sleep: Callable[[float], Awaitable[None]],
) -> T:
    """Poll `check` until it gives a truthy value; BenchFailure after the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchFailure(f"timed out after {seconds:.0f} s waiting for {what}")
        await sleep(interval)


class SqlStats:
    """Diagnostics for a profiled run only: SQL statements by first word, and how long each
    BEGIN (IMMEDIATE on SQLite: it takes the write lock) took to return, by the coroutine
    of the asyncio task that asked for it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.kinds: Counter[str] = Counter()
        self.texts: Counter[str] = Counter()
        self.begin_waits: defaultdict[str, list[float]] = defaultdict(list)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        kind = statement.split(None, 1)[0].upper()
        self.kinds[kind] += 1
        self.texts[statement] += 1
        if kind == "BEGIN":
            conn.info["bench.begin"] = (time.perf_counter(), _task_name())

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info.pop("bench.begin", None)
        if started is not None:
            self.begin_waits[started[1]].append(time.perf_counter() - started[0])

    def __enter__(self) -> SqlStats:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    def report(self, per: int, unit: str) -> str:
        lines = [
            f"SQL statements per {unit}: "
            + ", ".join(f"{kind} {n / per:.2f}" for kind, n in self.kinds.most_common())
            + f" (total {sum(self.kinds.values()) / per:.2f})",
        ]
        lines.append(f"the most frequent statements, per {unit}:")
        for text, n in self.texts.most_common(15):
            lines.append(f"  {n / per:5.2f}  {_abridged(text)}")
        lines.append(
            "time for BEGIN IMMEDIATE to return (= waiting for SQLite's write lock), by task:"
        )
        everything = [w for waits in self.begin_waits.values() for w in waits]
        for name, waits in sorted(
            [("(all)", everything), *self.begin_waits.items()], key=lambda kv: -sum(kv[1])
        ):
            waits = sorted(waits)
            p90 = waits[min(len(waits) - 1, int(0.9 * len(waits)))]
            lines.append(
                f"  {name:34} n={len(waits):5}  mean {1000 * sum(waits) / len(waits):6.1f} ms"
                f"  p50 {1000 * waits[len(waits) // 2]:5.1f} ms  p90 {1000 * p90:6.1f} ms"
                f"  max {1000 * waits[-1]:6.0f} ms  sum {sum(waits):6.1f} s"
            )
        return "\n".join(lines)


def _abridged(statement: str, width: int = 110) -> str:
    """`SELECT a, b FROM t JOIN u ... WHERE x` -> `SELECT … FROM t (+1 join) WHERE x`."""
    text = " ".join(statement.split())
    head, sep, tail = text.partition(" FROM ")
    if sep and head.startswith("SELECT ") and "(" not in head:
        source, _, where = tail.partition(" WHERE ")
        joins = source.count(" JOIN ")
        text = f"SELECT … FROM {source.split()[0]}"
        text += f" (+{joins} join{'s' if joins > 1 else ''})" if joins else ""
        text += f" WHERE {where}" if where else ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _task_name() -> str:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return "(no task)"
    if task is None:
        return "(no task)"
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", type(coro).__name__))


def _package_of(filename: str) -> str:
    """Group profile rows: a site-packages distribution, a project package, or the stdlib."""
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for package in ("federation", "node", "web", "keys", "bench"):
        if f"/{package}/" in path and "/lib/python" not in path:
            return f"healthnode {package}/"
    if filename.startswith("~") or filename.startswith("<"):
        return "built-in (C) functions"
    if "/asyncio/" in path:
        return "asyncio (stdlib)"
    return "other stdlib"


def profile_report(profile: cProfile.Profile, top: int = 15) -> str:
    """Own time by package; top functions by cumulative time; top by own time (under asyncio,
    cumulative times of coroutines count every resumption, so own time is the clearer view)."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    by_package: Counter[str] = Counter()
    total = 0.0
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        total += own
        if name == "<method 'poll' of 'select.epoll' objects>":
            by_package["idle: waiting in epoll (nothing to run)"] += own
        else:
            by_package[_package_of(filename)] += own
    out.write("--- cProfile: own time by package ---\n")
    for package, own in by_package.most_common():
        out.write(f"  {package:42} {own:7.2f} s  {100 * own / total:5.1f}%\n")
    stats.strip_dirs()
    out.write(f"--- cProfile: top {top} by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(top)
    out.write(f"--- cProfile: top {top} by own (total) time ---\n")
    stats.sort_stats("tottime").print_stats(top)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip()) + "\n"


CHILD_IDLE_SECONDS = 300.0  # a child process left without commands this long stops by itself


def next_command(conn: Any) -> Any:
    """A child's next command from its parent; "stop" when the parent is gone or silent."""
    try:
        if not conn.poll(CHILD_IDLE_SECONDS):
            return "stop"
        return conn.recv()
    except (EOFError, OSError):
        return "stop"


def say(text: str = "") -> None:
    print(text, flush=True)


def fail(text: str) -> None:
    print(f"FAILED: {text}", file=sys.stderr, flush=True)


def wrk_missing() -> bool:
    """Whether `wrk` (Debian's package) is absent, said once for the benchmarks that need it."""
    if shutil.which("wrk") is None:
        say("wrk is not installed (Debian: apt-get install wrk)")
        return True
    return False


def run_in_scratch(name: str, measure: Callable[[Path], Coroutine[Any, Any, None]]) -> int:
    """Run `measure` in a scratch directory, removed after, and report the wall time; a
    BenchFailure fails the run with a non-zero status."""
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"healthnode-bench-{name}-") as work_dir:
            asyncio.run(measure(Path(work_dir)))
    except BenchFailure as failure:
        fail(str(failure))
        return 1
    finally:
        say(f"total benchmark time: {time.perf_counter() - started:.1f} s")
    return 0


def run_benchmark(
    name: str,
    peer: Any,
    peer_label: str,
    bench: Callable[[Path], Coroutine[Any, Any, None]],
    args: Any,
) -> int:
    """Start the peer process, pin the node to its core, run `bench` in a scratch directory,
    and report; any fault fails the run loudly with a non-zero status."""
    started = time.perf_counter()
    try:
        peer.start()
        args.pinned = pin_to_core(NODE_CORE)
        with tempfile.TemporaryDirectory(prefix=f"healthnode-bench-{name}-") as data_dir:
            asyncio.run(bench(Path(data_dir)))
    except BenchFailure as failure:
        fail(str(failure))
        return 1
    except Exception as error:  # any other fault fails the run loudly
        logging.exception("the benchmark crashed")
        fail(f"{type(error).__name__}: {error}")
        return 1
    finally:
        final = peer.stop()
        if final is not None:
            say(f"{peer_label} CPU: {final['cpu']:.2f} s")
        say(f"total benchmark time: {time.perf_counter() - started:.1f} s")
    return 0
