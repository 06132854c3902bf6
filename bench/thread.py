"""The thread page: its rate against a bare SELECT + render of the same page, signed out and
signed in, and the latency of a thread with 200 replies (README, "bench.thread"; issue 14).

The node runs in one process pinned to one core, with one more route, /bare/{thread_id}: one
plain `SELECT` of the thread's 50 posts (text SQL, no ORM), then the render of `thread.html`
through the same `render_group_page` with the context the real page built on its first request
for that reader (kept, not rebuilt). `wrk -c16` and the driver run on the other core. Then, in
the driver's process, a profiled pass of the real page (cProfile around the route, in-process
with aiohttp's TestServer).

    .venv/bin/python -m bench.thread [--seconds 8] [--connections 16] [--profile-requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from bench.common import (
    CHEAP_PASSWORDS,
    NODE_CORE,
    PEER_CORE,
    BenchFailure,
    SqlStats,
    pin_to_core,
    profile_report,
    run_in_scratch,
    say,
    unused_port,
    wrk_missing,
)
from bench.load import PASSWORD, UNLIMITED, Measured, Person, answering, start, wrk
from federation.keysink import attach_actor_keys
from node import groups, members, membership, posts
from node.clock import SystemClock
from node.config import Settings
from node.ids import thread_page_path, thread_path
from node.policy import Viewer
from node.runtime import NodeContext
from web.app import create_app
from web.appkeys import MEMBER
from web.cli import keep_what_started
from web.cookies import SESSION_COOKIE

PAGE_POSTS = 50  # the thread compared with the bare render: its opening post and 49 replies
LONG_REPLIES = 200  # the thread whose latency is measured, page 1 and its last page
LATENCY_REQUESTS = 40
CPU_REQUESTS = 50
OWNER, READER = "nurse", "reader"
SIZE_LIMIT = 100 * 1024  # issue 14: under 100 KB of HTML a page


def _settings(domain: str, data_dir: Path) -> Settings:
    return Settings(
        domain=domain, data_dir=data_dir, password_cost=CHEAP_PASSWORDS, limits=UNLIMITED
    )


async def seed(settings: Settings) -> tuple[str, str]:
    """An owner and a reader (a member of the group), a public group, a thread of 50 posts and
    one of 200 replies; answers the two threads' ids."""
    node = await NodeContext.open(settings, clock=SystemClock())
    attach_actor_keys(node)
    try:
        async with node.transaction() as session:
            now = node.clock.now()
            owner = await members.create_member(
                session, node.passwords, settings.limits, username=OWNER, password=PASSWORD,
                display_name="Nurse", now=now,
            )  # fmt: skip
            reader = await members.create_member(
                session, node.passwords, settings.limits, username=READER, password=PASSWORD,
                display_name="Reader", now=now,
            )  # fmt: skip
            await groups.create_group(
                session, settings.limits, owner_id=owner.id, slug="t1d",
                name="Type 1 diabetes", visibility="public", now=now,
            )  # fmt: skip
            await membership.join(
                session, await groups.view_group(session, "t1d", Viewer(reader.id)), now
            )
            ids = []
            for title, replies in (("What helps at night", PAGE_POSTS - 1), ("Long", LONG_REPLIES)):
                view = await groups.view_group(session, "t1d", Viewer(owner.id))
                thread = await posts.start_thread(
                    session, settings.limits, view, title=title,
                    draft=posts.Draft("What helps you with night hypos? " * 4), now=now,
                )  # fmt: skip
                for number in range(replies):
                    await posts.reply(
                        session, settings.limits, Viewer(owner.id), thread_id=thread.id,
                        parent_id=None, now=now,
                        draft=posts.Draft(f"Reply {number}: a *snack* before bed, a check. " * 3),
                    )  # fmt: skip
                ids.append(thread.id)
            return ids[0], ids[1]
    finally:
        await node.close()


# --- the node, with its bare route ---------------------------------------------------------------


