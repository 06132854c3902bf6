"""Inbox: signed Create{Note} replies per second, accepted (202) AND processed, on one core.

    .venv/bin/python -m bench.inbox [--items 2000] [--concurrency 16] [--profile-items 500]

The node under test is served for real (create_app from web.app under web.AppRunner on a
127.0.0.1 port, its inbox and delivery workers running, SQLite in a temporary directory) by
this process, pinned to the first core: the web handlers, the workers and aiosqlite's threads
all share that core. A child process pinned to the second core plays the remote server: it
serves the Person actor `alice` (an RSA-2048 key generated for the run) and her inbox, and
sends the load. alice is an active member of the public group; before anything is timed it
pre-signs every Create{Note} (a reply to a thread of the group, Mastodon's shape and context,
draft-cavage rsa-sha256 over (request-target) host date digest).

Timed: from the first POST until every InboxItem is `done` (polled with a deadline), the
POSTs sent with bounded concurrency over one aiohttp ClientSession. A warm-up batch goes
first (not timed): it lets the node fetch alice's key once and compile its SQL.
Each processed reply is announced by the group to its remote followers, here alice's inbox:
that is part of what the node does, so the delivery worker runs during the timed run too.

The in-run baseline (same process, same core) is the limit for the work a reply cannot
avoid: for each of the same N requests, SHA-256 of the body checked against Digest,
json.loads, the signing string rebuilt from the headers, RSA-2048 PKCS#1 v1.5 verify, and one
INSERT into an inbox-like table in its own transaction (BEGIN IMMEDIATE ... COMMIT), with the
stdlib sqlite3 module on a file database with the node's pragmas (WAL, synchronous=NORMAL);
then the group's Announce of it: serialised, its SHA-256 Digest, the signing string, and one
RSA-2048 signature.

A second batch is then sent open loop at half the measured rate (request i due at
start + i / rate, whatever became of the others) for PACED_SECONDS, and its POST -> 202
latency is measured from when each request was due. A further batch is sent under cProfile,
to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import hashlib
import json
import logging
import multiprocessing
import resource
import sqlite3
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
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
    reserve_port,
    run_benchmark,
    say,
    serve_on_loopback,
    wait_until,
)
from federation.keysink import attach_actor_keys
from node import groups, posts, remote
from node.members import create_member
from node.policy import Action, Viewer
from node.runtime import NodeContext
from node.storage.models import InboxItem, Membership, Post
from web.app import create_app
from web.cli import keep_what_started

AS2 = "https://www.w3.org/ns/activitystreams"
SECURITY_V1 = "https://w3id.org/security/v1"
PUBLIC = AS2 + "#Public"
AS2_JSON = "application/activity+json"
COVERED = ("(request-target)", "host", "date", "digest")
# What Mastodon puts in a Create's @context (plain for the node: no JSON-LD processing).
MASTODON_CONTEXT: list[Any] = [
    AS2,
    {
        "ostatus": "http://ostatus.org#",
        "atomUri": "ostatus:atomUri",
        "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
        "conversation": "ostatus:conversation",
        "sensitive": "as:sensitive",
        "toot": "http://joinmastodon.org/ns#",
        "votersCount": "toot:votersCount",
    },
]
WARM_UP = 50
PROCESS_DEADLINE_SECONDS = 75.0
SETTLE_DEADLINE_SECONDS = 30.0
SEND_DEADLINE_SECONDS = 75.0
POLL_SECONDS = 0.05
PACED_SECONDS = 10.0  # the latency run: this long at half the measured rate
PACED_CONNECTIONS = 256
PACED_MAX_ITEMS = 8000


# ---------------------------------------------------------------- the remote server (child)


@dataclass(frozen=True)
class Prepared:
    activity_id: str
    body: bytes
    headers: dict[str, str]


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign_post(url: str, body: bytes, key: rsa.RSAPrivateKey, key_id: str) -> dict[str, str]:
    """draft-cavage-http-signatures-12, rsa-sha256, built here from the spec (not with the
    node's own httpsig module, so that one fault cannot hide on both sides)."""
    parts = urlsplit(url)
    values = {
        "(request-target)": f"post {parts.path}",
        "host": parts.netloc,
        "date": format_datetime(datetime.now(UTC), usegmt=True),
        "digest": "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }
    text = "\n".join(f"{name}: {values[name]}" for name in COVERED)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        "Content-Type": AS2_JSON,
        "Host": values["host"],
        "Date": values["date"],
        "Digest": values["digest"],
        "Signature": f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(COVERED)}",'
        f'signature="{base64.b64encode(signature).decode()}"',
    }


