"""A member's password and sessions, recovery without email, and the admins' reset links."""

from __future__ import annotations

from aiohttp import web

from node import accounts, auth, ids, members
from node.errors import NotFound
from node.throttles import Throttled
from web.appkeys import NODE, SESSION_TOKEN
from web.client_address import client_address
from web.cookies import SESSION_COOKIE, delete_cookie
from web.pages import (
    STALE_FORM,
    db,
    form,
    member,
    node_of,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    retry_after,
    see_other,
    stale_form,
)
from web.routes_admin import _require_admin as require_admin


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.ACCOUNT_PASSWORD_PAGE, password_form)
    router.add_post(ids.ACCOUNT_PASSWORD_PAGE, password_submit)
    router.add_get(ids.ACCOUNT_SESSIONS_PAGE, sessions_page)
    router.add_post(ids.ACCOUNT_SESSION_END_PAGE, end_one_session)
    router.add_post(ids.ACCOUNT_SESSIONS_END_ALL_PAGE, end_all_sessions)
    router.add_get(ids.RECOVERY_PAGE, recovery_page)
    router.add_get(ids.PASSWORD_RESET_PAGE, reset_form)
    router.add_post(ids.PASSWORD_RESET_PAGE, reset_submit)
    router.add_get(ids.ADMIN_RESET_LINK_PAGE, admin_reset_link_form)
    router.add_post(ids.ADMIN_RESET_LINK_PAGE, admin_reset_link_make)


def device_of(request: web.Request) -> str:
    """The coarse label a new session is listed by; the User-Agent itself is not kept."""
    return accounts.device_label(request.headers.get("User-Agent", ""))


def _new_password_problems(request: web.Request, new: str, again: str) -> dict[str, str]:
    problem = members.password_problem(new, node_of(request).settings.limits)
    if problem:
        return {"new_password": problem}
    if new != again:
        return {"new_password_again": "The two new passwords are not the same."}
    return {}


# ---------------------------------------------------------------- changing the password


async def password_form(request: web.Request) -> web.Response:
    require_member(request)
    return render(request, "account_password.html", {"errors": {}})


@rerenders_stale_forms
async def password_submit(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    data = await form(request)
    new = data.get("new_password", "")
    errors = {"form": STALE_FORM} if stale_form(request) else {}
    errors = errors or _new_password_problems(request, new, data.get("new_password_again", ""))
    if errors:  # before counting: a form with mistakes costs no attempt
        return render(request, "account_password.html", {"errors": errors}, 400)
    node = node_of(request)
    try:
        # The same throttle as signing in, under the same keys: this form is no way around it.
        attempt = await auth.begin_sign_in(
            db(request),
            node.settings,
            username=me.username,
            address=client_address(request),
            now=now(request),
        )
    except Throttled as error:
        response = render(request, "account_password.html", {"errors": {"form": str(error)}}, 429)
        retry_after(response, error.wait)
        return response
    await db(request).commit()  # the count holds, in every process, before the slow checks
    try:
        ended = await accounts.change_password(
            db(request),
            node.passwords,
            attempt,
            me,
            current=data.get("current_password", ""),
            new=new,
            keep_token=request[SESSION_TOKEN],
        )
    except accounts.WrongPassword as error:
        context = {"errors": {"current_password": str(error)}}
        return render(request, "account_password.html", context, 400)
    return render(request, "account_password_changed.html", {"ended": ended})


# ---------------------------------------------------------------- sessions


async def sessions_page(request: web.Request) -> web.Response:
    me = require_member(request)
    listed = await accounts.active_sessions(
        db(request), me.id, request.get(SESSION_TOKEN), now(request)
    )
    return render(request, "account_sessions.html", {"sessions": listed, "now": now(request)})


async def end_one_session(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    data = await form(request)
    key = data.get("session", "")
    if not await accounts.end_session(db(request), me.id, key):
        raise NotFound("That session has ended already.")
    raise see_other(ids.ACCOUNT_SESSIONS_PAGE)


async def end_all_sessions(request: web.Request) -> web.StreamResponse:
    """Everywhere includes here: the member signs in again on the devices they keep."""
    me = require_member(request)
    await accounts.end_sessions(db(request), me.id)
    response = see_other("/login")
    delete_cookie(request, response, SESSION_COOKIE)
    raise response


# ---------------------------------------------------------------- recovery


async def recovery_page(request: web.Request) -> web.Response:
    email_available = request.app[NODE].mailer is not None
    return render(request, "recover.html", {"email_available": email_available})


def _no_store(response: web.Response) -> web.Response:
    # The token is in the address: no cache keeps the page.
    response.headers["Cache-Control"] = "no-store"
    return response


def _unusable(request: web.Request) -> web.Response:
    context = {"title": "This link cannot be used", "message": accounts.UNUSABLE_RESET_LINK}
    return _no_store(render(request, "error.html", context, 400))


async def reset_form(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    try:
        await accounts.check_reset_token(db(request), token, now(request))
    except accounts.UnusableResetLink:
        return _unusable(request)
    context = {"errors": {}, "action": ids.password_reset_path(token)}
    return _no_store(render(request, "reset_password.html", context))


@rerenders_stale_forms
async def reset_submit(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    data = await form(request)
    new = data.get("new_password", "")
    errors = {"form": STALE_FORM} if stale_form(request) else {}
    errors = errors or _new_password_problems(request, new, data.get("new_password_again", ""))
    try:
        await accounts.check_reset_token(db(request), token, now(request))
    except accounts.UnusableResetLink:
        return _unusable(request)
    if errors:
        context = {"errors": errors, "action": ids.password_reset_path(token)}
        return _no_store(render(request, "reset_password.html", context, 400))
    await db(request).commit()  # no transaction is open while the password is hashed
    password_hash = await node_of(request).passwords.hash(new)
    try:
        person = await accounts.use_reset_token(db(request), token, password_hash, now(request))
    except accounts.UnusableResetLink:
        return _unusable(request)
    response = _no_store(render(request, "reset_password_done.html"))
    signed_in = member(request)
    if signed_in is not None and signed_in.id == person.id:  # this session ended with the rest
        delete_cookie(request, response, SESSION_COOKIE)
    return response


# ---------------------------------------------------------------- admins


async def admin_reset_link_form(request: web.Request) -> web.Response:
    require_admin(request)
    person = await members.find_member(db(request), request.match_info["username"])
    if person is None:
        raise NotFound("There is no member by that name on this node.")
    return render(request, "admin_reset_link.html", {"person": person, "link": None})


async def admin_reset_link_make(request: web.Request) -> web.Response:
    admin = require_admin(request)
    token = await accounts.make_reset_token(
        db(request),
        request.match_info["username"],
        now(request),
        actor_label=admin.username,
        actor_id=admin.id,
    )
    person = await members.get_member(db(request), request.match_info["username"])
    link = node_of(request).settings.base_url + ids.password_reset_path(token)
    # Shown this once: only its hash is kept. A POST's answer is not cached (no-store).
    context = {"person": person, "link": link}
    return _no_store(render(request, "admin_reset_link.html", context))
