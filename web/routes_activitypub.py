"""ActivityPub over HTTP: actor and object documents, collections, inboxes, activities.

The same URL serves a person HTML and a server AS2 JSON; `wants_activity_json` decides.
Private groups have no documents here at all: every AS2 request about them is "not found".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from federation import inbox as inbox_edge
from federation.actors import group_key_owner, member_key_owner
from federation.convert import AS2_MEDIA_TYPE
from federation.service import Federation
from node import (
    groups,
    ids,
    members,
    membership,
    mentions,
    partners,
    polls,
    posts,
    professionals,
    published,
)
from node.actor_keys import INSTANCE_ACTOR, public_pem_of
from node.errors import NotFound
from node.federation_policy import host_of
from node.policy import ANONYMOUS, federates, shared_with_partners
from node.qa_windows import windows_of
from node.rate_limits import count_follow_request
from node.storage.models import (
    ConditionGroup,
    Member,
    Post,
)
from node.throttles import Throttled
from web.appkeys import FEDERATION, IDENTITY, NODE
from web.middlewares import BODY_READ_SECONDS
from web.pages import answer_and_hang_up, db, now, retry_after, signed_not_cookied

INBOX_BODY_MAX = 1024 * 1024
PAGE_SIZE = 20
AS2_TYPES = ("application/activity+json", "application/ld+json")


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.INSTANCE_ACTOR_PATH, instance_actor)
    router.add_get(ids.INSTANCE_OUTBOX_PATH, instance_outbox)
    router.add_get(ids.INSTANCE_FOLLOWERS_PATH, instance_followers)
    router.add_post(ids.INSTANCE_INBOX_PATH, shared_inbox)
    router.add_post(ids.SHARED_INBOX_PATH, shared_inbox)
    router.add_post(ids.MEMBER_INBOX_PATH, member_inbox)
    router.add_post(ids.GROUP_INBOX_PATH, group_inbox)
    router.add_get(ids.MEMBER_OUTBOX_PATH, member_outbox)
    router.add_get(ids.MEMBER_FOLLOWERS_PATH, member_followers)
    router.add_get(ids.GROUP_OUTBOX_PATH, group_outbox)
    router.add_get(ids.GROUP_FOLLOWERS_PATH, group_followers)
    router.add_get(ids.GROUP_MODERATORS_PATH, group_moderators)
    router.add_get(ids.GROUP_FEATURED_PATH, group_featured)
    router.add_get(ids.ACTIVITY_PATH, activity_document)


def wants_activity_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(kind in accept for kind in AS2_TYPES)


def as2(document: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        status=status,
        content_type=AS2_MEDIA_TYPE,
        headers={"Vary": "Accept"},
    )


def _for_group(group: ConditionGroup, response: web.Response) -> web.Response:
    """A partner group's documents go to verified partners only: no shared cache keeps them."""
    if shared_with_partners(group.visibility):
        response.headers["Cache-Control"] = "no-store"
    return response


def json_error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def federation_of(request: web.Request) -> Federation:
    return request.app[FEDERATION]


async def _check_fetch_signature(request: web.Request) -> None:
    """A GET signed for a server the federation policy refuses is refused. The signature is
    not verified: public documents are also answered unsigned (as Mastodon does without
    authorized-fetch mode), so verifying would protect nothing that is not already public.

    Only ever called once the document is known to exist and be public: for anything else the
    answer is the 404 of a missing document, whatever the signature's fault, so a private
    group or thread cannot be told from nothing by a bad signature."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        key_id = inbox_edge.signing_key_id(headers)
    except inbox_edge.Refused as refused:
        raise web.HTTPBadRequest(text=str(refused)) from None
    if key_id is None:
        return
    if not (await request.app[NODE].federation_policy.current()).permits(key_id):
        raise web.HTTPForbidden(text="requests from this server are refused")


def _signed_request(request: web.Request, body: bytes) -> inbox_edge.SignedRequest:
    node = request.app[NODE]
    url = node.settings.base_url + request.path_qs
    return inbox_edge.SignedRequest(
        method=request.method,
        url=url,
        path_and_query=request.path_qs,
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
        expected_host=node.settings.domain,
    )


# ---------------------------------------------------------------- actors


async def instance_actor(request: web.Request) -> web.Response:
    pem = await public_pem_of(db(request), INSTANCE_ACTOR)
    assert pem is not None
    identity = request.app[IDENTITY].current
    return as2(federation_of(request).documents.application(pem, identity))


async def instance_outbox(request: web.Request) -> web.Response:
    """The instance actor publishes nothing and is followed by no one."""
    documents = federation_of(request).documents
    return as2(documents.collection(documents.iris.instance_outbox(), 0, []))


async def instance_followers(request: web.Request) -> web.Response:
    documents = federation_of(request).documents
    return as2(documents.collection(documents.iris.instance_followers(), 0, []))


async def member_document(request: web.Request, member: Member) -> web.Response:
    await _check_fetch_signature(request)
    pem = await public_pem_of(db(request), member_key_owner(member.id))
    if pem is None:
        raise web.HTTPNotFound()
    verification = await professionals.own_verification(db(request), member, now(request))
    return as2(federation_of(request).documents.person(member, pem, verification))


async def erased_member_document(request: web.Request, member: Member) -> web.Response:
    """An erased account's actor: gone, so that servers that ask again forget it too."""
    documents = federation_of(request).documents
    return as2(documents.tombstone(documents.member_iri(member), member.erased_at), status=410)


