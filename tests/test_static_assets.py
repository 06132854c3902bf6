"""Static files: pages link fingerprinted names that are cached for a year; the plain name
still answers, with a short cache; nothing outside the static folder is served."""

from __future__ import annotations

import hashlib
import re

from tests.browser import Browser
from web.assets import IMMUTABLE, SHORT, fingerprinted_name

STYLESHEET = re.compile(r'<link rel="stylesheet" href="(/static/style\.([0-9a-f]+)\.css)">')


async def test_pages_link_a_fingerprinted_stylesheet_cached_for_a_year(browser: Browser) -> None:
    # Given a signed-in member (whose requests carry a session cookie)
    await browser.register("alice")
    page = await browser.get("/")
    match = STYLESHEET.search(page.html)
    assert match, "the page does not link a fingerprinted stylesheet"
    address, digest = match.groups()

    # When the browser fetches the stylesheet the page names
    async with browser.client.get(address) as response:
        body = await response.read()
        # Then it is the stylesheet, named after its content, kept for a year by everyone
        assert response.status == 200
        assert response.content_type == "text/css"
        assert hashlib.sha256(body).hexdigest().startswith(digest)
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert "X-Content-Type-Options" in response.headers
        assert "Set-Cookie" not in response.headers


async def test_the_plain_name_still_answers_with_a_short_cache(browser: Browser) -> None:
    async with browser.client.get("/static/style.css") as response:
        body = await response.read()
        assert response.status == 200
        assert response.content_type == "text/css"
        assert response.headers["Cache-Control"] == SHORT
    page = await browser.get("/")
    match = STYLESHEET.search(page.html)
    assert match
    async with browser.client.get(match.group(1)) as response:
        assert await response.read() == body


async def test_unknown_or_stale_names_and_other_paths_are_not_found(browser: Browser) -> None:
    for path in (
        "/static/style.0000000000000000.css",  # a stylesheet that was replaced
        "/static/nothing.css",
        "/static/..%2Fapp.py",
        "/static/%2E%2E/assets.py",
        "/static/",
    ):
        async with browser.client.get(path) as response:
            assert response.status == 404, path
            assert "immutable" not in response.headers.get("Cache-Control", ""), path


def test_a_changed_file_gets_a_new_name() -> None:
    first = fingerprinted_name("style.css", b"body { color: black; }")
    second = fingerprinted_name("style.css", b"body { color: navy; }")
    assert first != second
    assert first.startswith("style.") and first.endswith(".css")
    assert fingerprinted_name("LICENSE", b"x").startswith("LICENSE.")