def bare_route(kept: dict[tuple[str, bool], dict[str, Any]]) -> Any:
    """/bare/{thread_id}: the plain SELECT and the render of the kept context (see above)."""
    from web import routes_threads
    from web.pages import db, render_group_page

    async def bare(request: web.Request) -> web.Response:
        thread_id = request.match_info["thread_id"]
        rows = (
            await db(request).execute(
                text(
                    "SELECT * FROM posts WHERE thread_id = :thread ORDER BY created_at, id LIMIT 50"
                ),
                {"thread": thread_id},
            )
        ).all()
        if len(rows) != PAGE_POSTS:
            raise web.HTTPInternalServerError(text=f"{len(rows)} posts, not {PAGE_POSTS}")
        key = (thread_id, request.get(MEMBER) is not None)
        if key not in kept:
            real = routes_threads.render_group_page

            def keep(
                request: web.Request, group: Any, template: str, context: Any, status: int = 200
            ) -> Any:
                kept[key] = {"group": group, "template": template, "context": context}
                return real(request, group, template, context, status)

            routes_threads.render_group_page = keep  # type: ignore[assignment]
            try:
                return await routes_threads.thread_page(request)
            finally:
                routes_threads.render_group_page = real
        page = kept[key]
        return render_group_page(request, page["group"], page["template"], page["context"])

    return bare


def serve_main(args: argparse.Namespace) -> None:
    say(f"node: {pin_to_core(NODE_CORE)}")

    async def main() -> None:
        node = await NodeContext.open(_settings(args.domain, args.data_dir), clock=SystemClock())
        attach_actor_keys(node)
        app = create_app(node, run_workers=False)
        app.router.add_get("/bare/{thread_id}", bare_route({}))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        keep_what_started()  # as `healthnode serve` does once started
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await node.close()

    asyncio.run(main())


# --- the driver ----------------------------------------------------------------------------------


async def latency(
    http: aiohttp.ClientSession, url: str, host: str, count: int
) -> tuple[float, float, int]:
    """Median and 90th percentile in ms of `count` GETs one after the other, and the size."""
    times, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        async with http.get(url, headers={"Host": host}) as response:
            body = await response.read()
            if response.status != 200:
                raise BenchFailure(f"{url} answered {response.status}")
        times.append(1000 * (time.perf_counter() - started))
        size = len(body)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))], size


async def cpu_per_page(client: TestClient, path: str, headers: dict[str, str], count: int) -> float:
    """CPU milliseconds of this process per GET of `path`, one at a time (client included)."""
    started = time.process_time()
    for _ in range(count):
        response = await client.get(path, headers=headers)
        await response.read()
        if response.status != 200:
            raise BenchFailure(f"{path} answered {response.status}")
    return 1000 * (time.process_time() - started) / count


async def in_process(
    settings: Settings, thread_id: str, requests: int, top: int
) -> tuple[dict[str, float], str, str, float]:
    """With the node stopped, its app in this process (aiohttp's TestServer): CPU per page of
    the real page and of the bare one, taken in turns, then the real page under cProfile."""
    node = await NodeContext.open(settings, clock=SystemClock())
    attach_actor_keys(node)
    try:
        app = create_app(node, run_workers=False)
        app.router.add_get("/bare/{thread_id}", bare_route({}))
        async with TestClient(TestServer(app)) as client:
            headers = {"Host": settings.domain}
            real, bare = thread_path(thread_id), f"/bare/{thread_id}"
            cpu: dict[str, list[float]] = {real: [], bare: []}
            for _ in range(3):
                for path in (real, bare):
                    await cpu_per_page(client, path, headers, 5)
                    cpu[path].append(await cpu_per_page(client, path, headers, CPU_REQUESTS))
            profile = cProfile.Profile()
            with SqlStats(node.engine) as stats:
                started = time.perf_counter()
                profile.enable()
                await cpu_per_page(client, real, headers, requests)
                profile.disable()
                elapsed = time.perf_counter() - started
            figures = {"thread page": min(cpu[real]), "bare": min(cpu[bare])}
            return figures, profile_report(profile, top), stats.report(requests, "page"), elapsed
    finally:
        await node.close()