async def group_document(request: web.Request) -> web.Response:
    group = await _federated_group(request)
    pem = await public_pem_of(db(request), group_key_owner(group.id))
    if pem is None:
        raise web.HTTPNotFound()
    await _check_fetch_signature(request)
    return _for_group(group, as2(federation_of(request).documents.group(group, pem)))


async def _public_group(
    request: web.Request, session: AsyncSession | None = None
) -> ConditionGroup:
    """The local public group the path names; a private one is not even loaded, so it is
    not found exactly as a missing one is, in answer and in time."""
    group = await groups.find_public_group(session or db(request), request.match_info["slug"])
    if group is None:
        raise web.HTTPNotFound()
    return group


async def partner_host(request: web.Request) -> str:
    """The host of the actor whose key signed this GET, once the signature verifies (the key
    fetched from the signer's server) and the federation policy permits it; "" when the
    request is unsigned or anything about its signature fails.

    Asked before any group or object is looked up, whatever the path names, so that what a
    signer's server sees (its key fetched, or not) never depends on what exists here; and a
    failure answers as an unsigned request does, so it tells nothing either."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        if inbox_edge.signing_key_id(headers) is None:
            return ""
    except inbox_edge.Refused:
        return ""
    node = request.app[NODE]
    policy = await node.federation_policy.current()
    try:
        actor = await inbox_edge.authenticate_fetch(
            federation_of(request).directory,
            _signed_request(request, b""),
            node.clock.now(),
            blocked=lambda iri: not policy.permits(iri),
        )
    except inbox_edge.Refused:
        return ""
    return host_of(actor)


async def _federated_group(request: web.Request) -> ConditionGroup:
    """The local group the path names whose documents the requester may fetch: a public
    group, or a partner group shared with the verified signer's host. Any other is not
    loaded, and answers as a missing group does."""
    host = await partner_host(request)
    group = await groups.find_federated_group(db(request), request.match_info["slug"], host)
    if group is None:
        raise web.HTTPNotFound()
    return group


async def _local_member(request: web.Request, session: AsyncSession | None = None) -> Member:
    member = await members.find_member(session or db(request), request.match_info["username"])
    if member is None:
        raise web.HTTPNotFound()
    return member


# ---------------------------------------------------------------- objects


async def post_document(request: web.Request, post_id: str) -> web.Response:
    """A Page or Note as AS2, asked for as the public (no viewer): private is not found."""
    host = await partner_host(request)
    try:
        found = await posts.post_in_context(db(request), post_id, ANONYMOUS, partner_host=host)
    except NotFound:
        raise web.HTTPNotFound() from None
    return await _post_answer(request, found)


async def _post_answer(request: web.Request, found: posts.PostInContext) -> web.Response:
    group = found.view.group
    # A partner group's post came only because its signer is on a partner domain.
    if not (federates(group.visibility) or shared_with_partners(group.visibility)):
        raise web.HTTPNotFound()
    await _check_fetch_signature(request)
    documents = federation_of(request).documents
    iri = documents.object_iri(found.post, found.thread)
    if found.post.deleted_at is not None:
        return _for_group(
            found.view.group, as2(documents.tombstone(iri, found.post.deleted_at), status=410)
        )
    author = await db(request).get(Member, found.post.author_id)
    parent = None
    if found.post.parent_id:
        parent_post = await db(request).get(Post, found.post.parent_id)
        assert parent_post is not None
        parent_author = await db(request).get(Member, parent_post.author_id)
        assert parent_author is not None
        parent = (parent_post, parent_author)
    assert author is not None
    qa = poll = None
    if found.post.parent_id is None:
        qa = (await windows_of(db(request), [found.thread.id])).get(found.thread.id)
        poll = await polls.published_poll(db(request), found.thread, found.view.group, now(request))
    mentioned = await mentions.mentioned_members(db(request), [found.post.id])
    document = documents.post_object(
        found.post,
        found.thread,
        found.view.group,
        author,
        parent,
        qa,
        now(request),
        poll,
        mentioned.get(found.post.id, []),
    )
    return _for_group(found.view.group, as2(document))


async def thread_document(request: web.Request, thread_id: str) -> web.Response:
    host = await partner_host(request)
    try:
        found = await posts.opening_post_in_context(
            db(request), thread_id, ANONYMOUS, partner_host=host
        )
    except NotFound:
        raise web.HTTPNotFound() from None
    return await _post_answer(request, found)


async def activity_document(request: web.Request) -> web.Response:
    host = await partner_host(request)
    row = await published.activity(db(request), request.match_info["activity_id"])
    if row is None:
        raise web.HTTPNotFound()
    document = json.loads(row.body)
    group = await _closed_group_named(request, document)
    if group is not None:
        # An activity of or about a partner group: for its partners only, as the group is.
        if host == "" or not await partners.is_covered(db(request), group.id, host):
            raise web.HTTPNotFound()
    await _check_fetch_signature(request)
    response = as2(document, status=410 if row.type == "Tombstone" else 200)
    return response if group is None else _for_group(group, response)


async def _closed_group_named(
    request: web.Request, document: dict[str, Any]
) -> ConditionGroup | None:
    """A local group, not public, that an activity is by, for or about (its actor, audience,
    addressees, or those of the object it carries), if any."""
    named: list[Any] = [document.get(key) for key in ("actor", "audience", "object", "target")]
    for key in ("to", "cc"):
        value = document.get(key)
        named += value if isinstance(value, list) else [value]
    inner = document.get("object")
    if isinstance(inner, dict):
        named += [inner.get(key) for key in ("actor", "audience", "object", "attributedTo")]
        for key in ("to", "cc"):
            value = inner.get(key)
            named += value if isinstance(value, list) else [value]
    iris = federation_of(request).documents.iris
    for value in named:
        if not isinstance(value, str):
            continue
        ref = iris.parse_local(value)
        slug = getattr(ref, "slug", None)
        if isinstance(slug, str):
            group = await groups.find_group(db(request), slug)
            if group is not None and not federates(group.visibility):
                return group
    return None


# ---------------------------------------------------------------- collections


def _page_number(request: web.Request) -> int | None:
    raw = request.query.get("page")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 100_000:
        raise web.HTTPBadRequest(text="page must be a positive number")
    return int(raw)


async def group_outbox(request: web.Request) -> web.Response:
    group = await _federated_group(request)
    await _check_fetch_signature(request)
    documents = federation_of(request).documents
    page = _page_number(request)
    found = await published.group_announces(
        db(request), documents.group_iri(group), page or 1, PAGE_SIZE
    )
    document = documents.paged_collection(
        documents.iris.group_outbox(group.slug),
        lambda number: documents.iris.group_outbox_page(group.slug, number),
        found.total,
        [json.loads(body) for body in found.bodies],
        page,
        PAGE_SIZE,
    )
    return _for_group(group, as2(document))


async def group_followers(request: web.Request) -> web.Response:
    """The count only: who belongs to a health group is nobody else's business."""
    group = await _federated_group(request)
    await _check_fetch_signature(request)
    count = await membership.active_member_count(db(request), group.id)
    documents = federation_of(request).documents
    document = documents.collection(documents.iris.group_followers(group.slug), count)
    # Lemmy reads a Collection with (empty) items; the count is all anyone learns.
    document |= {"type": "Collection", "items": []}
    return _for_group(group, as2(document))


