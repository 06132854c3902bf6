"""Static files under fingerprinted names: `/static/style.<hash>.css` never changes, so browsers
keep it for a year without asking again; a new stylesheet gets a new name. Templates link
through `static_url("style.css")`. The plain name keeps answering, cached for a short while,
for anything that still links to it (an old page in a cache, a bookmark)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static/"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
HASH_LENGTH = 16


@dataclass(frozen=True)
class Asset:
    path: Path
    fingerprinted: str  # "style.<hash>.css"


def fingerprinted_name(name: str, content: bytes) -> str:
    digest = hashlib.sha256(content).hexdigest()[:HASH_LENGTH]
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{digest}.{suffix}" if dot else f"{name}.{digest}"


@cache
def assets(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file of the static folder by its plain name, hashed once per process (a changed
    stylesheet takes a restart, as a changed template does)."""
    found = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            found[path.name] = Asset(path, fingerprinted_name(path.name, path.read_bytes()))
    return found


def static_url(name: str) -> str:
    """The address a template links to: the fingerprinted one. An unknown name is a bug in a
    template, so it fails the page rather than linking to nothing."""
    return STATIC_PREFIX + assets()[name].fingerprinted


@cache
def _by_served_name() -> dict[str, tuple[Asset, str]]:
    served: dict[str, tuple[Asset, str]] = {}
    for name, asset in assets().items():
        served[name] = (asset, SHORT)
        served[asset.fingerprinted] = (asset, IMMUTABLE)
    return served


async def serve_static(request: web.Request) -> web.StreamResponse:
    """Only the folder's own files, by name: no path walks anywhere else."""
    found = _by_served_name().get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    asset, cache_control = found
    return web.FileResponse(asset.path, headers={"Cache-Control": cache_control})


def register(router: web.UrlDispatcher) -> None:
    router.add_get(STATIC_PREFIX + "{name}", serve_static)
