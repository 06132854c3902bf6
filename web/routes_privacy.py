"""What this node tells search engines, the privacy notice, and a member's consent record."""

from __future__ import annotations

from aiohttp import web

from node import ids, privacy
from node.errors import Invalid
from node.policy import is_admin
from node.storage.models import Member
from web.pages import (
    STALE_FORM,
    db,
    form,
    member,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    see_other,
    stale_form,
)

ROBOTS_PATH = "/robots.txt"
PRIVACY_PAGE = "/privacy"
CONSENT_PAGE = "/account/consent"
ADMIN_PRIVACY_PAGE = ids.ADMIN_PRIVACY_PAGE
ADMIN_SEARCH_ENGINES_PAGE = ids.ADMIN_SEARCH_ENGINES_PAGE

# Crawlers may fetch group and thread pages, where each page's noindex (or its absence, for
# a group an admin opened) decides; everything else, member profiles first, is off limits.
ROBOTS_TXT = f"""\
# Every page here asks not to be indexed (noindex) unless an admin opened its group to
# search engines. Member profiles are never indexed.
User-agent: *
Disallow: {ids.MEMBER_PATH.split("{")[0]}
Allow: {ids.GROUP_PATH.split("{")[0]}
Allow: {ids.THREAD_PATH.split("{")[0]}
Allow: {PRIVACY_PAGE}
Disallow: /
"""


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ROBOTS_PATH, robots_txt)
    router.add_get(PRIVACY_PAGE, privacy_page)
    router.add_get(CONSENT_PAGE, consent_page)
    router.add_get(ADMIN_PRIVACY_PAGE, admin_privacy_form)
    router.add_post(ADMIN_PRIVACY_PAGE, admin_privacy_submit)
    router.add_get(ADMIN_SEARCH_ENGINES_PAGE, admin_search_engines)
    router.add_post(ADMIN_SEARCH_ENGINES_PAGE, admin_search_engines_submit)


def _require_admin(request: web.Request) -> Member:
    signed_in = member(request)
    if signed_in is None or not is_admin(signed_in.role):
        raise web.HTTPNotFound()  # the page's existence is nobody else's business
    return signed_in


async def robots_txt(request: web.Request) -> web.Response:
    return web.Response(text=ROBOTS_TXT, content_type="text/plain", charset="utf-8")


async def privacy_page(request: web.Request) -> web.Response:
    text = await privacy.privacy_text(db(request))
    return render(request, "privacy.html", {"text": text})


async def consent_page(request: web.Request) -> web.Response:
    me = require_member(request)
    record = await privacy.consent_record(db(request), me)
    return render(request, "consent.html", {"record": record})


async def admin_privacy_form(
    request: web.Request, values: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> web.Response:
    _require_admin(request)
    if values is None:
        values = {"privacy": await privacy.privacy_text(db(request))}
    context = {"values": values, "errors": errors or {}, "default": privacy.DEFAULT_PRIVACY_TEXT}
    return render(request, "admin_privacy.html", context, 400 if errors else 200)


@rerenders_stale_forms
async def admin_privacy_submit(request: web.Request) -> web.StreamResponse:
    admin = _require_admin(request)
    values = {"privacy": (await form(request)).get("privacy", "")}
    if stale_form(request):
        return await admin_privacy_form(request, values, {"form": STALE_FORM})
    try:
        await privacy.set_privacy_text(db(request), admin, values["privacy"], now(request))
    except Invalid as error:
        return await admin_privacy_form(request, values, error.problems)
    raise see_other(PRIVACY_PAGE)


async def admin_search_engines(request: web.Request) -> web.Response:
    _require_admin(request)
    groups = await privacy.groups_for_search_engines(db(request))
    return render(request, "admin_search_engines.html", {"groups": groups})


async def admin_search_engines_submit(request: web.Request) -> web.StreamResponse:
    admin = _require_admin(request)
    data = await form(request)
    if stale_form(request):
        raise web.HTTPBadRequest(text=STALE_FORM)
    await privacy.open_to_search_engines(
        db(request), admin, data.get("slug", "")[:100], data.get("open") == "yes", now(request)
    )
    raise see_other(ADMIN_SEARCH_ENGINES_PAGE)
