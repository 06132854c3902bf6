"""Registration, signing in and out, and member profiles."""

from __future__ import annotations

from aiohttp import web

from node import auth, ids, members, privacy
from node.config import RegistrationMode
from node.errors import Conflict, Invalid, NotFound
from node.throttles import Throttled
from web.appkeys import IDENTITY, SESSION_TOKEN
from web.client_address import client_address
from web.cookies import SESSION_COOKIE, delete_cookie, set_cookie
from web.pages import (
    STALE_FORM,
    badges_of,
    crisis_notices,
    db,
    form,
    node_of,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    retry_after,
    safe_next,
    see_other,
    stale_form,
)
from web.routes_account_security import device_of
from web.routes_activitypub import erased_member_document, member_document, wants_activity_json


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/register", register_form)
    router.add_post("/register", register_submit)
    router.add_get("/login", login_form)
    router.add_post("/login", login_submit)
    router.add_post("/logout", logout)
    router.add_get(ids.MEMBER_PATH, profile)
    router.add_get("/settings/profile", profile_form)
    router.add_post("/settings/profile", profile_submit)


def _start_session(request: web.Request, response: web.StreamResponse, token: str) -> None:
    max_age = node_of(request).settings.session_days * 86400
    set_cookie(request, response, SESSION_COOKIE, token, max_age=max_age)


def _throttled(
    request: web.Request, template: str, context: dict[str, object], error: Throttled
) -> web.Response:
    """The form again, saying how long to wait (429, with Retry-After)."""
    response = render(request, template, context | {"errors": {"form": str(error)}}, 429)
    retry_after(response, error.wait)
    return response


REGISTRATION_CLOSED = (
    "This node is not taking new members at the moment. The about page says who runs it and "
    "how to reach them."
)


def _registration(request: web.Request) -> RegistrationMode:
    return request.app[IDENTITY].current.registration


def _register_context(
    values: dict[str, str], errors: dict[str, str], notices: object
) -> dict[str, object]:
    return {"values": values, "errors": errors, "notices": notices, "next": values["next"]}


async def register_form(request: web.Request) -> web.Response:
    if _registration(request) is RegistrationMode.CLOSED:
        return render(request, "register_closed.html", {"message": REGISTRATION_CLOSED})
    notices = await crisis_notices(request)
    values = {"next": safe_next(request.query.get("next"), "")}
    return render(request, "register.html", _register_context(values, {}, notices))


@rerenders_stale_forms
async def register_submit(request: web.Request) -> web.StreamResponse:
    if _registration(request) is RegistrationMode.CLOSED:
        return render(request, "register_closed.html", {"message": REGISTRATION_CLOSED}, 403)
    data = await form(request)
    # What the form shows again after a mistake: never the passwords.
    values = {key: data.get(key, "") for key in ("username", "display_name", "consent")}
    values["next"] = safe_next(data.get("next"), "")
    errors: dict[str, str] = {}
    if stale_form(request):
        errors["form"] = STALE_FORM
    node = node_of(request)
    fields = {key: data.get(key, "") for key in ("username", "password", "display_name")}
    try:  # every mistake at once; a form with any costs nothing and is not counted
        members.check_new_member(node.settings.limits, **fields)
    except Invalid as error:
        errors |= error.problems
    if data.get("password", "") != data.get("password_again", "") and "password" not in errors:
        errors["password_again"] = "The two passwords are not the same."
    if values["consent"] != "yes":
        errors["consent"] = (
            "Please confirm that you agree to this node storing what you share about health."
        )
    if not errors:
        try:
            await auth.count_registration(
                db(request), node.settings, client_address(request), now(request)
            )
        except Throttled as error:
            notices = await crisis_notices(request)
            context = _register_context(values, {}, notices)
            return _throttled(request, "register.html", context, error)
        # The count holds from here, in every process; no lock is held while the password
        # is hashed.
        await db(request).commit()
        consented_to = await privacy.version_consented_to(
            db(request), node.settings.consent_policy_version, now(request)
        )
        try:
            member = await members.create_member(
                db(request),
                node.passwords,
                node.settings.limits,
                **fields,
                now=now(request),
                consent_policy_version=consented_to,
                awaiting_approval=_registration(request) is RegistrationMode.APPROVAL,
            )
        except Conflict as error:
            errors[error.field or "form"] = str(error)
    if errors:
        notices = await crisis_notices(request)
        return render(request, "register.html", _register_context(values, errors, notices), 400)
    token = await auth.open_session(
        db(request), member, node.settings, now(request), device=device_of(request)
    )
    # Back where they were going (a join link, a thread), on this site only.
    response = see_other(values["next"] or "/")
    _start_session(request, response, token)
    raise response


