"""The admins' page for verified professionals: verify a member, revoke a verification, and
the partner nodes whose verifications of their own members this node trusts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node import ids, professionals
from node.errors import DomainError, Invalid
from node.storage.models import Member
from web.pages import (
    STALE_FORM,
    db,
    form,
    node_of,
    now,
    render,
    rerenders_stale_forms,
    see_other,
    stale_form,
)
from web.routes_admin import _require_admin as require_admin

PAGE = ids.ADMIN_PROFESSIONALS_PAGE
VERIFY_PATH = f"{PAGE}/verify"
UNVERIFY_PATH = f"{PAGE}/unverify"
TRUST_PATH = f"{PAGE}/verifiers"
DISTRUST_PATH = f"{PAGE}/verifiers/remove"
FIELD_MAX = 2048  # what is kept of a posted field to show it again


def register(router: web.UrlDispatcher) -> None:
    router.add_get(PAGE, admin_page)
    router.add_post(VERIFY_PATH, verify)
    router.add_post(UNVERIFY_PATH, unverify)
    router.add_post(TRUST_PATH, trust)
    router.add_post(DISTRUST_PATH, distrust)


async def admin_page(
    request: web.Request,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    require_admin(request)
    session = db(request)
    context: dict[str, Any] = {
        "verified": await professionals.current_local_verifications(session, now(request)),
        "verifiers": await professionals.trusted_verifiers(session),
        "domain": node_of(request).settings.domain,
        "values": values or {},
        "errors": errors or {},
        "paths": {
            "verify": VERIFY_PATH,
            "unverify": UNVERIFY_PATH,
            "trust": TRUST_PATH,
            "distrust": DISTRUST_PATH,
        },
    }
    return render(request, "admin_professionals.html", context, status)


Change = Callable[[Member], Awaitable[object]]


async def _change(
    request: web.Request, fields: tuple[str, ...], change: Callable[[dict[str, str]], Change]
) -> web.StreamResponse:
    """One change as the signed-in admin; its problems are shown on the page, nothing kept."""
    admin = require_admin(request)
    data = await form(request)
    values = {key: data.get(key, "")[:FIELD_MAX] for key in fields}
    if stale_form(request):
        return await admin_page(request, values, {"form": STALE_FORM}, 400)
    try:
        await change(values)(admin)
    except Invalid as error:
        return await admin_page(request, values, error.problems, 400)
    except DomainError as error:
        return await admin_page(request, values, {"form": str(error)}, 400)
    raise see_other(PAGE)


@rerenders_stale_forms
async def verify(request: web.Request) -> web.StreamResponse:
    def change(values: dict[str, str]) -> Change:
        async def run(admin: Member) -> object:
            moment = now(request)
            return await professionals.verify_member(
                db(request), values["username"], title=values["title"],
                expires_at=professionals.parse_expiry(values["expires"], moment), now=moment,
                actor_label=admin.username, actor_id=admin.id,
            )  # fmt: skip

        return run

    return await _change(request, ("username", "title", "expires"), change)


def _one_field_action(
    action: Callable[..., Awaitable[object]], field: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A form with one field whose value goes to a logged domain action, as the admin acting."""

    @rerenders_stale_forms
    async def handler(request: web.Request) -> web.StreamResponse:
        def change(values: dict[str, str]) -> Change:
            async def run(admin: Member) -> object:
                return await action(
                    db(request), values[field], now=now(request),
                    actor_label=admin.username, actor_id=admin.id,
                )  # fmt: skip

            return run

        return await _change(request, (field,), change)

    return handler


unverify = _one_field_action(professionals.unverify_member, "username")
trust = _one_field_action(professionals.trust_verifier_logged, "domain")
distrust = _one_field_action(professionals.distrust_verifier_logged, "domain")