def reply_create(actor: str, group_iri: str, thread_iri: str, index: int) -> dict[str, Any]:
    """A Create{Note} replying to the thread, shaped like Mastodon's (about 1.5 KB)."""
    note_id = f"{actor}/statuses/{uuid.uuid4().hex}"
    published = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = (
        f"<p>Reply {index}: I had the same night-time lows after switching. What helped me was "
        "moving the basal change an hour later and checking at 3 am for a week. Keep a log, "
        "and bring it to your diabetes nurse; mine adjusted the profile in ten minutes.</p>"
    )
    return {
        "@context": MASTODON_CONTEXT,
        "id": note_id + "/activity",
        "type": "Create",
        "actor": actor,
        "published": published,
        "to": [PUBLIC],
        "cc": [group_iri, actor + "/followers"],
        "audience": group_iri,
        "object": {
            "id": note_id,
            "type": "Note",
            "summary": None,
            "inReplyTo": thread_iri,
            "published": published,
            "url": note_id.replace("/statuses/", "/@alice/"),
            "attributedTo": actor,
            "to": [PUBLIC],
            "cc": [group_iri, actor + "/followers"],
            "audience": group_iri,
            "sensitive": False,
            "atomUri": note_id,
            "inReplyToAtomUri": thread_iri,
            "content": text,
            "contentMap": {"en": text},
            "attachment": [],
            "tag": [],
        },
    }


def run_remote(conn: Any) -> None:
    pinned = pin_to_core(PEER_CORE)
    asyncio.run(_remote_main(conn, pinned))


async def _remote_main(conn: Any, pinned: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    loop = asyncio.get_running_loop()
    received: Counter[str] = Counter()
    box: dict[str, str] = {}

    async def actor(request: web.Request) -> web.Response:
        iri = box["actor"]
        document = {
            "@context": [AS2, SECURITY_V1],
            "id": iri,
            "type": "Person",
            "preferredUsername": "alice",
            "name": "Alice",
            "inbox": iri + "/inbox",
            "followers": iri + "/followers",
            "publicKey": {"id": iri + "#main-key", "owner": iri, "publicKeyPem": public_pem(key)},
        }
        received["actor GET"] += 1
        return web.Response(body=json.dumps(document).encode(), content_type=AS2_JSON)

    async def inbox(request: web.Request) -> web.Response:
        body = await request.read()
        kind = json.loads(body).get("type") if body else None
        signed = "Signature" in request.headers
        received[f"inbox {kind}{'' if signed else ' unsigned'}"] += 1
        return web.Response(status=202)

    app = web.Application()
    app.router.add_get("/users/alice", actor)
    app.router.add_post("/users/alice/inbox", inbox)
    runner, port = await serve_on_loopback(app)
    box["actor"] = f"http://127.0.0.1:{port}/users/alice"
    conn.send({"port": port, "actor": box["actor"], "pinned": pinned})

    batches: dict[str, list[Prepared]] = {}
    session: aiohttp.ClientSession | None = None
    try:
        while True:
            message = await loop.run_in_executor(None, next_command, conn)
            command, argument = ("stop", None) if message == "stop" else message
            if command == "prepare":
                started = time.perf_counter()
                key_id = box["actor"] + "#main-key"
                index = 0
                for name, count in argument["batches"].items():
                    batch = []
                    for _ in range(count):
                        document = reply_create(
                            box["actor"], argument["group_iri"], argument["thread_iri"], index
                        )
                        body = json.dumps(document, separators=(",", ":")).encode()
                        headers = sign_post(argument["inbox_url"], body, key, key_id)
                        batch.append(Prepared(document["id"], body, headers))
                        index += 1
                    batches[name] = batch
                answer: dict[str, Any] = {
                    "seconds": time.perf_counter() - started,
                    "public_pem": public_pem(key),
                }
                if "timed" in argument["batches"]:
                    # for the parent's in-run baseline, as plain tuples
                    answer["timed"] = [(p.activity_id, p.body, p.headers) for p in batches["timed"]]
                conn.send(answer)
            elif command == "send":
                if session is None:
                    session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=argument["concurrency"])
                    )
                conn.send(
                    await send_batch(
                        session,
                        argument["inbox_url"],
                        batches.pop(argument["batch"]),
                        argument["concurrency"],
                    )
                )
            elif command == "pace":
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=PACED_CONNECTIONS)
                ) as paced:
                    conn.send(
                        await send_paced(
                            paced,
                            argument["inbox_url"],
                            batches.pop(argument["batch"]),
                            argument["rate"],
                        )
                    )
            elif command == "received":
                conn.send(dict(received))
            else:  # "stop"
                break
    finally:
        if session is not None:
            await session.close()
        await runner.cleanup()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with contextlib.suppress(OSError):  # the parent may be gone
            conn.send({"received": dict(received), "cpu": usage.ru_utime + usage.ru_stime})