async def group_moderators(request: web.Request) -> web.Response:
    group = await _federated_group(request)
    await _check_fetch_signature(request)
    moderators = await membership.moderators_of(db(request), group.id)
    documents = federation_of(request).documents
    items = [documents.member_iri(member) for member in moderators]
    iri = documents.iris.group_moderators(group.slug)
    return _for_group(group, as2(documents.collection(iri, len(items), items)))


async def group_featured(request: web.Request) -> web.Response:
    group = await _federated_group(request)
    await _check_fetch_signature(request)
    documents = federation_of(request).documents
    pinned = await published.pinned_threads(db(request), group.id)
    items = [
        documents.post_object(post, thread, group, author, None) for post, thread, author in pinned
    ]
    items = [{key: value for key, value in item.items() if key != "@context"} for item in items]
    iri = documents.iris.group_featured(group.slug)
    return _for_group(group, as2(documents.collection(iri, len(items), items)))


async def member_outbox(request: web.Request) -> web.Response:
    """Members' activity is shown through their groups; their own outbox lists nothing."""
    member = await _local_member(request)
    documents = federation_of(request).documents
    return as2(documents.collection(documents.iris.member_outbox(member.username), 0, []))


async def member_followers(request: web.Request) -> web.Response:
    member = await _local_member(request)
    documents = federation_of(request).documents
    return as2(documents.collection(documents.iris.member_followers(member.username), 0))


