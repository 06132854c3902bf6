"""What the fixed stack costs per request on one core: the floors under issue 9's section 6.

The section's goals are ratios to the cryptography a reply or a delivery cannot avoid. This
benchmark measures, in one run on the node's core, what the stack the node is built on
(aiohttp's client and server, SQLAlchemy's async session over aiosqlite) costs for the least
each of those paths must also do, with no code of the node's but its HTTP client:

- **send**: the node's own `FederationClient.post_signed` (sign + POST) of an Announce-sized
  body, to aiohttp receivers on the other core; and a bare aiohttp POST of the same body;
- **serve**: an aiohttp app whose one route reads a POSTed body and answers 202, driven by
  `wrk` from the other core;
- **statement**: one `SELECT 1` through `AsyncSession.execute` on a SQLite file; and one
  `BEGIN IMMEDIATE` ... `COMMIT` through the same session;
- **sign**: RSA-2048 PKCS#1 v1.5 / SHA-256 over a delivery's signing string, as
  `bench.fanout`'s baseline; **verify** as `bench.inbox`'s.

It then prints the best ratios that the goals' own baselines allow with the stack's floors
alone, before any of the node's work: if a floor's ratio is under the goal, no code on this
stack reaches the goal on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bench.common import (
    PEER_CORE,
    BenchFailure,
    cpu_seconds,
    run_benchmark,
    say,
    serve_on_loopback,
    wrk_missing,
)
from bench.fanout import Receivers
from federation import httpsig
from federation.client import FederationClient, Signer

BODY_BYTES = 2_600  # an Announce{Create} of a short reply, as bench.fanout delivers
SENDS = 3_000
CONCURRENCY = 64
STATEMENTS = 2_000
CRYPTO_SECONDS = 1.0


def announce_body() -> bytes:
    filler = "x" * (BODY_BYTES - 200)
    text_ = (
        '{"@context":"https://www.w3.org/ns/activitystreams","type":"Announce",'
        f'"id":"http://127.0.0.1/a/1","actor":"http://127.0.0.1/g/t1d","object":"{filler}"}}'
    )
    return text_.encode()


def cpu_per(calls: int, started: float) -> float:
    return (cpu_seconds() - started) / calls


async def sends(ports: list[int], key: rsa.RSAPrivateKey) -> tuple[float, float]:
    """CPU per delivery on this core: the node's post_signed, then a bare aiohttp POST."""
    body = announce_body()
    urls = [f"http://127.0.0.1:{port}/users/u{index}/inbox" for index, port in enumerate(ports)]
    signer = Signer(key_id="http://127.0.0.1/g/t1d#main-key", private_key=key)
    client = FederationClient(allow_loopback=True)
    headers = {"Content-Type": "application/activity+json", "Signature": "x", "Digest": "x"}
    try:

        async def signed(index: int) -> None:
            status, _, _ = await client.post_signed(
                urls[index % len(urls)], body, signer, datetime.now(UTC)
            )
            if status != 202:
                raise BenchFailure(f"a receiver answered {status}")

        async def bare(index: int) -> None:
            async with client.session.post(
                urls[index % len(urls)], data=body, headers=headers
            ) as response:
                await response.read()
                if response.status != 202:
                    raise BenchFailure(f"a receiver answered {response.status}")

        results = []
        for one in (signed, bare):
            await run_bounded(one, CONCURRENCY)  # warm: connections open, families learnt
            started = cpu_seconds()
            await run_bounded(one, SENDS)
            results.append(cpu_per(SENDS, started))
        return results[0], results[1]
    finally:
        await client.close()


async def run_bounded(one: object, count: int) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(index: int) -> None:
        async with gate:
            await one(index)  # type: ignore[operator]

    await asyncio.gather(*(gated(index) for index in range(count)))


WRK_POST = """wrk.method = "POST"
wrk.body = string.rep("x", %d)
wrk.headers["Content-Type"] = "application/activity+json"
"""


