"""The application factory: one place that wires middlewares, routes, the node and federation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from federation.service import Federation
from node.runtime import NodeContext
from web import (
    routes_account,
    routes_activitypub,
    routes_admin,
    routes_discovery,
    routes_groups,
    routes_threads,
)
from web.appkeys import FEDERATION, NODE, TEMPLATES
from web.middlewares import (
    address_hygiene,
    body_first,
    csrf,
    database_session,
    error_pages,
    security_headers,
)
from web.templating import create_environment

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    node: NodeContext,
    *,
    run_workers: bool = True,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> web.Application:
    """The node's web app. Federation (its client and sink) lives as long as the app;
    `run_workers=False` serves web only, for deployments with separate worker processes."""
    app = web.Application(
        middlewares=[
            security_headers,
            error_pages,
            address_hygiene,
            body_first,
            database_session,
            csrf,
        ],
        client_max_size=node.settings.limits.form_body_max,
    )
    app[NODE] = node
    app[TEMPLATES] = create_environment()

    async def federation_lifetime(app: web.Application) -> AsyncIterator[None]:
        federation = Federation(node, trace_configs=trace_configs)
        app[FEDERATION] = federation
        if run_workers:
            federation.start_workers()
        yield
        await federation.close()

    app.cleanup_ctx.append(federation_lifetime)
    # Discovery and ActivityPub first: some of their paths sit under the pages' prefixes.
    routes_discovery.register(app.router)
    routes_activitypub.register(app.router)
    routes_account.register(app.router)
    routes_groups.register(app.router)
    routes_threads.register(app.router)
    routes_admin.register(app.router)
    app.router.add_static("/static/", STATIC_DIR)
    return app
