"""Apply Alembic migrations on an open engine (serve, `healthnode migrate`, tests)."""

from __future__ import annotations

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


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Bring the schema to the latest migration. Several processes starting at once on one
    PostgreSQL database take turns (an advisory lock held until commit); the later ones find
    nothing to do."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        await connection.run_sync(
            lambda sync_connection: command.upgrade(alembic_config(sync_connection), "head")
        )