async def serves(work_dir: Path, seconds: int) -> float:
    """CPU per POST of this process's aiohttp server, read by wrk on the other core."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/inbox", accept)
    runner, port = await serve_on_loopback(app)
    script = work_dir / "post.lua"
    script.write_text(WRK_POST % 1_935)  # bench.inbox's Create{Note}
    try:
        started = cpu_seconds()
        process = await asyncio.create_subprocess_exec(
            "wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(script),
            f"http://127.0.0.1:{port}/inbox",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {PEER_CORE}),
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
        used = cpu_seconds() - started
    finally:
        await runner.cleanup()
    report = output.decode()
    total = re.search(r"(\d+) requests in", report)
    if process.returncode != 0 or not total or int(total.group(1)) == 0:
        raise BenchFailure(f"wrk failed:\n{report}")
    if re.search(r"Non-2xx or 3xx responses", report):
        raise BenchFailure(f"the null server answered other than 202:\n{report}")
    return used / int(total.group(1))


async def statements(work_dir: Path) -> tuple[float, float]:
    """CPU per SELECT 1, and per empty write transaction, through SQLAlchemy's async session
    over aiosqlite on a file (aiosqlite's thread included: this process's CPU)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{work_dir / 'floor.db'}")
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    try:
        async with sessions() as session:
            await session.execute(text("PRAGMA journal_mode=WAL"))
            await session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            await session.commit()
            for _ in range(50):
                await session.execute(text("SELECT 1"))
            started = cpu_seconds()
            for _ in range(STATEMENTS):
                await session.execute(text("SELECT 1"))
            select_cost = cpu_per(STATEMENTS, started)
            await session.commit()
        async with sessions() as session:
            started = cpu_seconds()
            for index in range(STATEMENTS // 4):
                await session.execute(text("BEGIN IMMEDIATE"))
                await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": str(index)})
                await session.execute(text("COMMIT"))
            write_cost = cpu_per(STATEMENTS // 4, started)
        return select_cost, write_cost
    finally:
        await engine.dispose()


def crypto_rates(key: rsa.RSAPrivateKey) -> tuple[float, float]:
    body = announce_body()
    headers = {
        "host": "127.0.0.1:8000",
        "date": "Sun, 01 Nov 2026 12:00:00 GMT",
        "digest": httpsig.digest_header(body),
    }
    signing_string = httpsig.cavage_signing_string(
        "POST", "/inbox", headers, ("(request-target)", "host", "date", "digest")
    ).encode()
    signature = key.sign(signing_string, padding.PKCS1v15(), hashes.SHA256())
    public = key.public_key()
    rates = []
    for step in (
        lambda: key.sign(signing_string, padding.PKCS1v15(), hashes.SHA256()),
        lambda: public.verify(signature, signing_string, padding.PKCS1v15(), hashes.SHA256()),
    ):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < CRYPTO_SECONDS and done < 1_000_000:
            step()
            done += 1
        rates.append(done / (time.perf_counter() - started))
    return rates[0], rates[1]


async def bench(args: argparse.Namespace, receivers: Receivers, work_dir: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    say(f"processes                  this one {args.pinned}; receivers and wrk on core {PEER_CORE}")
    sign_rate, verify_rate = crypto_rates(key)
    signed, bare = await sends(receivers.ports, key)
    served = await serves(work_dir, args.seconds)
    select_cost, write_cost = await statements(work_dir)
    sign, verify = 1 / sign_rate, 1 / verify_rate
    say()
    say("== the stack's floors, CPU on one core ==")
    say(f"RSA-2048 sign              {sign * 1e3:.3f} ms ({sign_rate:,.0f}/s)")
    say(f"RSA-2048 verify            {verify * 1e3:.3f} ms ({verify_rate:,.0f}/s)")
    say(f"post_signed (sign + POST)  {signed * 1e3:.3f} ms a delivery (concurrency {CONCURRENCY})")
    say(f"aiohttp client POST, bare  {bare * 1e3:.3f} ms a request")
    say(f"aiohttp server POST, null  {served * 1e3:.3f} ms a request (wrk -c16, 1.9 KB body)")
    say(f"SQLAlchemy async SELECT 1  {select_cost * 1e3:.3f} ms a statement (aiosqlite, file)")
    say(f"empty write transaction    {write_cost * 1e3:.3f} ms (BEGIN IMMEDIATE, INSERT, COMMIT)")
    say()
    say("== the best ratios these floors allow, before any of the node's own work ==")
    fanout = (1 / signed) / sign_rate
    say(f"fan-out: 1 / post_signed over the signing rate       {fanout:.3f} (goal >= 0.5)")
    # The inbox goal's baseline: verify, store one row, sign one Announce, per item.
    limit = 1 / (verify + sign + write_cost / args.batch)
    floor = served + verify + signed + 2 * select_cost / args.batch + write_cost / args.batch
    say(
        f"inbox: serve + verify + post_signed + a batch's two statements and one write\n"
        f"       shared by {args.batch} items, over verify+store+sign    "
        f"{(1 / floor) / limit:.3f} (goal >= 0.5)"
    )
    say()
    say("== what is left at the goal for all the rest of the node's work ==")
    say(
        f"fan-out: {(2 / sign_rate - signed) * 1e3:.3f} ms a delivery (claim, lease, record, "
        f"circuit, scheduling)"
    )
    say(
        f"inbox:   {(2 / limit - floor) * 1e3:.3f} ms an item (parse, authorise, store the "
        f"post, index it, notify, queue and record its Announce)"
    )
    say(f"against  {select_cost * 1e3:.3f} ms for one SQLAlchemy statement")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floors", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="the wrk run (default 5)")
    parser.add_argument(
        "--batch", type=int, default=50, help="items that share a batch's statements (50)"
    )
    args = parser.parse_args()
    if not (1 <= args.seconds <= 60 and 1 <= args.batch <= 1000):
        parser.error("need 1 <= seconds <= 60 and 1 <= batch <= 1000")
    if wrk_missing():
        return 1
    receivers = Receivers(servers=8, shared=0)
    return run_benchmark(
        "floors",
        receivers,
        "receivers'",
        lambda work_dir: bench(args, receivers, work_dir),
        args,
    )


if __name__ == "__main__":
    raise SystemExit(main())
