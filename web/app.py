"""The application factories: one place that wires middlewares, routes, the node and federation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta

import aiohttp
from aiohttp import web

from federation.keysink import attach_actor_keys
from federation.service import Federation
from node.clock import Clock
from node.config import Settings
from node.identity import IdentityCache
from node.runtime import NodeContext
from web import (
    assets,
    routes_account,
    routes_account_security,
    routes_activitypub,
    routes_admin,
    routes_crisis,
    routes_dashboard,
    routes_discovery,
    routes_email,
    routes_erasure,
    routes_export,
    routes_feed,
    routes_group_settings,
    routes_groups,
    routes_health,
    routes_moderation,
    routes_node,
    routes_notifications,
    routes_privacy,
    routes_professionals,
    routes_qa,
    routes_search,
    routes_threads,
)
from web.appkeys import FEDERATION, IDENTITY, METRICS, NODE, TEMPLATES
from web.metrics import Metrics
from web.middlewares import (
    address_hygiene,
    body_first,
    csrf,
    database_session,
    error_pages,
    no_store_for_sessions,
    observe,
    one_cookie_each,
    request_id_header,
    security_headers,
)
from web.security_headers import noindex_by_default, strict_transport_security
from web.templating import create_environment

# How long another process may show the node's old name after an admin changed it.
IDENTITY_FRESH_FOR = timedelta(seconds=10)


def create_app(
    node: NodeContext,
    *,
    run_workers: bool = True,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> web.Application:
    """The web app of a node its caller has opened and will close (tests build theirs so).
    Federation (its client, sink and workers) lives as long as the app; `run_workers=False`
    serves web only, for deployments with separate worker processes."""
    app = _application(node.settings)
    app[NODE] = node
    app.cleanup_ctx.append(_federation_lifetime(run_workers, trace_configs))
    return app


def create_app_owning_node(
    settings: Settings, *, clock: Clock | None = None, run_workers: bool = True
) -> web.Application:
    """The web app that owns its node (`healthnode serve`, the demo): on startup it opens the
    database, migrating it, with the node secret and the actor keys; on cleanup, once
    federation has stopped, it disposes of them."""
    app = _application(settings)

    async def node_lifetime(app: web.Application) -> AsyncIterator[None]:
        node = await NodeContext.open(settings, clock=clock)
        attach_actor_keys(node)
        app[NODE] = node
        try:
            yield
        finally:
            await node.close()

    app.cleanup_ctx.append(node_lifetime)  # entered before federation's, left after it
    app.cleanup_ctx.append(_federation_lifetime(run_workers, ()))
    return app


def _federation_lifetime(
    run_workers: bool, trace_configs: Sequence[aiohttp.TraceConfig]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def federation_lifetime(app: web.Application) -> AsyncIterator[None]:
        federation = Federation(
            app[NODE], trace_configs=trace_configs, metrics=app[METRICS].federation
        )
        app[FEDERATION] = federation
        if run_workers:
            federation.start_workers()
        yield
        await federation.close()

    return federation_lifetime


def _application(settings: Settings) -> web.Application:
    """Middlewares, templates and routes: everything but the node and federation."""
    app = web.Application(
        middlewares=[
            observe,
            security_headers,
            no_store_for_sessions,
            error_pages,
            address_hygiene,
            one_cookie_each,
            body_first,
            database_session,
            csrf,
        ],
        client_max_size=settings.limits.form_body_max,
    )
    app[TEMPLATES] = create_environment()
    app[METRICS] = Metrics()
    app[IDENTITY] = IdentityCache(settings.identity, IDENTITY_FRESH_FOR)
    app.on_response_prepare.append(request_id_header)
    app.on_response_prepare.append(strict_transport_security)
    app.on_response_prepare.append(noindex_by_default)
    # Discovery and ActivityPub first: some of their paths sit under the pages' prefixes.
    routes_discovery.register(app.router)
    routes_activitypub.register(app.router)
    routes_account.register(app.router)
    routes_account_security.register(app.router)
    routes_email.register(app.router)
    routes_groups.register(app.router)
    routes_group_settings.register(app.router)
    routes_threads.register(app.router)
    routes_feed.register(app.router)
    routes_qa.register(app.router)
    routes_admin.register(app.router)
    routes_dashboard.register(app.router)
    routes_node.register(app.router)
    routes_professionals.register(app.router)
    routes_crisis.register(app.router)
    routes_moderation.register(app.router)
    routes_notifications.register(app.router)
    routes_privacy.register(app.router)
    routes_export.register(app.router)
    routes_erasure.register(app.router)
    routes_health.register(app.router)
    assets.register(app.router)
    routes_search.register(app.router)
    return app
