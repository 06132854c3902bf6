"""Apply Alembic migrations on an open engine (serve, `healthnode migrate`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
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


async def autogenerate_revision(message: str, scratch_database_url: str) -> None:
    """Write a new migration from the difference between the models and `head` (developers)."""
    from node.storage.engine import create_engine

    engine = create_engine(scratch_database_url)
    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync_connection: command.revision(
                    alembic_config(sync_connection), message=message, autogenerate=True
                )
            )
    finally:
        await engine.dispose()
