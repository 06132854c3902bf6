"""The node's files on disk are its owner's alone: the data dir 0700, the SQLite database and
its -wal, -shm and -journal files 0600. They hold private groups' posts, so no other local
account may read them."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from node.storage.engine import is_sqlite

log = logging.getLogger(__name__)

OWNER_ONLY_UMASK = 0o077
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def restrict_new_files() -> None:
    """Files and directories this process creates from now on are its owner's only: what
    SQLite, logs or anything else write later cannot come out world-readable."""
    os.umask(OWNER_ONLY_UMASK)


def protect_data(data_dir: Path, database_url: str) -> None:
    """Create the data dir owner-only, create the SQLite file owner-only before SQLite does
    (SQLite gives its -wal and -shm files the database file's mode), and tighten what an
    earlier version left readable by others, saying so in the log."""
    data_dir.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    _tighten(data_dir, DIRECTORY_MODE)
    database = sqlite_file(database_url)
    if database is None:
        return
    database.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    for path in (database, *(Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS)):
        if path.exists():
            _tighten(path, FILE_MODE)


def sqlite_file(database_url: str) -> Path | None:
    """The file a SQLite URL names; None for PostgreSQL and in-memory databases."""
    if not is_sqlite(database_url):
        return None
    name = make_url(database_url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode & 0o777:
        path.chmod(current & mode)
        log.warning(
            "%s was readable by other local users (mode %04o); now %04o",
            path,
            current,
            current & mode,
        )
