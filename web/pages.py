"""Helpers every page handler uses: rendering, forms, redirects, the viewer and the clock."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from aiohttp import web
from multidict import MultiDict
from sqlalchemy.ext.asyncio import AsyncSession

from node import crisis
from node.ids import MAX_ROW_ID
from node.policy import ANONYMOUS, Viewer, search_engines_may_index
from node.professionals import Badge, badges_for
from node.runtime import NodeContext
from node.storage.models import LOCAL, ConditionGroup, Member
from node.time_zones import reader_zone
from web.appkeys import (
    CSRF_BASIS,
    CSRF_FAILED,
    DB,
    IDENTITY,
    ME,
    MEMBER,
    NODE,
    TEMPLATES,
    VIEWER,
)
from web.csrf import token_for
from web.security_headers import SECURITY_HEADERS, open_to_search_engines

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STALE_FORM = (
    "This form had expired or came from another page, so nothing was saved. "
    "Your text is still below: check it and send it again."
)


def node_of(request: web.Request) -> NodeContext:
    return request.app[NODE]


def db(request: web.Request) -> AsyncSession:
    session: AsyncSession = request[DB]
    return session


def viewer(request: web.Request) -> Viewer:
    return request.get(VIEWER, ANONYMOUS)


def member(request: web.Request) -> Member | None:
    return request.get(MEMBER)


def now(request: web.Request) -> datetime:
    return node_of(request).clock.now()


async def badges_of(request: web.Request, people: Iterable[Member | None]) -> dict[int, Badge]:
    """The verified-professional badges of the people a page names (None: an anonymous
    author, who has none), by member id: one badges_for call for the whole page."""
    ids = {person.id for person in people if person is not None}
    return await badges_for(db(request), ids, now(request))


async def crisis_notices(request: web.Request) -> crisis.Notices:
    """The guidelines and emergency notice: the admins', else the configuration's."""
    return await crisis.notices(db(request), node_of(request).settings.crisis)


async def crisis_resources(request: web.Request) -> Sequence[crisis.ResourceShown]:
    """The admins' crisis resources, else the configuration's."""
    return await crisis.resources(db(request), node_of(request).settings.crisis)


# The cookie the browser's zone arrives in (set by /static/time-zone.js, never by the server).
TIME_ZONE_COOKIE = "tz"


def render(
    request: web.Request, template: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> web.Response:
    node = node_of(request)
    basis = request.get(CSRF_BASIS)
    me = request.get(ME)
    zone = reader_zone(me.time_zone if me else None, request.cookies.get(TIME_ZONE_COOKIE))
    body = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            request=request,
            me=me,
            viewer=viewer(request),
            reader_zone=zone,
            reader_now=node.clock.now(),
            csrf_token=token_for(node.secret, basis) if basis else "",
            limits=node.settings.limits,
            node_identity=request.app[IDENTITY].current,
            **(context or {}),
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def render_group_page(
    request: web.Request,
    group: ConditionGroup,
    template: str,
    context: Mapping[str, Any],
    status: int = 200,
) -> web.Response:
    """`render` for a group's page or thread, indexable when an admin opened the group."""
    indexable = status == 200 and search_engines_may_index(
        group.visibility, group.domain == LOCAL, group.indexable
    )
    page = render(request, template, {**context, "indexable": indexable}, status)
    return open_to_search_engines(page) if indexable else page


def retry_after(response: web.StreamResponse, wait: timedelta) -> web.StreamResponse:
    """A 429's `Retry-After`: whole seconds, at least one."""
    response.headers["Retry-After"] = str(max(1, math.ceil(wait.total_seconds())))
    return response


def local_path(target: str) -> str | None:
    """`target` when it can only be read as a path on this site, else None.

    Browsers read "//host", "/\\host" and "/<tab>/host" as another host (they drop tabs and
    newlines, and take a backslash for a slash), and resolve "/..//host" to the path
    "//host", which a later redirect could send on; none of these, encoded or not, is a
    local path. Every redirect this site answers with goes through here."""
    if not target.startswith("/") or any(ord(c) < 0x20 or c in "\\\x7f" for c in target):
        return None
    if target.startswith("//"):  # "///host" too, which urlsplit reads as a path
        return None
    parts = urlsplit(target)
    decoded = unquote(parts.path)
    if parts.scheme or parts.netloc or "\\" in decoded or "//" in decoded:
        return None
    if any(segment in (".", "..") for segment in decoded.split("/")):
        return None
    return target


def see_other(location: str) -> web.HTTPSeeOther:
    """A 303 to a page of this site. A location that is not plainly local (a bug, since every
    caller builds it from our own paths) goes to the front page instead of anywhere else."""
    safe = local_path(location)
    if safe is None:
        log.warning("refused to redirect to %r", location[:200])
    return web.HTTPSeeOther(safe or "/")


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site paths are followed after sign-in, never another host."""
    return (local_path(target) if target else None) or default


def row_id(request: web.Request, name: str) -> int:
    """The numeric id in the URL's `name` part, or 404: ASCII digits in canonical form (no
    leading zero) within the column's range. Every route taking a numeric id reads it so."""
    raw = request.match_info.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ROW_ID)):
        raise web.HTTPNotFound()
    number = int(raw)
    if str(number) != raw or not 0 < number <= MAX_ROW_ID:
        raise web.HTTPNotFound()
    return number


async def form(request: web.Request) -> MultiDict[str]:
    """The posted fields; file parts are dropped (the one upload, the logo, is read apart)."""
    data = await request.post()
    return MultiDict((key, value) for key, value in data.items() if isinstance(value, str))


def stale_form(request: web.Request) -> bool:
    return bool(request.get(CSRF_FAILED))


def rerenders_stale_forms(handler: Handler) -> Handler:
    """Mark a handler that shows its form again, text kept, when the CSRF token is stale."""
    handler.rerenders_stale_forms = True  # type: ignore[attr-defined]
    return handler


def signed_not_cookied(handler: Handler) -> Handler:
    """Mark a handler that other servers call with HTTP signatures, never browsers with
    cookies: CSRF does not apply, its body is not a form, and it has no request session
    (`db(request)`): it opens the transactions it needs itself."""
    handler.signed_not_cookied = True  # type: ignore[attr-defined]
    return handler


def is_signed_not_cookied(request: web.Request) -> bool:
    """Whether the route the request matched was marked with `signed_not_cookied`."""
    return bool(getattr(request.match_info.handler, "signed_not_cookied", False))


def require_member(request: web.Request) -> Member:
    signed_in = member(request)
    if signed_in is None:
        # After signing in, come back to the page, never to a form's POST address.
        back = request.path_qs if request.method == "GET" else "/"
        raise see_other(f"/login?next={quote(back)}")
    return signed_in


async def answer_and_hang_up(request: web.Request, response: web.Response) -> web.Response:
    """Send `response`, then close the connection at once: the rest of a body that is
    arriving too slowly is neither waited for nor read (aiohttp would otherwise linger)."""
    # Sent here, before the security middleware sees it: it gets those headers now.
    response.headers.update(SECURITY_HEADERS)
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response
