"""Backups of a SQLite node as one file, and restoring one into an empty data dir.

The archive is an uncompressed tar with exactly three regular members and no directories:

- `manifest.json`: format, version, the schema revision, when it was made, the database's size
  and SHA-256;
- `healthnode.sqlite3`: a consistent copy made with SQLite's online backup API (one step, so one
  read transaction: safe while the node serves and writes, WAL frames included), in rollback
  journal mode so that it is a single file;
- `node-secret`: the node secret, without which the actor keys sealed in the database cannot be
  opened.

PostgreSQL nodes are backed up with pg_dump plus the secret (docs/OPERATIONS.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from alembic.script import ScriptDirectory

from node.storage.files import DIRECTORY_MODE, FILE_MODE, SQLITE_COMPANIONS
from node.storage.migrate import MIGRATIONS_DIR

FORMAT = "healthnode-backup"
VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "healthnode.sqlite3"
SECRET = "node-secret"
MEMBERS = (MANIFEST, DATABASE, SECRET)
MAX_MANIFEST_BYTES = 64 * 1024
MAX_SECRET_BYTES = 4 * 1024
MAX_DATABASE_BYTES = 256 * 1024**3
MAX_SIZES = {MANIFEST: MAX_MANIFEST_BYTES, DATABASE: MAX_DATABASE_BYTES, SECRET: MAX_SECRET_BYTES}
COPY_CHUNK = 1024 * 1024


class BackupError(Exception):
    """A one-line reason a backup or restore was refused; nothing was left half-written."""


@dataclass(frozen=True)
class Manifest:
    revision: str
    created_at: str
    database_bytes: int
    database_sha256: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "database": "sqlite",
                "schema_revision": self.revision,
                "created_at": self.created_at,
                "database_bytes": self.database_bytes,
                "database_sha256": self.database_sha256,
            },
            indent=2,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackupError("the archive's manifest is not JSON") from None
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            raise BackupError("the file is not a healthnode backup")
        if value.get("version") != VERSION:
            raise BackupError(
                f"backup format version {value.get('version')!r} is not one this release reads"
                f" ({VERSION})"
            )
        revision = value.get("schema_revision")
        size = value.get("database_bytes")
        digest = value.get("database_sha256")
        created = value.get("created_at")
        if not (
            isinstance(revision, str)
            and isinstance(size, int)
            and isinstance(digest, str)
            and isinstance(created, str)
        ):
            raise BackupError("the archive's manifest is incomplete")
        return cls(revision, created, size, digest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _revision(connection: sqlite3.Connection) -> str:
    try:
        rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.DatabaseError:
        raise BackupError("the database has no schema revision (never migrated)") from None
    if len(rows) != 1:
        raise BackupError("the database has no single schema revision")
    return str(rows[0][0])


def _integrity(connection: sqlite3.Connection) -> None:
    try:
        result = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as error:
        raise BackupError(f"the database is damaged: {error}") from None
    if result != [("ok",)]:
        raise BackupError(f"the database fails its integrity check: {result[0][0]}")


def snapshot(source: Path, target: Path) -> str:
    """Copy a live database to `target` in one read transaction; gives its schema revision."""
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    try:
        # Read-write only so that SQLite may use the live WAL index; nothing is written.
        live = sqlite3.connect(source, timeout=30)
    except sqlite3.Error as error:
        raise BackupError(f"cannot open {source}: {error}") from None
    with closing(live), closing(sqlite3.connect(target)) as copy:
        live.execute("PRAGMA busy_timeout=30000")
        try:
            live.backup(copy)  # pages=-1: all pages in one step, one consistent snapshot
        except sqlite3.Error as error:
            raise BackupError(f"cannot copy {source}: {error}") from None
        copy.execute("PRAGMA journal_mode=DELETE")
        _integrity(copy)
        return _revision(copy)


def _add(archive: tarfile.TarFile, name: str, handle: IO[bytes], size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = FILE_MODE
    info.mtime = mtime
    archive.addfile(info, handle)


def write_backup(database: Path, secret: bytes, dest: Path, now: datetime) -> Manifest:
    """Write the backup to `dest` (mode 0600), never over an existing file: it is built under
    a temporary name beside `dest` and linked into place only when complete."""
    if dest.exists() or dest.is_symlink():
        raise BackupError(f"{dest} already exists; choose a new name")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a directory")
    with tempfile.TemporaryDirectory(prefix=".healthnode-backup-", dir=dest.parent) as scratch:
        copy = Path(scratch) / DATABASE
        revision = snapshot(database, copy)
        manifest = Manifest(
            revision=revision,
            created_at=now.isoformat(),
            database_bytes=copy.stat().st_size,
            database_sha256=_sha256(copy),
        )
        partial = Path(scratch) / "archive.tar"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        mtime = int(now.timestamp())
        with os.fdopen(descriptor, "wb") as sink, tarfile.open(fileobj=sink, mode="w:") as tar:
            body = manifest.to_json()
            _add(tar, MANIFEST, io.BytesIO(body), len(body), mtime)
            with copy.open("rb") as handle:
                _add(tar, DATABASE, handle, manifest.database_bytes, mtime)
            _add(tar, SECRET, io.BytesIO(secret + b"\n"), len(secret) + 1, mtime)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(partial, dest)  # fails if dest appeared meanwhile: never overwritten
        except FileExistsError:
            raise BackupError(f"{dest} already exists; choose a new name") from None
    return manifest


def known_revision(revision: str) -> bool:
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return any(item.revision == revision for item in script.walk_revisions())


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


def occupied(database: Path, data_dir: Path) -> Path | None:
    """The first file that a restore into `data_dir` would overwrite, if any."""
    candidates = [database, *(Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS)]
    candidates.append(data_dir / SECRET)
    return next((path for path in candidates if path.exists() or path.is_symlink()), None)


@contextmanager
def _open_archive(source: Path) -> Iterator[tarfile.TarFile]:
    try:
        archive = tarfile.open(source, mode="r:")
    except FileNotFoundError:
        raise BackupError(f"there is no file {source}") from None
    except (tarfile.TarError, OSError):
        raise BackupError(f"{source} is not an uncompressed healthnode backup") from None
    with archive:
        yield archive


def _checked_members(archive: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Exactly the expected names, regular files, no paths, each within its size bound."""
    found: dict[str, tarfile.TarInfo] = {}
    try:
        for info in archive:
            if info.name not in MEMBERS:
                raise BackupError(f"unexpected member {info.name!r} in the archive")
            if info.name in found:
                raise BackupError(f"member {info.name!r} appears twice in the archive")
            if not info.isreg():
                raise BackupError(f"member {info.name!r} is not a regular file")
            if info.size > MAX_SIZES[info.name]:
                raise BackupError(f"member {info.name!r} is larger than allowed")
            found[info.name] = info
    except tarfile.TarError:
        raise BackupError("the archive is damaged") from None
    missing = [name for name in MEMBERS if name not in found]
    if missing:
        raise BackupError(f"the archive lacks {', '.join(missing)}")
    return found


