"""The node's two cookies: their names, their attributes, and requests that carry one twice.

On https they are named with the __Host- prefix, which a browser accepts only from a secure
origin, without a Domain and with Path=/: a sibling subdomain cannot plant one. A request
carrying one of them twice (a planted copy with another Path or Domain beside the real one)
is refused, rather than letting whichever comes last win.
"""

from __future__ import annotations

from aiohttp import web

from node.config import Settings
from web.appkeys import NODE

SESSION_COOKIE = "hn_session"
SEED_COOKIE = "hn_csrf"


def cookie_name(base: str, settings: Settings) -> str:
    return f"__Host-{base}" if settings.scheme == "https" else base


def read_cookie(request: web.Request, base: str) -> str | None:
    return request.cookies.get(cookie_name(base, request.app[NODE].settings))


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    base: str,
    value: str,
    max_age: int | None = None,
) -> None:
    settings = request.app[NODE].settings
    response.set_cookie(
        cookie_name(base, settings),
        value,
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=settings.scheme == "https",
        path="/",
    )


def delete_cookie(request: web.Request, response: web.StreamResponse, base: str) -> None:
    settings = request.app[NODE].settings
    response.del_cookie(cookie_name(base, settings), path="/", secure=settings.scheme == "https")


def duplicated_cookie(request: web.Request) -> str | None:
    """The name of one of our cookies that the request carries more than once, if any."""
    settings = request.app[NODE].settings
    ours = {cookie_name(base, settings) for base in (SESSION_COOKIE, SEED_COOKIE)}
    seen: set[str] = set()
    for header in request.headers.getall("Cookie", ()):
        for pair in header.split(";"):
            name = pair.split("=", 1)[0].strip()
            if name in ours:
                if name in seen:
                    return name
                seen.add(name)
    return None
