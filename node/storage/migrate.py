"""Apply Alembic migrations on an open engine (serve, `healthnode migrate`, tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


MIGRATION_LOCK = 7_141_501  # any constant: serialises start-ups on one PostgreSQL database


class MigrationError(Exception):
    """The migrated data would break a foreign key: nothing was changed."""


async def upgrade_to_head(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to the latest migration (or to `revision`). Several processes starting
    at once on one PostgreSQL database take turns (an advisory lock held until commit); the
    later ones find nothing to do.

    On SQLite, migrations that rebuild a table (batch mode: copy, drop, rename) run with
    foreign keys off, as SQLite's documented procedure for schema changes asks: with them on,
    dropping a table that others reference fails, or cascades deletes into them. The keys are
    checked before the migration commits and turned back on afterwards."""
    if engine.dialect.name != "sqlite":
        async with engine.begin() as connection:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
            await connection.run_sync(_upgrade(revision))
        return
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        # Outside any transaction (the pragma is ignored inside one).
        await raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            async with connection.begin():
                await connection.run_sync(_upgrade(revision))
                broken = (await connection.execute(text("PRAGMA foreign_key_check"))).all()
                if broken:
                    table, _, parent, _ = broken[0]
                    raise MigrationError(
                        f"migrating would leave {len(broken)} row(s) of {table} pointing at"
                        f" missing rows of {parent}"
                    )
        finally:
            await raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _upgrade(revision: str) -> Callable[[Connection], None]:
    def upgrade(sync_connection: Connection) -> None:
        command.upgrade(alembic_config(sync_connection), revision)

    return upgrade