def _read_member(archive: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(info)
    assert handle is not None
    with handle:
        data = handle.read(info.size + 1)
    if len(data) != info.size:
        raise BackupError(f"member {info.name!r} is truncated")
    return data


def _extract(archive: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> str:
    """Stream a member to a new owner-only file; gives its SHA-256."""
    handle = archive.extractfile(info)
    assert handle is not None
    digest = hashlib.sha256()
    written = 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with handle, os.fdopen(descriptor, "wb") as sink:
        while written < info.size and (chunk := handle.read(min(COPY_CHUNK, info.size - written))):
            sink.write(chunk)
            digest.update(chunk)
            written += len(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    if written != info.size:
        raise BackupError(f"member {info.name!r} is truncated")
    return digest.hexdigest()


def restore_backup(source: Path, data_dir: Path, database: Path) -> Manifest:
    """Check the archive and write its database to `database` and its secret into `data_dir`
    (owner-only files in an owner-only dir). Refuses if either already holds a node. The
    caller migrates the database to head afterwards if the backup is older."""
    clash = occupied(database, data_dir)
    if clash is not None:
        raise BackupError(f"{clash} already exists: restore only into an empty data dir")
    with _open_archive(source) as archive:
        members = _checked_members(archive)
        manifest = Manifest.from_json(_read_member(archive, members[MANIFEST]))
        if members[DATABASE].size != manifest.database_bytes:
            raise BackupError("the database's size differs from the manifest's")
        if not known_revision(manifest.revision):
            raise BackupError(
                f"the backup's schema {manifest.revision} is newer than this release knows:"
                " restore it with the release that made it, or a later one"
            )
        secret = _read_member(archive, members[SECRET]).strip()
        if len(secret) < 32 or b"\n" in secret:
            raise BackupError("the archive's node secret is malformed")
        for directory in (data_dir, database.parent):
            directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        data_dir.chmod(DIRECTORY_MODE)
        scratch = Path(tempfile.mkdtemp(prefix=".healthnode-restore-", dir=database.parent))
        try:
            copy = scratch / DATABASE
            if _extract(archive, members[DATABASE], copy) != manifest.database_sha256:
                raise BackupError("the database does not match the manifest's checksum")
            with closing(sqlite3.connect(copy)) as connection:
                _integrity(connection)
                if _revision(connection) != manifest.revision:
                    raise BackupError("the database's schema differs from the manifest's")
            clash = occupied(database, data_dir)
            if clash is not None:
                raise BackupError(f"{clash} already exists: restore only into an empty data dir")
            secret_copy = scratch / SECRET
            descriptor = os.open(secret_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(descriptor, "wb") as sink:
                sink.write(secret + b"\n")
            os.link(copy, database)
            try:
                os.link(secret_copy, data_dir / SECRET)
            except OSError:
                database.unlink()
                raise
        except sqlite3.DatabaseError as error:
            raise BackupError(f"the archive's database is damaged: {error}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return manifest
