"""Data at rest: owner-only files, and erased text gone from SQLite's files."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from node.config import Settings
from node.posts import (
    Draft,
    delete_post,
    edit_post,
    first_post,
    reply,
)
from node.runtime import NodeContext
from node.storage.files import sqlite_file
from tests.browser import Browser
from tests.clock import ManualClock
from tests.conftest import CHEAP_PASSWORDS
from tests.databases import BACKEND
from tests.test_domain_services import (
    add_group,
    add_member,
    new_thread,
    who,
)

sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="about SQLite's own files")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(database: Path) -> list[Path]:
    candidates = [database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm"))]
    return [path for path in candidates if path.exists()]


async def open_on_data_dir(data_dir: Path) -> NodeContext:
    """A node whose SQLite database lives in `data_dir`, as `healthnode serve` makes it."""
    settings = Settings(data_dir=data_dir, password_cost=CHEAP_PASSWORDS)
    return await NodeContext.open(settings, clock=ManualClock())


# --- files on disk -----------------------------------------------------------------------


async def test_a_fresh_data_dir_and_its_database_are_the_owners_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    node = await open_on_data_dir(data_dir)
    try:
        await add_member(node, "alice")  # writes: the -wal and -shm files exist now
        database = sqlite_file(node.settings.resolved_database_url)
        assert database is not None
        files = database_files(database)
        assert {path.name[len(database.name) :] for path in files} >= {"", "-wal", "-shm"}
        assert mode_of(data_dir) == 0o700
        assert {path.name: mode_of(path) for path in files} == {path.name: 0o600 for path in files}
    finally:
        await node.close()


async def test_readable_files_of_an_earlier_start_are_tightened_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "old"
    node = await open_on_data_dir(data_dir)
    await add_member(node, "alice")
    database = sqlite_file(node.settings.resolved_database_url)
    assert database is not None
    # Given what an earlier version left: the dir 0755, the files 0644 (-wal and -shm kept
    # by copying them aside before the engine closes and removes them).
    kept = {path: path.read_bytes() for path in database_files(database)}
    await node.close()
    for path, content in kept.items():
        path.write_bytes(content)
        path.chmod(0o644)
    data_dir.chmod(0o755)

    with caplog.at_level(logging.WARNING, logger="node.storage.files"):
        node = await open_on_data_dir(data_dir)
    try:
        assert mode_of(data_dir) == 0o700
        for path in kept:
            assert mode_of(path) == 0o600, path
        said = caplog.text
        assert str(data_dir) in said and "0755" in said
        assert f"{database}-wal" in said
    finally:
        await node.close()


# --- erased text ---------------------------------------------------------------------------


def bytes_on_disk(node: NodeContext) -> bytes:
    database = sqlite_file(node.settings.resolved_database_url)
    assert database is not None
    return b"".join(path.read_bytes() for path in database_files(database))


@sqlite_only
async def test_deleted_and_edited_text_is_gone_from_the_database_and_its_log(
    node: NodeContext, browser: Browser
) -> None:
    alice = await add_member(node, "alice")
    await add_group(node, alice, "diabetes", private=True)
    opening_words = "OPENINGSECRET " * 40  # long enough to span cells
    thread = await new_thread(node, "diabetes", alice, "Quiet thread", opening_words)
    async with node.transaction() as session:
        opening = await first_post(session, thread.id)
        answer = await reply(
            session, node.settings.limits, who(alice), thread_id=thread.id, parent_id=None,
            draft=Draft("REPLYSECRET " * 40), now=node.clock.now(),
        )  # fmt: skip
        edited = await reply(
            session, node.settings.limits, who(alice), thread_id=thread.id, parent_id=None,
            draft=Draft("EDITEDAWAY " * 40), now=node.clock.now(),
        )  # fmt: skip
    assert b"REPLYSECRET" in bytes_on_disk(node) and b"EDITEDAWAY" in bytes_on_disk(node)

    # When: a reply is deleted and another edited through the domain (a worker's path)...
    async with node.transaction() as session:
        await delete_post(session, who(alice), post_id=answer.id, now=node.clock.now())
    async with node.transaction() as session:
        await edit_post(
            session, node.settings.limits, who(alice), post_id=edited.id,
            draft=Draft("nothing to see"), now=node.clock.now(),
        )  # fmt: skip
    # ... and the opening post through the web (a request's path).
    await browser.login("alice")
    await browser.get(f"/p/{opening.id}/delete")
    page = await browser.post(f"/p/{opening.id}/delete")
    assert page.status == 200, page.text

    on_disk = bytes_on_disk(node)
    for words in (b"REPLYSECRET", b"EDITEDAWAY", b"OPENINGSECRET", b"Quiet thread"):
        assert words not in on_disk, words
