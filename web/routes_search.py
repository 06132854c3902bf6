"""The search page: full-text search over what the viewer may read (node/search.py)."""

from __future__ import annotations

from aiohttp import web

from node import ids, search
from web.pages import db, render, viewer

PAGE_PROBLEM = f"Choose a results page from 1 to {search.MAX_PAGE}."
TYPE_PROBLEM = "Choose groups, threads or posts, or all results."


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.SEARCH_PAGE, search_page)


async def search_page(request: web.Request) -> web.Response:
    """Works without a script: a GET form, links between types and pages. An empty query
    shows the form; a query of search syntax or odd characters is searched as plain words."""
    query = request.query.get("q", "")[: search.QUERY_MAX]
    raw_kind = request.query.get("type", "")
    raw_page = request.query.get("page", "1")
    kind = next((k for k in search.KINDS if k.value == raw_kind), None)
    page = int(raw_page) if raw_page.isascii() and raw_page.isdigit() and len(raw_page) < 4 else 0
    problem = ""
    if raw_kind and kind is None:
        problem = TYPE_PROBLEM
    elif not 1 <= page <= search.MAX_PAGE:
        problem, page = PAGE_PROBLEM, 1
    results = None
    if not problem:
        results = await search.search(db(request), viewer(request), query, kind=kind, page=page)
    context = {
        "query": query,
        "kind": kind,
        "kinds": search.KINDS,
        "results": results,
        "problem": problem,
        "page_size": search.PAGE_SIZE,
        "max_page": search.MAX_PAGE,
    }
    return render(request, "search.html", context, 400 if problem else 200)