async def measure(args: argparse.Namespace, work_dir: Path) -> None:
    data_dir = work_dir / "data"
    data_dir.mkdir(mode=0o700)
    port = unused_port()
    domain, base = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    settings = _settings(domain, data_dir)
    seeded = time.perf_counter()
    short, long = await seed(settings)
    say(f"seeded a {PAGE_POSTS}-post thread and a {LONG_REPLIES}-reply one in "
        f"{time.perf_counter() - seeded:.1f} s")  # fmt: skip
    rates: dict[str, Measured] = {}
    async with AsyncExitStack() as cleanup:
        node = await start(
            "node", work_dir,
            ["-m", "bench.thread", "serve", "--port", str(port), "--domain", domain,
             "--data-dir", str(data_dir)],
        )  # fmt: skip
        cleanup.push_async_callback(node.stop)
        await answering(node, base + thread_path(short), domain)
        say(f"driver and wrk: {pin_to_core(PEER_CORE)}")
        reader = Person(domain, [base])
        cleanup.push_async_callback(reader.close)
        await reader.sign_in(READER)
        cookie = "; ".join(
            f"{c.key}={c.value}" for c in reader.http.cookie_jar if c.key == SESSION_COOKIE
        )
        if not cookie:
            raise BenchFailure("no session cookie after signing in")
        for label, headers in (("signed out", []), ("signed in", ["-H", f"Cookie: {cookie}"])):
            for what, path in (("thread page", thread_path(short)), ("bare", f"/bare/{short}")):
                await wrk(base, domain, [path], 2, args.connections, work_dir, headers)
                rates[f"{what}, {label}"] = await wrk(
                    base, domain, [path], args.seconds, args.connections, work_dir, headers
                )
                say(f"  {what + ', ' + label:26} {rates[f'{what}, {label}'].line()}")
        figures = []
        async with aiohttp.ClientSession() as http:
            _, _, html = await reader.get(thread_path(long))
            last = 1
            for number in range(2, 100):
                if f"?page={number}" in html:
                    last = number
            pages = [("page 1", thread_path(long))]
            if last > 1:
                pages.append((f"last page ({last})", thread_page_path(long, last)))
            for label, path in pages:
                for who, jar in (("signed out", http), ("signed in", reader.http)):
                    await latency(jar, base + path, domain, 3)
                    median, p90, size = await latency(jar, base + path, domain, LATENCY_REQUESTS)
                    figures.append(
                        (f"{LONG_REPLIES}-reply thread, {label}, {who}", median, p90, size)
                    )
        await node.stop()
        if node.process.returncode not in (0, -15):
            raise BenchFailure(f"the node exited with {node.process.returncode}:\n{node.tail()}")
        cpu, report, sql, elapsed = await in_process(
            settings, short, args.profile_requests, args.profile_top
        )

    say(f"\n== the {PAGE_POSTS}-post thread page against a bare SELECT + render, wrk -c"
        f"{args.connections}, node on one core ==")  # fmt: skip
    say("| reader | thread page req/s | p50 | bare SELECT + render req/s | thread / bare |")
    say("|---|---|---|---|---|")
    for label in ("signed out", "signed in"):
        page, bare = rates[f"thread page, {label}"], rates[f"bare, {label}"]
        if not (page.rate and bare.rate):
            raise BenchFailure(f"wrk was answered no request {label} (another benchmark running?)")
        say(f"| {label} | {page.rate:,.0f} | {page.p50:.1f} ms | {bare.rate:,.0f} | "
            f"**{page.rate / bare.rate:.2f}** |")  # fmt: skip
    say(f"\n== {LONG_REPLIES}-reply thread, {LATENCY_REQUESTS} requests one at a time (goal: "
        "median under 50 ms) ==")  # fmt: skip
    for label, median, p90, size in figures:
        say(f"  {label:45} median {median:6.1f} ms  p90 {p90:6.1f} ms  {size / 1024:5.1f} KB")
    say(f"\nCPU per page in-process, one request at a time (the least of 3 x {CPU_REQUESTS}): "
        f"thread page {cpu['thread page']:.1f} ms, bare {cpu['bare']:.1f} ms, "
        f"bare / thread **{cpu['bare'] / cpu['thread page']:.2f}** (signed out)")  # fmt: skip
    oversize = [label for label, _, _, size in figures if size > SIZE_LIMIT]
    if oversize:
        raise BenchFailure(f"over {SIZE_LIMIT // 1024} KB of HTML: {', '.join(oversize)}")
    say(f"\n== profiled: {args.profile_requests} signed-out requests of the {PAGE_POSTS}-post "
        f"page in-process under cProfile, {1000 * elapsed / args.profile_requests:.1f} ms a page "
        "(cProfile inflates it) ==")  # fmt: skip
    say(sql)
    say(report)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.thread", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="each wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--profile-requests", type=int, default=200)
    parser.add_argument("--profile-top", type=int, default=15)
    commands = parser.add_subparsers(dest="role")
    serve = commands.add_parser("serve")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--domain", required=True)
    serve.add_argument("--data-dir", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "serve":
        serve_main(args)
        return 0
    if wrk_missing():
        return 1
    return run_in_scratch("thread", lambda work_dir: measure(args, work_dir))


if __name__ == "__main__":
    sys.exit(main())
