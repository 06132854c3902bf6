"""The engine factory: the database URL decides SQLite (WAL, foreign keys) or PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

# aiosqlite logs every statement with its parameters (post text, password hashes, client
# addresses) at DEBUG: held at INFO, a node logging at DEBUG writes none of them.
logging.getLogger("aiosqlite").setLevel(logging.INFO)
# SQLAlchemy's errors (logged with their traceback by the workers) and its statement log
# show no parameters either.
HIDE_PARAMETERS = True


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(database_url: str) -> AsyncEngine:
    """Create the engine for a URL.

    PostgreSQL URLs may carry `?search_path=NAME` to confine a node to one schema (tests run
    several nodes on one database that way).
    """
    url = make_url(database_url)
    connect_args: dict[str, Any] = {}
    if is_sqlite(url):
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=HIDE_PARAMETERS
        )
        _configure_sqlite(engine)
        return engine
    search_path = url.query.get("search_path")
    if search_path:
        url = url.difference_update_query(["search_path"])
        connect_args["server_settings"] = {"search_path": str(search_path)}
    return create_async_engine(
        url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=HIDE_PARAMETERS
    )


READS_ONLY_OPTION = "healthnode_reads_only"


async def begin_for_reading(session: AsyncSession) -> None:
    """Start the session's transaction without SQLite's write lock.

    For answers that only read (page views, documents other servers fetch): in WAL mode they
    then never wait on, or hold up, writers, including a writer that is itself waiting on
    another server's answer. PostgreSQL ignores the option.
    """
    await session.connection(execution_options={READS_ONLY_OPTION: True})


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so every transaction starts IMMEDIATE:
        # a read that later writes can then never fail with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Freed space is zeroed: a deleted or edited post's text is not left in the file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()
        # SQLite's lower() folds ASCII only; PostgreSQL's folds every letter. Make them agree.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(READS_ONLY_OPTION) and "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode or 'IMMEDIATE'}")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


ERASED = "healthnode.erased"
# SQLite's full-text index (migration 0030_search), rewritten without deleted documents.
SEARCH_INDEX_OPTIMIZE = "INSERT INTO search_index(search_index) VALUES ('optimize')"


def note_erasure(session: AsyncSession) -> None:
    """The session's transaction erases text (a deleted or edited post): once it commits,
    `checkpoint_after_erasure` moves it out of SQLite's write-ahead log."""
    session.info[ERASED] = True


async def checkpoint_after_erasure(engine: AsyncEngine, session: AsyncSession) -> None:
    """After a committed erasure on SQLite, copy the log into the database and empty it: the
    log's earlier frames still hold the erased text until then. PostgreSQL has no such step
    (its dead row versions go at VACUUM; docs/POLICY.md).

    First the search index is merged into one segment: FTS5 (before SQLite 3.42's
    secure-delete) only marks a deleted document's words as deleted, and keeps them in older
    segments until a merge; the pages the merge frees are zeroed (`secure_delete`)."""
    if not session.info.pop(ERASED, False) or engine.dialect.name != "sqlite":
        return
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        # The driver's own connection: each statement is its own transaction.
        driver = raw.driver_connection
        await driver.execute(SEARCH_INDEX_OPTIMIZE)  # type: ignore[union-attr]
        await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]


AFTER_COMMIT = "healthnode.after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's current transaction has committed (never on rollback).

    Used to wake workers only when what they are to work on is visible to them.
    """
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(AFTER_COMMIT, []):
        callback()


@event.listens_for(Session, "after_rollback")
def _forget_after_commit(session: Session) -> None:
    session.info.pop(AFTER_COMMIT, None)
    session.info.pop(ERASED, None)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
