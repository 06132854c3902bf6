"""Optional email (docs/POLICY.md, "Email (optional)"): a member's own address page, the
confirmation link, and password recovery by email."""

from __future__ import annotations

from aiohttp import web

from node import email_addresses, ids
from node.errors import Invalid
from node.throttles import Throttled
from web.client_address import client_address
from web.cookies import SESSION_COOKIE, delete_cookie
from web.pages import db, form, node_of, now, render, require_member, retry_after, see_other


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.ACCOUNT_EMAIL_PAGE, email_page)
    router.add_post(ids.ACCOUNT_EMAIL_PAGE, email_submit)
    router.add_get(ids.EMAIL_CONFIRM_PAGE, confirm_page)
    router.add_post(ids.EMAIL_CONFIRM_PAGE, confirm_submit)
    router.add_get(ids.ACCOUNT_RECOVER_PAGE, recover_form)
    router.add_post(ids.ACCOUNT_RECOVER_PAGE, recover_submit)
    router.add_get(ids.RECOVER_PAGE, new_password_form)
    router.add_post(ids.RECOVER_PAGE, new_password_submit)


async def _email_page(
    request: web.Request,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    sent: str | None = None,
    status: int = 200,
) -> web.Response:
    me = require_member(request)
    email_addresses.mailer_of(node_of(request).mailer)  # 404 when the node sends no email
    context = {
        "page": ids.ACCOUNT_EMAIL_PAGE,
        "email": me.email,
        "notification_email": me.notification_email,
        "pending": await email_addresses.pending_address(db(request), me, now(request)),
        "values": values or {},
        "errors": errors or {},
        "sent": sent,
    }
    return render(request, "account_email.html", context, status)


async def email_page(request: web.Request) -> web.Response:
    return await _email_page(request)


async def email_submit(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    node = node_of(request)
    data = await form(request)
    action = data.get("action", "")
    session = db(request)
    try:
        if action == "add":
            address = data.get("email", "")
            await email_addresses.request_confirmation(
                session, node.settings, node.mailer, me, address, now(request)
            )
            return await _email_page(request, sent=email_addresses.normalise_email(address))
        if action == "notifications":
            mode = data.get("notification_email", "")
            await email_addresses.choose_email_notifications(session, me, mode)
        elif action == "remove":
            await email_addresses.remove_email(session, me)
        else:
            raise Invalid({"form": "Choose what to do with the buttons on the page."})
    except Invalid as error:
        values = {"email": data.get("email", "")}
        return await _email_page(request, error.problems, values, status=400)
    raise see_other(ids.ACCOUNT_EMAIL_PAGE)


async def confirm_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    await email_addresses.confirmation_is_usable(db(request), token, now(request))
    # A button, not a change on GET: mail scanners and link previews open links too.
    context = {"action": ids.email_confirm_page(token), "confirmed": False}
    return render(request, "email_confirm.html", context)


async def confirm_submit(request: web.Request) -> web.Response:
    await email_addresses.confirm(db(request), request.match_info["token"], now(request))
    return render(request, "email_confirm.html", {"confirmed": True})


async def recover_form(request: web.Request) -> web.Response:
    context = {
        "values": {},
        "errors": {},
        "sent": False,
        "email_available": node_of(request).mailer is not None,
    }
    return render(request, "account_recover.html", context)


async def recover_submit(request: web.Request) -> web.Response:
    node = node_of(request)
    email_addresses.mailer_of(node.mailer)
    data = await form(request)
    who = data.get("who", "")
    context: dict[str, object] = {"values": {"who": who}, "email_available": True, "sent": False}
    if not who.strip():
        errors = {"who": "Give your username or your email address."}
        return render(request, "account_recover.html", context | {"errors": errors}, 400)
    try:
        await email_addresses.count_recovery(
            db(request), node.settings, client_address(request), now(request)
        )
    except Throttled as error:
        errors = {"form": str(error)}
        response = render(request, "account_recover.html", context | {"errors": errors}, 429)
        retry_after(response, error.wait)
        return response
    await db(request).commit()  # the count holds whatever happens next
    await email_addresses.request_recovery(
        db(request), node.settings, node.mailer, who, now(request)
    )
    # The same answer whether or not the account or its address exists.
    return render(request, "account_recover.html", context | {"errors": {}, "sent": True})


async def new_password_form(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    await email_addresses.recovery_is_usable(db(request), token, now(request))
    context = {"action": ids.recover_page(token), "errors": {}, "done": False}
    return render(request, "recover_password.html", context)


async def new_password_submit(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    node = node_of(request)
    data = await form(request)
    password = data.get("password", "")
    context: dict[str, object] = {"action": ids.recover_page(token), "done": False}
    if password != data.get("password_again", ""):
        await email_addresses.recovery_is_usable(db(request), token, now(request))
        errors = {"password_again": "The two passwords are not the same."}
        return render(request, "recover_password.html", context | {"errors": errors}, 400)
    try:
        await email_addresses.recover(
            db(request), node.passwords, node.settings.limits, token, password, now(request)
        )
    except Invalid as error:
        return render(request, "recover_password.html", context | {"errors": error.problems}, 400)
    response = render(request, "recover_password.html", {"done": True, "errors": {}})
    delete_cookie(request, response, SESSION_COOKIE)
    return response
