"""Crisis support pages: the public help page every page links to, and the admins' page for
the resources, phrases and notices."""

from __future__ import annotations

from aiohttp import web

from node import crisis, ids
from node.errors import Invalid
from web.pages import (
    crisis_notices,
    crisis_resources,
    db,
    form,
    member,
    now,
    render,
    row_id,
    see_other,
)
from web.routes_admin import _require_admin as require_admin

ADMIN_RESOURCES_PATH = f"{ids.ADMIN_CRISIS_PAGE}/resources"
ADMIN_RESOURCE_DELETE_PATH = f"{ids.ADMIN_CRISIS_PAGE}/resources/{{resource_id}}/delete"
ADMIN_PHRASES_PATH = f"{ids.ADMIN_CRISIS_PAGE}/phrases"
ADMIN_NOTICES_PATH = f"{ids.ADMIN_CRISIS_PAGE}/notices"


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.HELP_PAGE, help_page)
    router.add_get(ids.ADMIN_CRISIS_PAGE, admin_page)
    router.add_post(ADMIN_RESOURCES_PATH, add_resource)
    router.add_post(ADMIN_RESOURCE_DELETE_PATH, remove_resource)
    router.add_post(ADMIN_PHRASES_PATH, set_phrases)
    router.add_post(ADMIN_NOTICES_PATH, set_notices)


async def help_page(request: web.Request) -> web.Response:
    context = {
        "resources": await crisis_resources(request),
        "notices": await crisis_notices(request),
    }
    return render(request, "help.html", context)


async def admin_page(
    request: web.Request,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    require_admin(request)
    session = db(request)
    notices = await crisis_notices(request)
    phrases = [phrase for phrase, _ in (await crisis.phrase_matcher(session)).phrases]
    shown = {
        "phrases": "\n".join(phrases),
        "guidelines": notices.guidelines,
        "emergency_notice": notices.emergency_notice,
    } | (values or {})
    context = {
        "resources": await crisis_resources(request),
        "values": shown,
        "errors": errors or {},
        "paths": {
            "resources": ADMIN_RESOURCES_PATH,
            "phrases": ADMIN_PHRASES_PATH,
            "notices": ADMIN_NOTICES_PATH,
        },
    }
    return render(request, "admin_crisis.html", context, status)


async def _admin_form(request: web.Request, fields: tuple[str, ...]) -> dict[str, str]:
    require_admin(request)
    data = await form(request)
    return {key: data.get(key, "") for key in fields}


async def add_resource(request: web.Request) -> web.StreamResponse:
    values = await _admin_form(request, ("name", "line", "url", "region"))
    admin = member(request)
    assert admin is not None
    try:
        await crisis.add_resource(db(request), admin, **values, now=now(request))
    except Invalid as error:
        return await admin_page(request, values, error.problems, 400)
    raise see_other(ids.ADMIN_CRISIS_PAGE)


async def remove_resource(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    admin = member(request)
    assert admin is not None
    await crisis.remove_resource(db(request), admin, row_id(request, "resource_id"), now(request))
    raise see_other(ids.ADMIN_CRISIS_PAGE)


async def set_phrases(request: web.Request) -> web.StreamResponse:
    values = await _admin_form(request, ("phrases",))
    admin = member(request)
    assert admin is not None
    try:
        await crisis.set_phrases(db(request), admin, values["phrases"], now(request))
    except Invalid as error:
        return await admin_page(request, values, error.problems, 400)
    raise see_other(ids.ADMIN_CRISIS_PAGE)


async def set_notices(request: web.Request) -> web.StreamResponse:
    values = await _admin_form(request, ("guidelines", "emergency_notice"))
    admin = member(request)
    assert admin is not None
    try:
        await crisis.set_notices(db(request), admin, **values, now=now(request))
    except Invalid as error:
        return await admin_page(request, values, error.problems, 400)
    raise see_other(ids.ADMIN_CRISIS_PAGE)
