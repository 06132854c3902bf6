"""The application factory: one place that wires middlewares, routes and the node."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from node.runtime import NodeContext
from web import routes_account, routes_groups, routes_threads
from web.appkeys import NODE, TEMPLATES
from web.middlewares import (
    address_hygiene,
    csrf,
    database_session,
    error_pages,
    security_headers,
)
from web.templating import create_environment

STATIC_DIR = Path(__file__).parent / "static"


def create_app(node: NodeContext) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, error_pages, address_hygiene, database_session, csrf],
        client_max_size=node.settings.limits.form_body_max,
    )
    app[NODE] = node
    app[TEMPLATES] = create_environment()
    routes_account.register(app.router)
    routes_groups.register(app.router)
    routes_threads.register(app.router)
    app.router.add_static("/static/", STATIC_DIR)
    return app