# ---------------------------------------------------------------- inboxes


@signed_not_cookied
async def member_inbox(request: web.Request) -> web.Response:
    return await _receive(request, lambda session: _local_member(request, session))


@signed_not_cookied
async def group_inbox(request: web.Request) -> web.Response:
    return await _receive(request, lambda session: _public_group(request, session))


@signed_not_cookied
async def shared_inbox(request: web.Request) -> web.Response:
    return await _receive(request, None)


def _claimed_host(request: web.Request) -> str:
    """The host of the key a request says it is signed with; "" when it names none (or
    says it badly: then it is refused with its reason further on)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        key_id = inbox_edge.signing_key_id(headers)
    except inbox_edge.Refused:
        return ""
    return host_of(key_id) if key_id else ""


def _too_many(wait: timedelta, reason: str) -> web.Response:
    """429 with Retry-After: a sender (ours included, federation/queue.py) tries again then."""
    too_many = json_error(429, reason)
    retry_after(too_many, wait)
    return too_many


async def _read_capped(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > INBOX_BODY_MAX:
        raise web.HTTPRequestEntityTooLarge(
            max_size=INBOX_BODY_MAX, actual_size=request.content_length
        )
    chunks, size = [], 0
    async with asyncio.timeout(BODY_READ_SECONDS):  # TimeoutError: a sender trickling bytes
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > INBOX_BODY_MAX:
                raise web.HTTPRequestEntityTooLarge(max_size=INBOX_BODY_MAX, actual_size=size)
            chunks.append(chunk)
    return b"".join(chunks)


async def _receive(
    request: web.Request, addressee: Callable[[AsyncSession], Awaitable[object]] | None
) -> web.Response:
    """Check the addressee exists, authenticate, keep. No connection is held while the
    signer's key is looked up or fetched, and only the keeping writes (group-committed)."""
    node = request.app[NODE]
    federation = federation_of(request)
    wait = federation.inbox_budget.take(_claimed_host(request), node.clock.now())
    if wait is not None:  # before the body is read or any key fetched
        return _too_many(wait, "too many requests from this server; please slow down")
    try:
        body = await _read_capped(request)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"the body is over {INBOX_BODY_MAX} bytes")
    except TimeoutError:
        too_slow = json_error(408, f"the body did not arrive within {BODY_READ_SECONDS:.0f} s")
        return await answer_and_hang_up(request, too_slow)
    signed = _signed_request(request, body)
    now = node.clock.now()
    if addressee is not None and request.path not in federation.addressees:
        async with node.transaction(reading=True) as session:
            found = await addressee(session)  # HTTPNotFound when there is no such inbox
        group_id = found.id if isinstance(found, ConditionGroup) else None
        federation.addressees.add(request.path, group_id)
    addressed_group_id = federation.addressees.group_of(request.path)
    policy = await node.federation_policy.current()
    try:
        activity, document = await inbox_edge.authenticate(
            federation.directory,
            signed,
            now,
            blocked=lambda iri: not policy.permits(iri),
        )
    except inbox_edge.Refused as refused:
        return json_error(refused.status, str(refused))
    if activity.type == "Follow":
        try:
            async with node.transaction() as session:
                host = host_of(activity.actor)
                await count_follow_request(session, node.settings.limits.rates, host, now)
        except Throttled as throttled:
            return _too_many(throttled.wait, "too many follow requests from this server")
    if inbox_edge.is_handled(activity):
        try:
            await federation.inbox_writer.store(activity, document, now, addressed_group_id)
        except inbox_edge.StoreFailed:
            unavailable = json_error(503, "the activity could not be kept; please deliver it again")
            unavailable.headers["Retry-After"] = "60"
            return unavailable
    return web.Response(status=202, text="")