async def login_form(request: web.Request) -> web.Response:
    context = {"values": {}, "errors": {}, "next": safe_next(request.query.get("next"))}
    return render(request, "login.html", context)


@rerenders_stale_forms
async def login_submit(request: web.Request) -> web.StreamResponse:
    data = await form(request)
    username = data.get("username", "")
    next_path = safe_next(data.get("next"))
    context = {"values": {"username": username}, "next": next_path}
    if stale_form(request):
        return render(request, "login.html", context | {"errors": {"form": STALE_FORM}}, 400)
    node = node_of(request)
    try:
        attempt = await auth.begin_sign_in(
            db(request),
            node.settings,
            username=username,
            address=client_address(request),
            now=now(request),
        )
    except Throttled as error:
        return _throttled(request, "login.html", context, error)
    # The attempt is counted, in every process, before its password is checked; and no
    # lock is held while it is.
    await db(request).commit()
    try:
        member = await auth.finish_sign_in(
            db(request), node.passwords, attempt, data.get("password", "")
        )
    except auth.LoginRefused as error:
        return render(request, "login.html", context | {"errors": {"form": str(error)}}, 400)
    token = await auth.open_session(
        db(request), member, node.settings, now(request), device=device_of(request)
    )
    response = see_other(next_path)
    _start_session(request, response, token)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.get(SESSION_TOKEN)
    if token:
        await auth.close_session(db(request), token)
    response = see_other("/")
    delete_cookie(request, response, SESSION_COOKIE)
    raise response


async def profile(request: web.Request) -> web.Response:
    person = await members.get_member(db(request), request.match_info["username"])
    if person.erased_at is not None:
        if wants_activity_json(request):
            return await erased_member_document(request, person)
        raise NotFound("There is no member with that name.")
    if wants_activity_json(request):
        return await member_document(request, person)
    groups = await members.profile_groups(db(request), person)
    badges = await badges_of(request, [person])
    return render(request, "profile.html", {"person": person, "groups": groups, "badges": badges})


async def profile_form(request: web.Request) -> web.Response:
    me = require_member(request)
    values = {
        "display_name": me.display_name,
        "bio": me.bio,
        "show_groups": me.show_groups,
        "time_zone": me.time_zone,
    }
    return render(request, "profile_edit.html", {"values": values, "errors": {}})


@rerenders_stale_forms
async def profile_submit(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    data = await form(request)
    values = {key: data.get(key, "") for key in ("display_name", "bio", "time_zone")}
    show_groups = data.get("show_groups") == "yes"
    if stale_form(request):
        context = {"values": values | {"show_groups": show_groups}, "errors": {"form": STALE_FORM}}
        return render(request, "profile_edit.html", context, 400)
    try:
        await members.update_profile(
            db(request), node_of(request).settings.limits, me, **values, show_groups=show_groups
        )
    except Invalid as error:
        context = {"values": values | {"show_groups": show_groups}, "errors": error.problems}
        return render(request, "profile_edit.html", context, 400)
    raise see_other(ids.member_path(me.username))
