"""The schema comes from migrations, and the engine is configured as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from node.runtime import NodeContext
from node.storage.engine import create_engine
from node.storage.migrate import upgrade_to_head
from node.storage.models import Base, in_the_models
from tests.databases import BACKEND, sqlite_url


async def test_migrations_create_every_table_the_models_declare(node: NodeContext) -> None:
    async with node.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


async def test_upgrading_twice_is_harmless(node: NodeContext) -> None:
    await upgrade_to_head(node.engine)
    await upgrade_to_head(node.engine)
    async with node.engine.connect() as connection:
        version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert len(version) == 1


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite pragmas")
async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path / "x.sqlite3"))
    try:
        async with engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
            foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar()
    finally:
        await engine.dispose()
    assert journal == "wal"
    assert foreign_keys == 1


async def test_the_models_and_the_migrations_agree(node: NodeContext) -> None:
    """Every schema change has a migration: comparing head with the models finds nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def differences(sync_connection: object) -> list[object]:
        opts = {"compare_type": True, "include_object": in_the_models}
        context = MigrationContext.configure(sync_connection, opts=opts)  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    async with node.engine.connect() as connection:
        diff = await connection.run_sync(differences)
    assert diff == []
