"""Erasing one's own account, or withdrawing consent (which erases it), after confirming."""

from __future__ import annotations

from aiohttp import web

from node.erasure import ErasureRequest, erase_local_account
from web.cookies import SESSION_COOKIE, delete_cookie
from web.pages import (
    STALE_FORM,
    db,
    form,
    node_of,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    see_other,
    stale_form,
)

DELETE_PATH = "/account/delete"
WITHDRAW_PATH = "/account/consent/withdraw"


def register(router: web.UrlDispatcher) -> None:
    router.add_get(DELETE_PATH, delete_form)
    router.add_post(DELETE_PATH, delete_submit)
    router.add_get(WITHDRAW_PATH, withdraw_form)
    router.add_post(WITHDRAW_PATH, withdraw_submit)


def _page(
    request: web.Request, withdrawal: bool, errors: dict[str, str], status: int = 200
) -> web.Response:
    require_member(request)
    context = {
        "withdrawal": withdrawal,
        "action": WITHDRAW_PATH if withdrawal else DELETE_PATH,
        "errors": errors,
        "values": {},
    }
    return render(request, "account_delete.html", context, status)


async def delete_form(request: web.Request) -> web.Response:
    return _page(request, withdrawal=False, errors={})


async def withdraw_form(request: web.Request) -> web.Response:
    return _page(request, withdrawal=True, errors={})


@rerenders_stale_forms
async def delete_submit(request: web.Request) -> web.StreamResponse:
    return await _erase(request, withdrawal=False)


@rerenders_stale_forms
async def withdraw_submit(request: web.Request) -> web.StreamResponse:
    return await _erase(request, withdrawal=True)


async def _erase(request: web.Request, withdrawal: bool) -> web.StreamResponse:
    me = require_member(request)
    data = await form(request)
    errors: dict[str, str] = {}
    if stale_form(request):
        errors["form"] = STALE_FORM
    if data.get("confirm") != "yes":
        errors["confirm"] = "Tick the box to confirm that your account is to be erased."
    node = node_of(request)
    if not errors and not await node.passwords.verify(me.password_hash, data.get("password", "")):
        errors["password"] = "That is not your current password."
    if errors:
        return _page(request, withdrawal, errors, 400)
    await erase_local_account(db(request), me.id, now(request), ErasureRequest.MEMBER)
    response = see_other("/?erased=1")
    delete_cookie(request, response, SESSION_COOKIE)
    raise response
