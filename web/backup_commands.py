"""`healthnode backup DEST` and `healthnode restore SRC --data-dir DIR` (SQLite nodes).

Neither opens the node: backup reads the live database through SQLite's online backup API while
the node may be serving; restore writes an empty data dir and then migrates it to head.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from keys.secret import SECRET_ENV, read_node_secret
from node.config import Settings
from node.storage.backup import BackupError, head_revision, restore_backup, write_backup
from node.storage.copy import CopyError, copy_to
from node.storage.engine import create_engine
from node.storage.files import sqlite_file
from node.storage.migrate import upgrade_to_head

PG_BACKUP_HINT = (
    "backup copies SQLite nodes only; back up PostgreSQL with pg_dump and keep the node secret"
    " (docs/OPERATIONS.md, Backups and restore)"
)

StorageOptions = Callable[[argparse.ArgumentParser], None]


def register_backup_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], storage: StorageOptions
) -> None:
    backup = commands.add_parser(
        "backup", help="write the database and the node secret to one new file (SQLite)"
    )
    backup.add_argument("dest", type=Path, metavar="DEST")
    backup.set_defaults(run=_backup)
    storage(backup)
    restore = commands.add_parser(
        "restore", help="bring a backup back into an empty data dir, migrated to this release"
    )
    restore.add_argument("source", type=Path, metavar="SRC")
    restore.set_defaults(run=_restore)
    storage(restore)
    database = commands.add_parser("db", help="move the node's data").add_subparsers(
        dest="action", required=True, parser_class=commands._parser_class
    )
    copy = database.add_parser(
        "copy", help="copy a SQLite node's data into an empty PostgreSQL database"
    )
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql+asyncpg://...")
    copy.set_defaults(run=_copy)
    storage(copy)


def _database(settings: Settings) -> Path:
    database = sqlite_file(settings.resolved_database_url)
    if database is None:
        raise BackupError(PG_BACKUP_HINT)
    return database


def _backup(args: argparse.Namespace, settings: Settings) -> str:
    database = _database(settings)
    secret = read_node_secret(settings.data_dir, settings.secret)
    manifest = write_backup(database, secret, args.dest, datetime.now(UTC))
    return f"wrote a backup of {database} (schema {manifest.revision}) to {args.dest}"


def _restore(args: argparse.Namespace, settings: Settings) -> str:
    database = _database(settings)
    manifest = restore_backup(args.source, settings.data_dir, database)
    head = head_revision()
    if manifest.revision != head:
        asyncio.run(_migrate(settings.resolved_database_url))
    migrated = manifest.revision != head
    note = f" and migrated it from {manifest.revision} to {head}" if migrated else ""
    warning = (
        f"; {SECRET_ENV} is set and overrides the restored node-secret: the actor keys open"
        " only with the backup's secret"
        if _env_secret()
        else ""
    )
    return f"restored {args.source} into {settings.data_dir}{note}{warning}"


def _copy(args: argparse.Namespace, settings: Settings) -> str:
    database = sqlite_file(settings.resolved_database_url)
    if database is None:
        raise CopyError("db copy moves a SQLite node; this node's database is not SQLite")
    report = asyncio.run(copy_to(database, args.to))
    tables = sum(1 for count in report.rows.values() if count)
    return (
        f"copied {report.total} rows of {tables} tables from {database};"
        f" start the node with {DATABASE_URL_HINT} and the same node secret"
    )


DATABASE_URL_HINT = "--database-url (or HEALTHNODE_DATABASE_URL) set to the target"


def _env_secret() -> bool:
    return bool(os.environ.get(SECRET_ENV))


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
