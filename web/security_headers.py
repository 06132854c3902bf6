"""The headers every answer carries, whether or not it passes through the middleware."""

from __future__ import annotations

from aiohttp import web

from web.appkeys import NODE

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        # script-src: only this node's own static files (the browser's time zone, set in a
        # cookie; progressive enhancement), never inline script or another origin's.
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The same addresses answer people with HTML and servers with ActivityStreams.
    "Vary": "Accept",
}


async def strict_transport_security(request: web.Request, response: web.StreamResponse) -> None:
    """On an https node every answer says so: pages, redirects, errors, static files and
    answers made from exceptions alike (a response-prepare hook sees each one sent)."""
    if request.app[NODE].settings.scheme == "https":
        response.headers["Strict-Transport-Security"] = "max-age=31536000"


ROBOTS_HEADER = "X-Robots-Tag"


def open_to_search_engines(response: web.StreamResponse) -> web.StreamResponse:
    """Let search engines index this answer: only the pages of a group an admin opened."""
    response.headers[ROBOTS_HEADER] = "all"
    return response


async def noindex_by_default(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer asks search engines not to index it, unless its page was opened to them."""
    response.headers.setdefault(ROBOTS_HEADER, "noindex")
