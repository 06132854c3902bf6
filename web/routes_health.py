"""Liveness and readiness for load balancers and process supervisors (docs/OPERATIONS.md).

Both are cheap, unauthenticated and say nothing but "ok" or "not ready": the reason a node is
not ready goes to its log, never to whoever asks.
"""

from __future__ import annotations

import logging
from functools import cache

from aiohttp import web
from alembic.script import ScriptDirectory
from sqlalchemy import text

from node.storage.migrate import alembic_config
from web.appkeys import FEDERATION, NODE

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
PATHS = frozenset({HEALTHZ_PATH, READYZ_PATH})
READINESS_TIMEOUT_SECONDS = 2.0

log = logging.getLogger(__name__)


def _plain(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body + "\n", headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return _plain(200, "ok")


@cache
def migration_head() -> str | None:
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()  # type: ignore[arg-type]


async def _why_not_ready(request: web.Request) -> str | None:
    node = request.app[NODE]
    try:
        async with node.engine.connect() as connection:
            current = (
                await connection.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except Exception as exc:  # any failure to reach the database means not ready
        return f"database unreachable ({type(exc).__name__})"
    if current != migration_head():
        return f"schema at {current}, migrations at {migration_head()}"
    federation = request.app[FEDERATION]
    if federation.workers_running and not federation.workers_alive():
        return "a worker stopped"
    return None


async def readyz(request: web.Request) -> web.Response:
    """The database answers, its schema is at the latest migration, and this process's
    workers (when it runs them) are running."""
    reason = await _why_not_ready(request)
    if reason is not None:
        log.warning("readyz: not ready: %s", reason)
        return _plain(503, "not ready")
    return _plain(200, "ok")


def register(router: web.UrlDispatcher) -> None:
    router.add_get(HEALTHZ_PATH, healthz)
    router.add_get(READYZ_PATH, readyz)
