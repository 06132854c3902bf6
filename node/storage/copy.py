"""Moving a SQLite node to PostgreSQL: copy every table into an empty database.

The source is a consistent snapshot of the live SQLite file (SQLite's online backup API),
migrated to head; the target is migrated to head and must hold no rows. Tables are copied in
dependency order, in batches, in ONE target transaction (a failure leaves the target as empty
as it was); columns that point into their own table (a reply's parent) are filled in
afterwards; PostgreSQL's sequences then continue after the highest copied id.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Column, Integer, Table, bindparam, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from node.storage.backup import BackupError, snapshot
from node.storage.engine import create_engine, is_sqlite
from node.storage.migrate import upgrade_to_head
from node.storage.models import Base

BATCH_ROWS = 500
# Rows the migrations themselves write, as they write them: a target holding only these is empty.
SEEDED = {"federation_policy": "version = 0 AND updated_at IS NULL"}


class CopyError(Exception):
    """A one-line reason the copy was refused; the target was left as it was."""


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


async def copy_to(source_file: Path, target_url: str) -> CopyReport:
    if is_sqlite(target_url):
        raise CopyError("the target must be a PostgreSQL database (postgresql+asyncpg://...)")
    with tempfile.TemporaryDirectory(prefix=".healthnode-copy-", dir=source_file.parent) as tmp:
        copy = Path(tmp) / "snapshot.sqlite3"
        try:
            snapshot(source_file, copy)
        except BackupError as error:
            raise CopyError(str(error)) from None
        source = create_engine(f"sqlite+aiosqlite:///{copy}")
        target = create_engine(target_url)
        try:
            await upgrade_to_head(source)
            try:
                await upgrade_to_head(target)
            except (OSError, SQLAlchemyError) as error:
                reason = getattr(error, "orig", None) or error
                raise CopyError(f"cannot migrate the target database: {reason}") from None
            return await _copy_tables(source, target)
        finally:
            await source.dispose()
            await target.dispose()


async def _copy_tables(source: AsyncEngine, target: AsyncEngine) -> CopyReport:
    report = CopyReport()
    tables = Base.metadata.sorted_tables
    async with source.connect() as reader, target.begin() as writer:
        for table in tables:
            rows = select(func.count()).select_from(table)
            if table.name in SEEDED:
                rows = rows.where(text(f"NOT ({SEEDED[table.name]})"))
            if (await writer.execute(rows)).scalar_one():
                raise CopyError(f"the target database is not empty ({table.name} has rows)")
        for name in SEEDED:  # the source's own rows take their place
            await writer.execute(Base.metadata.tables[name].delete())
        for table in tables:
            report.rows[table.name] = await _copy_table(reader, writer, table)
        for table in tables:
            await _reset_sequence(writer, table)
    return report


def _self_references(table: Table) -> list[Column[object]]:
    return [key.parent for key in table.foreign_keys if key.column.table is table]


async def _copy_table(reader: AsyncConnection, writer: AsyncConnection, table: Table) -> int:
    later = _self_references(table)
    order = list(table.primary_key.columns)
    copied = 0
    pointers: list[dict[str, object]] = []  # filled in once every row of the table is there
    result = await reader.stream(select(table).order_by(*order))
    async for batch in result.partitions(BATCH_ROWS):
        rows = [dict(row._mapping) for row in batch]
        await writer.execute(
            table.insert(), [row | {column.name: None for column in later} for row in rows]
        )
        pointers += [
            {f"key_{column.name}": row[column.name] for column in order}
            | {f"new_{column.name}": row[column.name] for column in later}
            for row in rows
            if any(row[column.name] is not None for column in later)
        ]
        copied += len(rows)
    if pointers:
        fill = (
            update(table)
            .where(*(column == bindparam(f"key_{column.name}") for column in order))
            .values({column.name: bindparam(f"new_{column.name}") for column in later})
        )
        for start in range(0, len(pointers), BATCH_ROWS):
            await writer.execute(fill, pointers[start : start + BATCH_ROWS])
    return copied


async def _reset_sequence(writer: AsyncConnection, table: Table) -> None:
    keys = list(table.primary_key.columns)
    if len(keys) != 1 or not isinstance(keys[0].type, Integer):
        return
    sequence = (
        await writer.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.name, "column": keys[0].name},
        )
    ).scalar_one()
    if sequence is None:
        return
    column = keys[0].name
    await writer.execute(
        text(
            f'SELECT setval(:sequence, COALESCE(MAX("{column}"), 1), MAX("{column}") IS NOT NULL)'
            f' FROM "{table.name}"'
        ),
        {"sequence": sequence},
    )
