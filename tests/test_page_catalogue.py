"""No page escapes the browser checks: every GET route the app registers is in the catalogue of
tests/site_pages.py, as a page to check or as a route that is not a page, with the reason."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from node.config import Settings
from tests.site_pages import NOT_PAGES, PAGES
from web.app import create_app_owning_node

PLACEHOLDER = re.compile(r"\{[^}]+\}")


def _get_routes() -> dict[str, re.Pattern[str]]:
    """Each GET route's pattern as registered ("/g/{slug}"), with a regex its addresses match."""
    settings = Settings(domain="example.org", data_dir=Path("/nonexistent"))
    app = create_app_owning_node(settings)  # routes only: nothing is opened before startup
    routes = {}
    for route in app.router.routes():
        if route.method != "GET":
            continue
        pattern = route.resource.canonical if route.resource else ""
        parts = PLACEHOLDER.split(pattern)
        routes[pattern] = re.compile("[^/]+".join(re.escape(part) for part in parts))
    return routes


def _route_of(address: str, routes: dict[str, re.Pattern[str]]) -> str | None:
    path = urlsplit(PLACEHOLDER.sub("x", address)).path
    exact = [pattern for pattern in routes if pattern == path]
    matching = exact or [p for p, regex in routes.items() if regex.fullmatch(path)]
    return matching[0] if matching else None


def test_every_get_route_is_a_checked_page_or_excluded_with_a_reason() -> None:
    routes = _get_routes()
    covered = {_route_of(case.path, routes) for case in PAGES}
    missing = sorted(p for p in routes if p not in covered and p not in NOT_PAGES)
    assert not missing, (
        "GET routes neither in PAGES nor in NOT_PAGES of tests/site_pages.py "
        f"(add each with who may open it, or the reason it is not a page): {missing}"
    )


def test_the_catalogue_names_only_routes_that_exist() -> None:
    routes = _get_routes()
    unknown = [case.path for case in PAGES if _route_of(case.path, routes) is None]
    stale = [pattern for pattern in NOT_PAGES if pattern not in routes]
    assert not unknown, f"pages of no route: {unknown}"
    assert not stale, f"NOT_PAGES names routes that are gone: {stale}"
    both = [c.path for c in PAGES if _route_of(c.path, routes) in NOT_PAGES]
    assert not both, f"both a page and not a page: {both}"
