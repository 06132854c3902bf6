"""Discovery endpoints: WebFinger, NodeInfo and host-meta.

Other servers call these before anything else, unauthenticated and often from browsers (hence
CORS), so they answer JSON, never the HTML error pages, and a private group answers exactly like
a name that does not exist.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from federation.discovery import (
    JRD_CONTENT_TYPE,
    NODEINFO_21_PROFILE,
    Kind,
    LocalName,
    MalformedResource,
    host_meta_json,
    host_meta_xml,
    nodeinfo_document,
    nodeinfo_links,
    read_resource,
    webfinger_document,
)
from federation.stats import usage_counts
from node import ids
from node.config import Settings
from node.groups import find_federated_group
from node.members import find_member
from web.appkeys import IDENTITY, NEW_CSRF_SEED, NODE
from web.pages import db
from web.routes_activitypub import partner_host

CACHE_FOR_AN_HOUR = "public, max-age=3600"
NOT_HERE = "There is no account by that name on this node."


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.WEBFINGER_PATH, webfinger)
    router.add_get(ids.NODEINFO_WELL_KNOWN_PATH, nodeinfo_discovery)
    router.add_get(ids.NODEINFO_PATH, nodeinfo)
    router.add_get(ids.HOST_META_PATH, host_meta)
    router.add_get(ids.HOST_META_JSON_PATH, host_meta_as_json)


def _answer(
    request: web.Request,
    body: str,
    content_type: str,
    status: int = 200,
    cache: str | None = CACHE_FOR_AN_HOUR,
) -> web.Response:
    # A shared cache must never store a cookie; these answers need no CSRF seed anyway.
    request.pop(NEW_CSRF_SEED, None)
    headers = {"Content-Type": content_type, "Access-Control-Allow-Origin": "*"}
    if cache is not None and status == 200:
        headers["Cache-Control"] = cache
    # The content type is set as a header, not through aiohttp's `content_type`, so that it is
    # sent exactly (no charset appended: JSON is UTF-8 by definition).
    return web.Response(body=body.encode("utf-8"), status=status, headers=headers)


def _json(request: web.Request, document: dict[str, Any], content_type: str) -> web.Response:
    return _answer(request, json.dumps(document), content_type)


def _error(request: web.Request, status: int, reason: str) -> web.Response:
    return _answer(request, json.dumps({"error": reason}), "application/json", status=status)


def _settings(request: web.Request) -> Settings:
    return request.app[NODE].settings


async def _local_actor(
    session: AsyncSession, settings: Settings, found: LocalName, partner: str = ""
) -> tuple[Kind, str] | None:
    """The kind and canonical name of what `found` names, if it may be discovered."""
    if found.kind == "instance":
        return "instance", settings.domain
    if found.kind in (None, "member"):
        member = await find_member(session, found.name)
        if member is not None and member.erased_at is None:  # an erased account is gone
            return "member", member.username
    if found.kind in (None, "group"):
        # Private groups have no actor and are never federated: nothing to discover, and
        # the query never loads one, so asking costs what asking for nothing costs. A partner
        # group is found only for a request signed by an actor of one of its partner domains.
        group = await find_federated_group(session, found.name, partner)
        if group is not None:
            return "group", group.slug
    return None


async def webfinger(request: web.Request) -> web.Response:
    settings = _settings(request)
    resource = request.query.get("resource", "")
    if not resource:
        return _error(request, 400, "The resource parameter is required.")
    try:
        found = read_resource(resource, settings)
    except MalformedResource as error:
        return _error(request, 400, f"The resource is malformed: {error}.")
    # A signature is verified before anything is looked up, whatever the resource names.
    partner = await partner_host(request)
    actor = None if found is None else await _local_actor(db(request), settings, found, partner)
    if actor is None:
        return _error(request, 404, NOT_HERE)
    document = webfinger_document(settings, *actor)
    # RFC 7033 section 4.3: `rel` parameters narrow the links returned.
    wanted = request.query.getall("rel", [])
    if wanted:
        document["links"] = [link for link in document["links"] if link["rel"] in wanted]
    if partner:
        # An answer to a verified signer may name a partner group: no shared cache keeps it.
        return _answer(request, json.dumps(document), JRD_CONTENT_TYPE, cache="no-store")
    return _json(request, document, JRD_CONTENT_TYPE)


async def nodeinfo_discovery(request: web.Request) -> web.Response:
    return _json(request, nodeinfo_links(_settings(request)), "application/json")


async def nodeinfo(request: web.Request) -> web.Response:
    node = request.app[NODE]
    counts = await usage_counts(db(request), node.clock.now())
    identity = request.app[IDENTITY].current
    return _json(request, nodeinfo_document(node.settings, identity, **counts), NODEINFO_21_PROFILE)


async def host_meta(request: web.Request) -> web.Response:
    return _answer(request, host_meta_xml(_settings(request)), "application/xrd+xml")


async def host_meta_as_json(request: web.Request) -> web.Response:
    return _json(request, host_meta_json(_settings(request)), "application/json")
