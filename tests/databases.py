"""Real databases for tests: a migrated SQLite file per node, or a PostgreSQL schema per node.

The backend comes from HEALTHNODE_TEST_DATABASE (sqlite or postgresql); PostgreSQL's URL from
HEALTHNODE_TEST_PG_URL. Migrations run once per schema or template; later tests reuse a schema
after truncating its tables, or copy the migrated SQLite template.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from sqlalchemy import text

from node.storage.engine import create_engine
from node.storage.migrate import upgrade_to_head
from node.storage.models import Base

BACKEND = os.environ.get("HEALTHNODE_TEST_DATABASE", "sqlite")
PG_URL = os.environ.get("HEALTHNODE_TEST_PG_URL", "")
SCHEMA_PREFIX = f"hn{os.getpid()}_"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}search_path={schema}"


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


class TestDatabases:
    """Hands out one clean, migrated database per (test, node name)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._sqlite_template: Path | None = None
        self._pg_schemas: set[str] = set()

    async def fresh(self, name: str, directory: Path) -> str:
        if BACKEND == "postgresql":
            return await self._fresh_pg_schema(name)
        return await self._fresh_sqlite(directory / f"{name}.sqlite3")

    async def _fresh_sqlite(self, path: Path) -> str:
        if self._sqlite_template is None:
            template = self.scratch / "template.sqlite3"
            await _migrate(sqlite_url(template))
            self._sqlite_template = template
        await asyncio.to_thread(shutil.copyfile, self._sqlite_template, path)
        return sqlite_url(path)

    async def _fresh_pg_schema(self, name: str) -> str:
        schema = SCHEMA_PREFIX + name
        url = with_search_path(PG_URL, schema)
        admin = create_engine(PG_URL)
        try:
            async with admin.begin() as connection:
                if schema in self._pg_schemas:
                    tables = ", ".join(
                        f'"{schema}"."{table.name}"' for table in Base.metadata.sorted_tables
                    )
                    await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                    return url
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        finally:
            await admin.dispose()
        await _migrate(url)
        self._pg_schemas.add(schema)
        return url


async def check_postgresql() -> None:
    engine = create_engine(PG_URL)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def drop_test_schemas() -> None:
    engine = create_engine(PG_URL)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :prefix"),
                {"prefix": SCHEMA_PREFIX + "%"},
            )
            schemas = [schema for (schema,) in rows.all()]
        # One transaction per schema: dropping every schema's tables, indexes and sequences in
        # one transaction overran PostgreSQL's shared lock table ("out of shared memory").
        for schema in schemas:
            async with engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        await engine.dispose()
