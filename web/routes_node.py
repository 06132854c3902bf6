"""The node's own pages: its about page and logo, and the admins' settings and member pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict

from node import admins, identity, ids, members, moderation
from node.config import RegistrationMode
from node.errors import Invalid, NotFound
from node.modlog import required_reason
from node.storage.models import LOCAL, Member
from web.appkeys import IDENTITY
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
    viewer,
)
from web.routes_admin import _require_admin as require_admin

# A logo's path names its content: it never changes, so it may be kept for a year.
LOGO_CACHE = "public, max-age=31536000, immutable"
PAGE_MAX = 99999
MEMBER_ACTIONS = ("suspend", "unsuspend", "promote", "demote", "approve", "decline")
ADMIN_MEMBER_PAGE = ids.ADMIN_MEMBERS_PAGE + "/{username}"


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.ABOUT_PAGE, about)
    router.add_get(ids.LOGO_FILE, logo)
    router.add_get(ids.ADMIN_SETTINGS_PAGE, settings_form)
    router.add_post(ids.ADMIN_SETTINGS_PAGE, settings_submit)
    router.add_get(ids.ADMIN_MEMBERS_PAGE, members_list)
    router.add_get(ADMIN_MEMBER_PAGE, member_page)
    action = ids.ADMIN_MEMBER_ACTION_PAGE.replace(
        "{action}", "{action:" + "|".join(MEMBER_ACTIONS) + "}"
    )
    router.add_post(action, member_action)


# ---------------------------------------------------------------- the about page and logo


async def about(request: web.Request) -> web.Response:
    return render(request, "about.html", {"indexable": False})


async def logo(request: web.Request) -> web.Response:
    found = await identity.load_logo(db(request), request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    data, media_type = found
    headers = {
        "Content-Type": media_type,
        "Cache-Control": LOGO_CACHE,
        # An image, never a page or a script, whatever a browser would sniff it to be.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    return web.Response(body=data, headers=headers)


# ---------------------------------------------------------------- settings


def _identity_values(request: web.Request) -> dict[str, str]:
    current = request.app[IDENTITY].current
    return {
        "name": current.name,
        "description": current.description,
        "contact": current.contact,
        "operator": current.operator,
        "registration": current.registration.value,
    }


def _settings_page(
    request: web.Request, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> web.Response:
    context: dict[str, Any] = {
        "values": values,
        "errors": errors,
        "defaults": node_of(request).settings.identity,
        "modes": list(RegistrationMode),
        "logo_max_kb": identity.LOGO_MAX // 1024,
    }
    return render(request, "admin_settings.html", context, status)


async def settings_form(request: web.Request) -> web.Response:
    require_admin(request)
    return _settings_page(request, _identity_values(request), {})


async def _uploaded_logo(request: web.Request) -> bytes | None:
    """The file sent as `logo`, read up to one byte past the limit; None when none was."""
    data = await request.post()
    upload = data.get("logo")
    if not isinstance(upload, web.FileField):
        return None
    content = upload.file.read(identity.LOGO_MAX + 1)
    return content or None


@rerenders_stale_forms
async def settings_submit(request: web.Request) -> web.StreamResponse:
    admin = require_admin(request)
    data = await form(request)
    keys = ("name", "description", "contact", "operator", "registration")
    values = {key: data.get(key, "")[:2048] for key in keys}
    if stale_form(request):
        return _settings_page(request, values, {"form": STALE_FORM}, 400)
    change = identity.IdentityChange(
        **values,
        logo=await _uploaded_logo(request),
        remove_logo=data.get("remove_logo") == "yes",
    )
    try:
        await identity.save_identity(
            db(request), change, now=now(request), actor_label=admin.username, actor_id=admin.id
        )
    except Invalid as error:
        return _settings_page(request, values, error.problems, 400)
    # This process shows the new identity at once; the others within IDENTITY_FRESH_FOR.
    request.app[IDENTITY].invalidate()
    # The instance actor's Update is not sent: this node does not federate updates of its
    # instance actor (a key rotation does not either); servers read it again when they refetch.
    raise see_other(ids.ADMIN_SETTINGS_PAGE + "?saved=1")


# ---------------------------------------------------------------- members


def _page_number(request: web.Request) -> int:
    raw = request.query.get(ids.PAGE_PARAMETER, "1")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw[:6]) <= PAGE_MAX:
        return 1
    return int(raw)


async def members_list(request: web.Request) -> web.Response:
    require_admin(request)
    search = admins.clean_search(request.query.get("q", ""))
    page = await admins.members_page(db(request), search, _page_number(request))

    def page_link(number: int) -> str:
        query = {"q": search} if search else {}
        if number > 1:
            query[ids.PAGE_PARAMETER] = str(number)
        return ids.ADMIN_MEMBERS_PAGE + ("?" + urlencode(query) if query else "")

    context = {
        "page": page,
        "search": search,
        "page_link": page_link,
        "waiting": await admins.awaiting_approval(db(request)),
    }
    return render(request, "admin_members.html", context)


async def _local_member(request: web.Request) -> Member:
    found = await members.find_member(db(request), request.match_info["username"])
    if found is None or found.domain != LOCAL or found.erased_at is not None:
        raise NotFound("There is no member with that name.")
    return found


async def member_page(request: web.Request) -> web.Response:
    require_admin(request)
    person = await _local_member(request)
    return render(request, "admin_member.html", {"person": person, "errors": {}, "values": {}})


@rerenders_stale_forms
async def member_action(request: web.Request) -> web.StreamResponse:
    admin = require_admin(request)
    person = await _local_member(request)
    data: MultiDict[str] = await form(request)
    action = request.match_info["action"]
    reason = data.get("reason", "")[:2048]
    if stale_form(request):
        context = {"person": person, "errors": {"form": STALE_FORM}, "values": {"reason": reason}}
        return render(request, "admin_member.html", context, 400)
    session, moment = db(request), now(request)
    who: dict[str, Any] = {"now": moment, "actor_label": admin.username, "actor_id": admin.id}
    try:
        if action == "approve":
            await admins.approve(session, person, **who)
            raise see_other(ids.ADMIN_MEMBERS_PAGE)
        if action == "decline":
            await admins.decline(session, person, **who)
            raise see_other(ids.ADMIN_MEMBERS_PAGE)
        if action == "suspend":
            await moderation.suspend(session, viewer(request), person, reason=reason, now=moment)
        elif action == "unsuspend":
            await moderation.unsuspend_account(session, person, reason=reason, **who)
        else:
            await admins.set_admin(
                session, person, action == "promote", reason=required_reason(reason), **who
            )
    except Invalid as error:
        context = {"person": person, "errors": error.problems, "values": {"reason": reason}}
        return render(request, "admin_member.html", context, 400)
    raise see_other(ADMIN_MEMBER_PAGE.format(username=person.username))