async def send_batch(
    session: aiohttp.ClientSession, url: str, batch: list[Prepared], concurrency: int
) -> dict[str, Any]:
    """POST every prepared request, at most `concurrency` at once; statuses and timing."""
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    latencies: list[float] = []
    pending = iter(batch)
    started = time.perf_counter()
    deadline = started + SEND_DEADLINE_SECONDS

    async def sender() -> None:
        for prepared in pending:
            if time.perf_counter() > deadline:
                statuses["not sent (deadline)"] += 1
                continue
            await _post_one(
                session, url, prepared, time.perf_counter(), statuses, errors, latencies
            )

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return {
        "statuses": dict(statuses),
        "errors": errors,
        "seconds": time.perf_counter() - started,
        "latency": _percentiles(latencies),
    }


async def _post_one(
    session: aiohttp.ClientSession,
    url: str,
    prepared: Prepared,
    since: float,
    statuses: Counter[str],
    errors: list[str],
    latencies: list[float],
) -> None:
    """POST one prepared request; its latency counts from `since` (sent, or due)."""
    try:
        async with session.post(
            url,
            data=prepared.body,
            headers=prepared.headers,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            text = await response.text()
            latencies.append(time.perf_counter() - since)
            statuses[str(response.status)] += 1
            if response.status != 202 and len(errors) < 5:
                errors.append(f"{response.status} {text[:200]}")
    except (aiohttp.ClientError, TimeoutError) as error:
        statuses[type(error).__name__] += 1
        if len(errors) < 5:
            errors.append(repr(error)[:200])


async def send_paced(
    session: aiohttp.ClientSession, url: str, batch: list[Prepared], rate: float
) -> dict[str, Any]:
    """POST every prepared request at a fixed rate, open loop: request i is due at
    start + i / rate whether or not earlier ones were answered. Latency is measured from
    when a request was due, so a stalled node shows as latency, not as a slower sender."""
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    latencies: list[float] = []
    started = time.perf_counter() + 0.05
    deadline = started + SEND_DEADLINE_SECONDS

    async def one(prepared: Prepared, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if time.perf_counter() > deadline:
            statuses["not sent (deadline)"] += 1
            return
        await _post_one(session, url, prepared, due, statuses, errors, latencies)

    await asyncio.gather(
        *(one(prepared, started + index / rate) for index, prepared in enumerate(batch))
    )
    return {
        "statuses": dict(statuses),
        "errors": errors,
        "seconds": time.perf_counter() - started,
        "latency": _percentiles(latencies),
    }


def _percentiles(latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)

    def at(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}


class Remote:
    """The parent's handle on the remote server."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=run_remote, args=(child_conn,), daemon=True)
        self.actor = ""
        self.pinned = ""

    def start(self) -> None:
        self.process.start()
        if not self.conn.poll(30):
            raise BenchFailure("the remote server did not start within 30 s")
        answer = self.conn.recv()
        self.actor, self.pinned = answer["actor"], answer["pinned"]

    def ask(self, command: str, argument: Any = None, seconds: float = 60) -> Any:
        self.conn.send((command, argument))
        if not self.conn.poll(seconds):
            raise BenchFailure(f"the remote server did not answer {command!r} in {seconds:.0f} s")
        return self.conn.recv()

    async def ask_async(self, command: str, argument: Any = None, seconds: float = 90) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.ask, command, argument, seconds
        )

    def stop(self) -> dict[str, Any] | None:
        answer = None
        if self.process.is_alive():
            try:
                answer = self.ask("stop", None, 30)
            except (BenchFailure, OSError, EOFError):
                answer = None
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its handle
            self.process.join(5)
        return answer


# ---------------------------------------------------------------- the node (this process)


@dataclass
class Seeded:
    group_iri: str
    thread_iri: str
    inbox_url: str


async def seed(node: NodeContext, actor: str) -> Seeded:
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
        await session.flush()
        view = await groups.group_view_by_id(session, group.id, Viewer(owner.id), Action.POST)
        thread = await posts.start_thread(
            session,
            limits,
            view,
            title="Night-time lows on a new pump",
            draft=posts.Draft("Since the new pump I've had lows at night. Ideas?"),
            now=now,
        )
        port = urlsplit(actor).netloc
        alice = await remote.upsert_remote_member(
            session,
            remote.RemoteActorFacts(
                iri=actor,
                username="alice",
                domain=port,
                display_name="Alice",
                summary="",
                inbox=actor + "/inbox",
                shared_inbox=None,
                profile_url=actor,
            ),
            now,
        )
        session.add(
            Membership(
                group_id=group.id,
                member_id=alice.id,
                state="active",
                role="member",
                created_at=now,
                updated_at=now,
            )
        )
        thread_id = thread.id
    base = node.settings.base_url
    return Seeded(f"{base}/g/pumps", f"{base}/t/{thread_id}", f"{base}/g/pumps/inbox")


@dataclass
class Batch:
    items: int
    wall: float  # first POST -> last item processed
    accepted_at: float  # first POST -> the last 202 received by the sender
    processed_when_accepted: int
    cpu: float
    deliveries_done_at_end: int
    deliveries_total: int
    latency: dict[str, float]


async def run_batch(
    node: NodeContext,
    observer: Observer,
    remote_server: Remote,
    seeded: Seeded,
    name: str,
    items: int,
    concurrency: int,
    done_before: int,
    rate: float | None = None,
) -> Batch:
    """Send a prepared batch (closed loop with `concurrency` senders, or open loop at `rate`
    a second) and wait until every item of it is processed."""
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    if rate is None:
        command = "send"
        argument: dict[str, Any] = {"concurrency": concurrency}
    else:
        command, argument = "pace", {"rate": rate}
    sending = asyncio.ensure_future(
        remote_server.ask_async(command, {"inbox_url": seeded.inbox_url, "batch": name, **argument})
    )
    marks: dict[str, Any] = {}

    def note_accepted(future: asyncio.Future[Any]) -> None:
        marks["accepted_at"] = time.perf_counter() - t0

    sending.add_done_callback(note_accepted)
    last: dict[str, int] = {}

    async def all_processed() -> bool:
        # Every 202 means stored: once all are answered, the batch is processed when no item
        # is left queued. Only unfinished rows are counted (an index range, not the table).
        sent = sending.done()
        states = await observer.inbox_states(unfinished=True)
        last.update(states)
        if states.get("failed") or states.get("retrying"):
            raise BenchFailure(
                f"inbox items failed or wait for a retry: {states}: {await failures(node)}"
            )
        if not sent:
            return False
        result = sending.result()
        if result["statuses"] != {"202": items}:
            raise BenchFailure(f"not every POST was accepted: {result}")
        if "processed_when_accepted" not in marks:
            done = (await observer.inbox_states()).get("done", 0)
            marks["processed_when_accepted"] = done - done_before
        return not states

    try:
        await wait_until(
            all_processed,
            f"{items} items to be processed",
            PROCESS_DEADLINE_SECONDS,
            POLL_SECONDS,
            asyncio.sleep,
        )
    except BenchFailure:
        if not sending.done():
            sending.cancel()
        raise
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    result = await sending
    if result["statuses"] != {"202": items}:
        raise BenchFailure(f"not every POST was accepted: {result}")
    deliveries = await observer.delivery_states()
    return Batch(
        items=items,
        wall=wall,
        accepted_at=marks.get("accepted_at", wall),
        processed_when_accepted=marks.get("processed_when_accepted", items),
        cpu=cpu,
        deliveries_done_at_end=deliveries.get("delivered", 0),
        deliveries_total=sum(deliveries.values()),
        latency=result["latency"],
    )


async def failures(node: NodeContext) -> list[str]:
    async with node.transaction() as session:
        rows = await session.execute(select(InboxItem.error).where(InboxItem.error != "").limit(3))
        return [error[:300] for error in rows.scalars()]


async def count_replies(node: NodeContext) -> int:
    async with node.transaction() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(Post).where(Post.ap_id.is_not(None))
                )
            ).scalar_one()
        )


async def deliveries_settled(observer: Observer, expected: int) -> float:
    """Wait until the group's Announces of every reply are delivered; answers the wait."""
    started = time.perf_counter()

    async def settled() -> bool:
        states = await observer.delivery_states()
        if states.get("failed") or states.get("abandoned") or states.get("retrying"):
            raise BenchFailure(f"announce deliveries gave up: {states}")
        return states.get("delivered", 0) >= expected

    await wait_until(
        settled,
        f"{expected} announces to be delivered",
        SETTLE_DEADLINE_SECONDS,
        POLL_SECONDS,
        asyncio.sleep,
    )
    return time.perf_counter() - started


# ---------------------------------------------------------------- the in-run baseline


def verify_store_sign_limit(
    prepared: list[Prepared],
    pem: str,
    inbox_path: str,
    db_path: Path,
    group_iri: str,
    follower_inbox: str,
) -> float:
    """Items per second for the work a reply cannot avoid: SHA-256 + Digest check,
    json.loads, signing string, RSA verify, one single-row INSERT transaction (stdlib sqlite3,
    WAL, synchronous=NORMAL); then the group's Announce of it to one follower: the Announce
    wrapping the Create serialised, its SHA-256 Digest, the signing string
    `(request-target) host date digest`, and one RSA-2048 PKCS#1 v1.5/SHA-256 signature."""
    public_key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 2048
    group_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    target = urlsplit(follower_inbox)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE inbox_items (id INTEGER PRIMARY KEY, activity_id TEXT UNIQUE NOT NULL, "
        "actor_iri TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER "
        "NOT NULL, next_attempt_at TEXT NOT NULL, received_at TEXT NOT NULL, error TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX ix_state_next ON inbox_items (state, next_attempt_at)")
    started = time.perf_counter()
    for item in prepared:
        headers = {name.lower(): value for name, value in item.headers.items()}
        digest = "SHA-256=" + base64.b64encode(hashlib.sha256(item.body).digest()).decode()
        if digest != headers["digest"]:
            raise BenchFailure("baseline: the digest does not match")
        document = json.loads(item.body)
        params = dict(
            part.split("=", 1) for part in headers["signature"].split(",")
        )  # keyId="...",algorithm="...",headers="...",signature="..."
        covered = params["headers"].strip('"').split()
        lines = []
        for name in covered:
            if name == "(request-target)":
                lines.append(f"(request-target): post {inbox_path}")
            else:
                lines.append(f"{name}: {headers[name]}")
        public_key.verify(
            base64.b64decode(params["signature"].strip('"')),
            "\n".join(lines).encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        now = datetime.now(UTC).isoformat()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO inbox_items (activity_id, actor_iri, body, state, attempts, "
            "next_attempt_at, received_at, error) VALUES (?, ?, ?, 'queued', 0, ?, ?, '')",
            (document["id"], document["actor"], item.body.decode(), now, now),
        )
        db.execute("COMMIT")
        announce = json.dumps(
            {
                "@context": [AS2, SECURITY_V1],
                "id": f"{group_iri}/activities/{uuid.uuid4().hex[:20]}",
                "type": "Announce",
                "actor": group_iri,
                "object": document,
                "to": [PUBLIC],
                "cc": [group_iri + "/followers"],
                "audience": group_iri,
            },
            separators=(",", ":"),
        ).encode()
        values = {
            "(request-target)": f"post {target.path}",
            "host": target.netloc,
            "date": format_datetime(datetime.now(UTC), usegmt=True),
            "digest": "SHA-256=" + base64.b64encode(hashlib.sha256(announce).digest()).decode(),
        }
        group_key.sign(
            "\n".join(f"{name}: {values[name]}" for name in COVERED).encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    elapsed = time.perf_counter() - started
    (rows,) = db.execute("SELECT count(*) FROM inbox_items").fetchone()
    db.close()
    if rows != len(prepared):
        raise BenchFailure(f"baseline inserted {rows} rows, not {len(prepared)}")
    return len(prepared) / elapsed


# ---------------------------------------------------------------- the run


async def bench(args: argparse.Namespace, remote_server: Remote, data_dir: Path) -> None:
    sock, port = reserve_port()
    node = await NodeContext.open(node_settings(data_dir / "node", port))
    attach_actor_keys(node)
    observer = Observer(node.settings.resolved_database_url)
    runner: web.AppRunner | None = None
    try:
        seeded = await seed(node, remote_server.actor)
        answer = await remote_server.ask_async(
            "prepare",
            {
                "inbox_url": seeded.inbox_url,
                "group_iri": seeded.group_iri,
                "thread_iri": seeded.thread_iri,
                "batches": {
                    "warm-up": WARM_UP,
                    "timed": args.items,
                    "profiled": args.profile_items,
                },
            },
            seconds=120,
        )
        say(
            f"the remote server pre-signed {WARM_UP + args.items + args.profile_items} "
            f"Create{{Note}} in {answer['seconds']:.1f} s (not timed; "
            f"{len(answer['timed'][0][1])} B each)"
        )
        runner = web.AppRunner(create_app(node))
        await runner.setup()  # starts Federation and its workers
        site = web.SockSite(runner, sock)
        await site.start()
        keep_what_started()

        warm = await run_batch(
            node, observer, remote_server, seeded, "warm-up", WARM_UP, args.concurrency, 0
        )
        await deliveries_settled(observer, WARM_UP)
        say(f"warm-up: {WARM_UP} items processed in {warm.wall:.2f} s (not timed)")

        rss_before = max_rss_kib()
        timed = await run_batch(
            node, observer, remote_server, seeded, "timed", args.items, args.concurrency, WARM_UP
        )
        settle = await deliveries_settled(observer, WARM_UP + args.items)
        rss_after = max_rss_kib()

        limit = verify_store_sign_limit(
            [Prepared(*item) for item in answer["timed"]],
            answer["public_pem"],
            urlsplit(seeded.inbox_url).path,
            data_dir / "baseline.sqlite3",
            seeded.group_iri,
            remote_server.actor + "/inbox",
        )

        # The latency run: open loop at half the rate just measured.
        rate = timed.items / timed.wall
        paced_rate = rate / 2
        paced_items = max(50, min(PACED_MAX_ITEMS, round(paced_rate * PACED_SECONDS)))
        await remote_server.ask_async(
            "prepare",
            {
                "inbox_url": seeded.inbox_url,
                "group_iri": seeded.group_iri,
                "thread_iri": seeded.thread_iri,
                "batches": {"paced": paced_items},
            },
            seconds=120,
        )
        done_so_far = WARM_UP + args.items
        paced = await run_batch(
            node, observer, remote_server, seeded, "paced", paced_items, args.concurrency,
            done_so_far, rate=paced_rate,
        )  # fmt: skip
        done_so_far += paced_items
        await deliveries_settled(observer, done_so_far)

        profile = cProfile.Profile()
        with SqlStats(node.engine) as sql:
            profile.enable()
            profiled = await run_batch(
                node,
                observer,
                remote_server,
                seeded,
                "profiled",
                args.profile_items,
                args.concurrency,
                done_so_far,
            )
            profile.disable()
        total = done_so_far + args.profile_items
        await deliveries_settled(observer, total)
        replies = await count_replies(node)
        if replies != total:
            raise BenchFailure(f"{replies} replies stored for {total} processed items")
        received = await remote_server.ask_async("received")
        if received.get("inbox Announce") != total or set(received) - {
            "inbox Announce",
            "actor GET",
        }:
            raise BenchFailure(f"the remote server received {received}, expected {total} Announces")
        fetches = received.get("actor GET", 0)
    finally:
        if runner is not None:
            await runner.cleanup()  # stops the workers, closes the federation client
        await observer.close()
        await node.close()
        sock.close()

    say()
    say("== inbox: signed Create{Note} replies, accepted and processed (timed, no profiler) ==")
    say(f"items                      {timed.items} (concurrency {args.concurrency})")
    say(
        f"all accepted (202) after   {timed.accepted_at:.2f} s "
        f"({timed.items / timed.accepted_at:.0f}/s accepted)"
    )
    say(
        "POST -> 202 latency        "
        + ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in timed.latency.items())
        + f" (closed loop, {args.concurrency} senders)"
    )
    say(f"processed by then          {timed.processed_when_accepted} of {timed.items}")
    say(f"all processed after        {timed.wall:.2f} s")
    say(f"accepted-and-processed/s   {rate:.0f}")
    say(
        f"node CPU during the run    {timed.cpu:.2f} s = {100 * timed.cpu / timed.wall:.0f}% "
        "of one core"
    )
    say(
        f"node CPU per item         {1000 * timed.cpu / timed.items:.2f} ms "
        f"(a CPU-bound ceiling of {timed.items / timed.cpu:.0f} items/s on one core)"
    )
    say(
        f"announces delivered        {timed.deliveries_done_at_end - WARM_UP} of {timed.items} "
        f"when the last item was processed; all {settle:.2f} s later"
    )
    say(
        f"verify+store+sign limit/s  {limit:.0f} (verify, sqlite3 stdlib one row per "
        "transaction, sign one Announce)"
    )
    say(f"ratio (processed / limit)  {rate / limit:.3f}")
    say(
        f"open loop at half the rate {paced.items} items at {paced_rate:.0f}/s: "
        f"all processed after {paced.wall:.2f} s ({paced.items / paced.wall:.0f}/s)"
    )
    say(
        "  POST -> 202 latency      "
        + ", ".join(f"{name} {1000 * value:.0f} ms" for name, value in paced.latency.items())
    )
    say(
        f"  node CPU per item        {1000 * paced.cpu / paced.items:.2f} ms "
        f"({100 * paced.cpu / paced.wall:.0f}% of one core)"
    )
    say(
        f"peak RSS                   {rss_before / 1024:.1f} MiB before the timed run, "
        f"{rss_after / 1024:.1f} MiB after"
    )
    say(f"alice's actor fetched      {fetches} time(s) in the whole run (her key, then cached)")
    say(f"processes                  node {args.pinned}; remote server {remote_server.pinned}")
    say()
    say("== profiled run (cProfile inflates the time) ==")
    say(
        f"{profiled.items} items in {profiled.wall:.2f} s under cProfile "
        f"({profiled.items / profiled.wall:.0f}/s); all accepted after "
        f"{profiled.accepted_at:.2f} s, {profiled.processed_when_accepted} processed by then"
    )
    say(sql.report(profiled.items, "item"))
    say(profile_report(profile, args.profile_top))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox", description=__doc__)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile-items", type=int, default=300)
    parser.add_argument("--profile-top", type=int, default=15, help="rows in each profile list")
    args = parser.parse_args()
    if not 0 < args.items <= 20_000 or not 0 < args.profile_items <= 20_000:
        parser.error("items and profile-items must be between 1 and 20000")
    if not 0 < args.concurrency <= 256:
        parser.error("concurrency must be between 1 and 256")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    remote_server = Remote()
    return run_benchmark(
        "inbox",
        remote_server,
        "remote server's",
        lambda data_dir: bench(args, remote_server, data_dir),
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
