"""`healthnode backup` and `restore`: a real node is backed up while it serves and writes,
restored into a fresh data dir, and reopened on the same domain and port while a node on
another port follows one of its groups.

Node A is always SQLite (the commands back up SQLite nodes); the follower uses the run's backend.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3
import stat
import subprocess
import tarfile
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from federation.keysink import attach_actor_keys
from node.config import Settings
from node.runtime import NodeContext
from node.storage.backup import (
    DATABASE,
    MANIFEST,
    SECRET,
    BackupError,
    head_revision,
    restore_backup,
    write_backup,
)
from node.storage.engine import create_engine
from node.storage.migrate import upgrade_to_head
from node.storage.models import Member, Membership, RemoteKey, Thread
from tests.browser import Browser
from tests.clock import ManualClock
from tests.conftest import CHEAP_PASSWORDS, NodeFactory
from tests.federation_harness import Recorder, RunningNode, eventually, free_port, start_node
from tests.keypool import pooled_key_pair
from tests.test_cli import command, command_env
from web.app import create_app

AS2 = {"Accept": "application/activity+json"}
CSRF_VALUE = re.compile(r'(name="csrf_token" value=")[^"]*"')


async def run_cli(*args: str | Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command(*args),
        env=command_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def open_served(
    data_dir: Path, port: int, clock: ManualClock, database_url: str | None = None
) -> RunningNode:
    """A node on `data_dir` (its SQLite file unless `database_url` says otherwise), served on
    127.0.0.1:`port`."""
    settings = Settings(
        domain=f"127.0.0.1:{port}",
        data_dir=data_dir,
        database_url=database_url,
        password_cost=CHEAP_PASSWORDS,
    )
    node = await NodeContext.open(settings, clock=clock)
    attach_actor_keys(node, pooled_key_pair)
    recorder = Recorder()
    server = TestServer(
        create_app(node, trace_configs=[recorder.trace_config()]), host="127.0.0.1", port=port
    )
    await server.start_server()
    return RunningNode("a", node, server, recorder)


async def shut(running: RunningNode) -> None:
    await running.close()
    await running.node.close()


@pytest.fixture
async def follower(make_node: NodeFactory) -> AsyncIterator[RunningNode]:
    running = await start_node(make_node, "b")
    yield running
    await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def as2(browser: Browser, path: str) -> Any:
    page = await browser.get(path, **AS2)
    assert page.status == 200, page.html[:300]
    return json.loads(page.html)


def without_tokens(html: str) -> str:
    return CSRF_VALUE.sub(r'\1"', html)


async def nurse_with_a_public_group(node: RunningNode) -> Browser:
    """nurse, signed in on `node`, owner of its public group t1d."""
    owner = await node.browser()
    await owner.register("nurse")
    await owner.get("/groups/new")
    page = await owner.post(
        "/groups/new",
        {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public",
         "description": "Living with type 1"},
    )  # fmt: skip
    assert page.path == "/g/t1d", page.text[:300]
    return owner


async def bea_follows_t1d(follower: RunningNode, node: RunningNode) -> Browser:
    """bea, signed in on `follower`, having asked to follow t1d on `node`."""
    bea = await follower.browser()
    await bea.register("bea")
    await bea.get("/authorize_interaction")
    page = await bea.post("/groups/follow", {"handle": f"t1d@{node.domain}"})
    assert page.status == 200, page.text[:300]
    return bea


async def test_restored_node_serves_the_same_content_and_keys_to_its_follower(
    follower: RunningNode, tmp_path: Path
) -> None:
    clock = ManualClock()
    port = free_port()
    data_dir = tmp_path / "a"
    a = await open_served(data_dir, port, clock)
    try:
        # Given a public group on A with a settled thread, followed by bea on B
        owner = await nurse_with_a_public_group(a)
        await bea_follows_t1d(follower, a)

        async def remote_followers() -> int:
            return await one(
                a,
                select(func.count())
                .select_from(Membership)
                .join(Member, Member.id == Membership.member_id)
                .where(Membership.state == "active", Member.domain != ""),
            )

        await eventually(remote_followers, "bea's follow accepted on A")
        await owner.get("/g/t1d/new")
        page = await owner.post("/g/t1d/new", {"title": "Settled", "body": "Written *before*."})
        assert page.status == 200, page.text[:300]
        settled_path = page.path
        await eventually(
            lambda: one(follower, select(Thread.id).where(Thread.title == "Settled")),
            "the settled thread on B",
        )
        keys_on_b = await cached_keys(follower, a.base_url)
        assert keys_on_b, "B cached no key of A"

        # And what an anonymous visitor and another server read from A
        visitor = await a.browser()
        before_page = await visitor.get(settled_path)
        assert before_page.status == 200
        before_search = await visitor.get("/search?q=settled+written")
        assert settled_path in before_search.html
        before_documents = {
            path: await as2(visitor, path) for path in ("/g/t1d", "/u/nurse", settled_path)
        }

        # When A is backed up while its owner keeps starting threads
        written: list[str] = []
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                title = f"Busy {len(written)}"
                await owner.get("/g/t1d/new")
                page = await owner.post("/g/t1d/new", {"title": title, "body": "During."})
                assert page.status == 200, page.text[:300]
                written.append(title)

        writing = asyncio.create_task(writer())
        await eventually(lambda: _true(len(written) >= 3), "the writer under way")
        before_backup = len(written)
        archive = tmp_path / "backups" / "a.tar"
        archive.parent.mkdir(mode=0o700)
        code, out, err = await run_cli("backup", archive, "--data-dir", data_dir)
        during_backup = len(written) - before_backup
        stop.set()
        await writing
        assert code == 0, err
        assert during_backup > 0, "no post was written while the backup ran"
    finally:
        await shut(a)

    # Then the archive is one owner-only file with exactly the expected members
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive, "r:") as tar:
        assert tar.getnames() == [MANIFEST, DATABASE, SECRET]
        manifest = json.load(tar.extractfile(MANIFEST) or io.BytesIO())
    assert manifest["schema_revision"] == head_revision()
    assert [path.name for path in archive.parent.iterdir()] == ["a.tar"]
    code, _, err = await run_cli("backup", archive, "--data-dir", data_dir)
    assert code == 1 and "already exists" in err

    # When it is restored into a fresh data dir and A' opens there on the same domain and port
    restored = tmp_path / "restored"
    code, out, err = await run_cli("restore", archive, "--data-dir", restored)
    assert code == 0, err
    assert out.startswith("restored ") and "migrated" not in out, out
    assert stat.S_IMODE(restored.stat().st_mode) == 0o700
    for path in restored.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    code, _, err = await run_cli("restore", archive, "--data-dir", restored)
    assert code == 1 and "already exists" in err
    a2 = await open_served(restored, port, clock)
    try:
        # Then A' holds every thread written before the backup began and only written ones
        async with a2.node.transaction() as session:
            titles = set((await session.execute(select(Thread.title))).scalars())
        busy = {title for title in titles if title.startswith("Busy")}
        assert set(written[:before_backup]) <= busy <= set(written)
        assert "Settled" in titles

        # And serves the same page and the same documents, keys included
        visitor = await a2.browser()
        after_page = await visitor.get(settled_path)
        assert after_page.status == 200
        assert without_tokens(after_page.html) == without_tokens(before_page.html)
        after_search = await visitor.get("/search?q=settled+written")
        assert without_tokens(after_search.html) == without_tokens(before_search.html)
        for path, document in before_documents.items():
            assert await as2(visitor, path) == document, path

        # When the owner signs in on A' and starts a thread
        owner = await a2.browser()
        page = await owner.login("nurse")
        await owner.get("/g/t1d/new")
        page = await owner.post("/g/t1d/new", {"title": "After restore", "body": "Still here."})
        assert page.status == 200, page.text[:300]

        # Then B accepts its delivery, verified with the keys it cached from A, unchanged
        await eventually(
            lambda: one(follower, select(Thread.id).where(Thread.title == "After restore")),
            "the thread made on A' accepted by B",
        )
        assert await cached_keys(follower, a2.base_url) == keys_on_b
    finally:
        await shut(a2)


async def _true(value: bool) -> bool:
    return value


async def cached_keys(node: RunningNode, base_url: str) -> list[tuple[str, str, Any]]:
    async with node.node.transaction() as session:
        rows = await session.execute(
            select(RemoteKey.key_id, RemoteKey.public_pem, RemoteKey.fetched_at)
            .where(RemoteKey.actor_iri.startswith(base_url))
            .order_by(RemoteKey.key_id)
        )
        return [tuple(row) for row in rows]


def archive_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


@pytest.fixture
async def good_archive(tmp_path: Path) -> Path:
    """A real backup of a freshly migrated node."""
    database = tmp_path / "source.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    archive = tmp_path / "good.tar"
    write_backup(database, b"s" * 48, archive, datetime.now(UTC))
    return archive


def run_sync(*args: str | Path) -> tuple[int, str, str]:
    completed = subprocess.run(
        command(*args), env=command_env(), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    return completed.returncode, completed.stdout, completed.stderr


def members_of(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(archive, "r:") as tar:
        return [(info, (tar.extractfile(info) or io.BytesIO()).read()) for info in tar]


def tampered(good: Path, tmp_path: Path, how: str) -> Path:
    parts = members_of(good)
    by_name = {info.name: (info, data) for info, data in parts}
    target = tmp_path / f"{how}.tar"
    if how == "traversal":
        return archive_with(target, [*parts, (member("../escape"), b"x")])
    if how == "absolute":
        return archive_with(target, [(member("/etc/node-secret"), b"x"), *parts])
    if how == "symlink":
        link = member(SECRET, tarfile.SYMTYPE)
        link.linkname = "/etc/passwd"
        return archive_with(target, [by_name[MANIFEST], by_name[DATABASE], (link, b"")])
    if how == "duplicate":
        return archive_with(target, [*parts, by_name[SECRET]])
    if how == "missing":
        return archive_with(target, [by_name[MANIFEST], by_name[DATABASE]])
    if how == "oversized":
        return archive_with(target, [(member(MANIFEST), b" " * (64 * 1024 + 1)), *parts[1:]])
    if how == "corrupted":
        info, data = by_name[DATABASE]
        flipped = data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:]
        return archive_with(target, [by_name[MANIFEST], (info, flipped), by_name[SECRET]])
    if how == "not_json":
        return archive_with(target, [(member(MANIFEST), b"{nope"), *parts[1:]])
    if how == "newer":
        info, data = by_name[MANIFEST]
        newer = json.loads(data) | {"schema_revision": "9999_future"}
        return archive_with(target, [(info, json.dumps(newer).encode()), *parts[1:]])
    if how == "gzip":
        with tarfile.open(target, "w:gz") as tar:
            for info, data in parts:
                tar.addfile(info, io.BytesIO(data))
        return target
    raise AssertionError(how)


REFUSALS = {
    "traversal": "unexpected member '../escape'",
    "absolute": "unexpected member '/etc/node-secret'",
    "symlink": "'node-secret' is not a regular file",
    "duplicate": "'node-secret' appears twice",
    "missing": "lacks node-secret",
    "oversized": "'manifest.json' is larger than allowed",
    "corrupted": "does not match the manifest's checksum",
    "not_json": "manifest is not JSON",
    "newer": "newer than this release knows",
    "gzip": "not an uncompressed healthnode backup",
}


def test_restore_refuses_a_bad_archive_and_writes_nothing(
    good_archive: Path, tmp_path: Path
) -> None:
    for how, reason in REFUSALS.items():
        # Given an archive altered in one way
        bad = tampered(good_archive, tmp_path, how)
        target = tmp_path / f"restore-{how}"
        # When it is restored, then it is refused for its reason and leaves no node behind
        with pytest.raises(BackupError, match=re.escape(reason)):
            restore_backup(bad, target, target / DATABASE)
        leftovers = list(target.iterdir()) if target.exists() else []
        assert leftovers == [], (how, leftovers)
    assert not (tmp_path.parent / "escape").exists()
    # And the command says so in one line, with exit status 1
    target = tmp_path / "restore-command"
    code, _, err = run_sync("restore", tmp_path / "traversal.tar", "--data-dir", target)
    assert code == 1 and err.startswith("healthnode: ") and err.count("\n") == 1, err
    assert REFUSALS["traversal"] in err
    # And the untouched archive restores
    restore_backup(good_archive, tmp_path / "restore-good", tmp_path / "restore-good" / DATABASE)
    assert (tmp_path / "restore-good" / SECRET).read_bytes() == b"s" * 48 + b"\n"


async def test_restoring_a_backup_from_an_older_release_migrates_it_to_head(
    tmp_path: Path,
) -> None:
    # Given a backup of a node still at the first release's schema
    database = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        await upgrade_to_head(engine, "0001_initial")
    finally:
        await engine.dispose()
    archive = tmp_path / "old.tar"
    assert write_backup(database, b"s" * 48, archive, datetime.now(UTC)).revision == (
        "0001_initial"
    )
    # When the command restores it
    restored = tmp_path / "restored"
    code, out, err = await run_cli("restore", archive, "--data-dir", restored)
    # Then the restored database is at the latest schema, and says it was migrated
    assert code == 0, err
    assert f"migrated it from 0001_initial to {head_revision()}" in out
    with closing(sqlite3.connect(restored / DATABASE)) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]
