"""Pages for node admins: federation health and the federation policy."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation import health
from node import federation_policy, ids
from node.errors import Invalid
from node.paging import page_request
from node.policy import is_admin
from node.storage.engine import after_commit
from node.storage.models import Member
from web.appkeys import FEDERATION
from web.pages import (
    STALE_FORM,
    db,
    form,
    member,
    node_of,
    now,
    render,
    rerenders_stale_forms,
    row_id,
    see_other,
    stale_form,
)

ADMIN_FEDERATION = ids.ADMIN_FEDERATION_PAGE


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ADMIN_FEDERATION, federation_health)
    router.add_post("/admin/federation/inbox/{item_id}/retry", retry_inbox_item)
    router.add_post("/admin/federation/mode", set_policy_mode)
    router.add_post("/admin/federation/domains", list_policy_domain)
    router.add_post("/admin/federation/domains/unlist", unlist_policy_domain)


def _require_admin(request: web.Request) -> Member:
    signed_in = member(request)
    if signed_in is None or not is_admin(signed_in.role):
        raise web.HTTPNotFound()  # the page's existence is nobody else's business
    return signed_in


async def federation_health(
    request: web.Request,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    _require_admin(request)
    wanted = page_request(request.query, health.FAILED_KEYS)
    session = db(request)
    node = node_of(request)
    context: dict[str, Any] = {
        "hosts": await health.hosts_health(session),
        "failed": await health.failed_inbox_items(session, wanted),
        "now": now(request),
        "policy": await federation_policy.load_policy(session, node.federation_policy.configured),
        "listed": await federation_policy.listed_domains(session),
        "configured": node.federation_policy.configured,
        "errors": errors or {},
        "values": values or {"kind": federation_policy.ListKind.BLOCK.value},
    }
    return render(request, "admin_federation.html", context, status)


async def retry_inbox_item(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    item_id = row_id(request, "item_id")
    if not await health.retry_inbox_item(db(request), item_id, now(request)):
        raise web.HTTPNotFound()
    after_commit(db(request), request.app[FEDERATION].inbox_worker.wake)
    raise see_other(ADMIN_FEDERATION)


async def _change_policy(
    request: web.Request, values: dict[str, str], change: Any
) -> web.StreamResponse:
    """Run one policy change as the signed-in admin; its problems are shown on the page."""
    admin = _require_admin(request)
    if stale_form(request):
        return await federation_health(request, {"form": STALE_FORM}, values, 400)
    node = node_of(request)
    try:
        await change(
            now=now(request),
            actor_label=admin.username,
            actor_id=admin.id,
            configured=node.federation_policy.configured,
        )
    except Invalid as error:
        return await federation_health(request, error.problems, values, 400)
    # This process reads the policy again at once; the others within seconds.
    after_commit(db(request), node.federation_policy.invalidate)
    raise see_other(ADMIN_FEDERATION)


@rerenders_stale_forms
async def set_policy_mode(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    values = {"mode": data.get("mode", ""), "mode_reason": data.get("reason", "")}
    try:
        mode = federation_policy.PolicyMode(values["mode"])
    except ValueError:
        _require_admin(request)
        return await federation_health(request, {"mode": "Choose open or allowlist."}, values, 400)
    return await _change_policy(
        request,
        values,
        lambda **who: federation_policy.set_mode(
            db(request), mode, reason=values["mode_reason"], **who
        ),
    )


@rerenders_stale_forms
async def list_policy_domain(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    values = {key: data.get(key, "")[:2048] for key in ("domain", "kind", "reason")}
    try:
        kind = federation_policy.ListKind(values["kind"])
    except ValueError:
        _require_admin(request)
        return await federation_health(
            request, {"kind": "Choose whether to allow or block it."}, values, 400
        )
    return await _change_policy(
        request,
        values,
        lambda **who: federation_policy.list_domain(
            db(request), values["domain"], kind, reason=values["reason"], **who
        ),
    )


@rerenders_stale_forms
async def unlist_policy_domain(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    domain = data.get("domain", "")[:2048]
    return await _change_policy(
        request,
        {"kind": federation_policy.ListKind.BLOCK.value},
        lambda **who: federation_policy.unlist_domain(db(request), domain, **who),
    )
