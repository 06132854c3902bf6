"""Pages for node admins: federation health."""

from __future__ import annotations

from aiohttp import web

from federation import health
from node.policy import is_admin
from node.storage.engine import after_commit
from web.appkeys import FEDERATION
from web.pages import db, member, now, render, row_id, see_other


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/admin/federation", federation_health)
    router.add_post("/admin/federation/inbox/{item_id}/retry", retry_inbox_item)


def _require_admin(request: web.Request) -> None:
    signed_in = member(request)
    if signed_in is None or not is_admin(signed_in.role):
        raise web.HTTPNotFound()  # the page's existence is nobody else's business


async def federation_health(request: web.Request) -> web.Response:
    _require_admin(request)
    context = {
        "hosts": await health.hosts_health(db(request)),
        "failed": await health.failed_inbox_items(db(request)),
        "now": now(request),
    }
    return render(request, "admin_federation.html", context)


async def retry_inbox_item(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    item_id = row_id(request, "item_id")
    if not await health.retry_inbox_item(db(request), item_id, now(request)):
        raise web.HTTPNotFound()
    after_commit(db(request), request.app[FEDERATION].inbox_worker.wake)
    raise see_other("/admin/federation")
