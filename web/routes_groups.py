"""The group directory, group pages, membership and moderation."""

from __future__ import annotations

import logging

from aiohttp import web
from multidict import MultiDict

from federation.client import FetchError, PolicyRefused
from federation.discovery import (
    follow_url,
    handle_host,
    home_subscribe_template,
    resolve_handle,
    webfinger_url,
)
from node import groups, ids, membership, moderation, rate_limits, thread_lists
from node.errors import Conflict, DomainError, Forbidden, Invalid
from node.ids import group_path
from node.paging import PageRequest, page_request
from node.policy import (
    ANONYMOUS,
    NO_STANDING,
    Action,
    asks_by_link,
    follows_remote_partner_group,
    may,
)
from node.storage.models import LOCAL, ConditionGroup
from node.throttles import Throttled
from web.appkeys import FEDERATION
from web.client_address import client_address
from web.pages import (
    STALE_FORM,
    badges_of,
    crisis_notices,
    db,
    form,
    node_of,
    now,
    render,
    render_group_page,
    require_member,
    rerenders_stale_forms,
    retry_after,
    see_other,
    stale_form,
    viewer,
)
from web.routes_activitypub import group_document, wants_activity_json

log = logging.getLogger(__name__)


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/", directory)
    router.add_get("/groups/new", new_group_form)
    router.add_post("/groups/new", new_group_submit)
    router.add_post("/groups/follow", follow_remote_group)
    router.add_get(ids.AUTHORIZE_INTERACTION_PATH, authorize_interaction)
    router.add_get(ids.GROUP_PATH, group_page)
    router.add_get(ids.GROUP_MEMBERS_PATH, members_page)
    router.add_post(ids.GROUP_JOIN_PATH, join)
    router.add_post(ids.GROUP_LEAVE_PATH, leave)
    router.add_post(ids.GROUP_FOLLOW_FROM_HOME_PATH, follow_from_home)
    router.add_get(ids.JOIN_LINK_PATH, ask_form)
    router.add_post(ids.JOIN_LINK_PATH, ask_submit)
    router.add_get(ids.GROUP_MODERATION_PATH, moderation_page)
    router.add_post(ids.GROUP_MODERATION_ACTION_PATH, moderation_action)


async def directory(request: web.Request) -> web.Response:
    query = request.query.get("q", "")[:100]
    tag = request.query.get("tag", "")[:40]
    entries = await groups.directory(db(request), viewer(request), query, tag)
    mine = await membership.groups_of_viewer(db(request), viewer(request))
    feed = (await thread_lists.feed(db(request), viewer(request), DIRECTORY_FEED)).items
    badges = await badges_of(request, (item.byline.member for item in feed))
    context = {"entries": entries, "query": query, "tag": tag, "mine": mine, "feed": feed,
               "badges": badges}  # fmt: skip
    return render(request, "directory.html", context)


# The directory shows the start of the member's feed; the feed page has the rest.
DIRECTORY_FEED = PageRequest(size=10)

GROUP_FIELDS = (
    "slug", "name", "description", "rules", "tags", "visibility", "join_policy", "partners",
)  # fmt: skip


async def new_group_form(request: web.Request) -> web.Response:
    require_member(request)
    values = {"visibility": "public", "join_policy": "request"}
    return render(request, "group_new.html", {"values": values, "errors": {}})


@rerenders_stale_forms
async def new_group_submit(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    data = await form(request)
    values = {key: data.get(key, "") for key in GROUP_FIELDS}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    if values["visibility"] not in ("public", "private", "partners"):
        errors["visibility"] = "Choose whether the group is public, private or for partners."
    if not errors:
        closed = values["visibility"] != "public"
        partner_domains = values["partners"][:20_000] if values["visibility"] == "partners" else ""
        try:
            group = await groups.create_group(
                db(request),
                node_of(request).settings.limits,
                owner_id=me.id,
                slug=values["slug"],
                name=values["name"],
                description=values["description"],
                rules=values["rules"],
                tags=values["tags"],
                visibility=values["visibility"],
                partners=[partner_domains] if partner_domains.strip() else [],
                join_policy=values["join_policy"] if closed else "open",
                now=now(request),
            )
        except Invalid as error:
            errors = error.problems
        except Conflict as error:
            errors = {"slug": str(error)}
        else:
            raise see_other(group_path(group.slug))
    return render(request, "group_new.html", {"values": values, "errors": errors}, 400)


async def group_page(request: web.Request) -> web.Response:
    if wants_activity_json(request):
        return await group_document(request)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    notices = await crisis_notices(request)
    if not view.may(Action.READ):
        return render(request, "group_outside.html", {"view": view, "notices": notices})
    wanted = page_request(request.query, thread_lists.GROUP_KEYS)
    threads = await thread_lists.group_threads(db(request), view, wanted)
    ban_ended = await membership.ban_ended(db(request), view, now(request))
    context = {
        "view": view, "threads": threads, "ban_ended": ban_ended, "notices": notices,
        "badges": await badges_of(request, (item.byline.member for item in threads.items)),
        "address": federated_address(request, view.group), "values": {}, "errors": {},
    }  # fmt: skip
    return render_group_page(request, view.group, "group.html", context)


def federated_address(request: web.Request, group: ConditionGroup) -> str:
    """`@slug@domain`, by which people on other servers find and follow the group: only a
    public group of this node has one to give (private and partner groups are not followed
    by just anyone)."""
    if group.domain != LOCAL or group.visibility != "public":
        return ""
    return f"@{group.slug}@{node_of(request).settings.domain}"


YOUR_ADDRESS_HINT = "Give your address, like alice@mastodon.example."


def _home_problem(error: FetchError, handle: str) -> str:
    """Why following from the visitor's server did not work, in plain words: the server's
    name, never the error's text."""
    host = handle_host(handle)
    if isinstance(error, PolicyRefused):
        return f"This server does not federate with {host}, so you cannot follow from there."
    if error.kind == "not_found" or error.kind == "gone":
        return f"{host} does not know the address {handle}. Check it and try again."
    if error.kind == "invalid":
        return (
            f"{host} did not say how to follow a group from there: your server may not "
            "support it. Search for the group's address on your server instead."
        )
    return f"We could not reach {host}. Check your address, or try again later."


@rerenders_stale_forms
async def follow_from_home(request: web.Request) -> web.StreamResponse:
    """A visitor (signed in here or not) follows a public group from their own server: its
    WebFinger names a subscribe template, and the visitor is sent there with the group's IRI.
    The same answer as a missing group for a group that has no public address."""
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    address = federated_address(request, view.group)
    if not address:
        raise web.HTTPNotFound()
    data = await form(request)
    handle = data.get("handle", "").strip()[:300]
    values = {"handle": handle}
    federation = request.app[FEDERATION]
    problem = STALE_FORM if stale_form(request) else "" if handle else YOUR_ADDRESS_HINT
    if not problem:
        try:
            webfinger_url(handle, federation.client.allow_loopback)
        except FetchError:
            problem = f"That is not an address. {YOUR_ADDRESS_HINT}"
    if not problem:
        rates = node_of(request).settings.limits.rates
        try:
            await rate_limits.count_home_follow(
                db(request), rates, client_address(request), now(request)
            )
        except Throttled as throttled:
            context = {"view": view, "address": address, "values": values,
                       "errors": {"handle": str(throttled)}}  # fmt: skip
            return retry_after(
                render(request, "follow_from_home.html", context, 429), throttled.wait
            )
        # Nothing is held while another server answers: not the write lock (a signed-in
        # visitor's POST has noted their activity, and the count above), not a connection.
        await db(request).commit()
        try:
            template = await home_subscribe_template(federation.client, handle, now(request))
        except FetchError as error:
            log.info("follow from %r failed: %s", handle_host(handle), error)
            problem = _home_problem(error, handle)
        else:
            iri = ids.Iris(node_of(request).settings.base_url).group(view.group.slug)
            # A page with a link, not a redirect: the pages' CSP (`form-action 'self'`) stops
            # a browser from following a form's redirect to another server, and the visitor
            # sees where they are going before they leave.
            context = {
                "view": view,
                "target": follow_url(template, iri),
                "host": handle_host(handle),
            }
            return render(request, "follow_from_home_go.html", context)
    context = {"view": view, "address": address, "values": values, "errors": {"handle": problem}}
    return render(request, "follow_from_home.html", context, 400)


async def members_page(request: web.Request) -> web.Response:
    """The members, to those who may see them; to everyone else who may read the group, its
    moderators only (who to ask), and a line saying only members see the rest."""
    wanted = page_request(request.query, membership.MEMBER_KEYS)
    view = await groups.view_group(
        db(request), request.match_info["slug"], viewer(request), need=Action.READ
    )
    if not view.may(Action.SEE_MEMBERS):
        moderators = await membership.moderators_of(db(request), view.group.id)
        return render(request, "members.html", {"view": view, "moderators": moderators})
    people = await membership.members_page(db(request), view, wanted)
    return render(request, "members.html", {"view": view, "people": people})


async def join(request: web.Request) -> web.StreamResponse:
    require_member(request)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    await membership.join(db(request), view, now(request))
    raise see_other(group_path(view.group.slug, view.group.domain))


async def leave(request: web.Request) -> web.StreamResponse:
    require_member(request)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    await membership.leave(db(request), view)
    still_visible = may(Action.READ, ANONYMOUS, view.group.visibility, NO_STANDING)
    raise see_other(group_path(view.group.slug, view.group.domain) if still_visible else "/")


async def ask_form(request: web.Request) -> web.Response:
    group = await membership.group_for_join_link(
        db(request), request.match_info["slug"], request.match_info["code"]
    )
    standing = await groups.standing_in(db(request), group.id, viewer(request))
    page = render(request, "ask_join.html", {"group": group, "standing": standing})
    # A private group's page, shown to whoever holds the link, signed in or not.
    page.headers["Cache-Control"] = "no-store"
    return page


async def ask_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    slug = request.match_info["slug"]
    await membership.request_to_join(
        db(request), slug, request.match_info["code"], viewer(request), now(request)
    )
    raise see_other(group_path(slug.lower()))


async def moderation_page(
    request: web.Request, errors: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    if not view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can open its moderation page.")
    queue = await membership.moderation_queue(db(request), view)
    wanted = page_request(request.query, membership.MEMBER_KEYS)
    people = await membership.members_page(db(request), view, wanted)
    join_link = ""
    if asks_by_link(view.group.visibility, view.group.join_policy):
        iris = ids.Iris(node_of(request).settings.base_url)
        join_link = iris.join_link(view.group.slug, view.group.join_code)
    context = {
        "view": view,
        "queue": queue,
        "people": people,
        "join_link": join_link,
        "errors": errors or {},
    }
    return render(request, "moderation.html", context, status)


@rerenders_stale_forms
async def moderation_action(request: web.Request) -> web.StreamResponse:
    require_member(request)
    if stale_form(request):
        return await moderation_page(request, {"form": STALE_FORM}, 400)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    data = await form(request)
    username = data.get("username", "")
    action = request.match_info["action"]
    session, moment = db(request), now(request)
    try:
        match action:
            case "invite":
                await membership.invite(session, view, username, moment)
            case "approve" | "reject":
                await membership.decide_request(
                    session, view, username, action == "approve", moment
                )
            case "ban":
                return await _ban(request, view, data)
            case "unban":
                await moderation.lift_ban(
                    session,
                    view,
                    await membership.find_target(session, username),
                    reason=data.get("reason", ""),
                    now=moment,
                )
            case "promote" | "demote":
                role = "moderator" if action == "promote" else "member"
                await membership.set_role(session, view, username, role, moment)
            case _:
                raise web.HTTPNotFound()
    except (Invalid, Conflict) as error:
        message = "; ".join(error.problems.values()) if isinstance(error, Invalid) else str(error)
        return await moderation_page(request, {"username": message}, 400)
    except DomainError:
        raise
    raise see_other(ids.group_moderation_path(view.group.slug))


async def _ban(
    request: web.Request, view: groups.GroupView, data: MultiDict[str]
) -> web.StreamResponse:
    """A ban needs a reason and a ticked confirmation (the page `ban_form` shows first)."""
    if not view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can ban people.")
    session = db(request)
    values = {key: data.get(key, "") for key in ("username", "reason", "days")}
    person = await membership.find_target(session, values["username"])
    errors: dict[str, str] = {}
    if data.get("confirm") != "yes":
        errors["confirm"] = moderation.CONFIRM_PROBLEM
    try:
        days = moderation.parse_ban_days(values["days"])
        if not errors:
            await moderation.ban(
                session, view, person, reason=values["reason"], days=days, now=now(request)
            )
    except (Invalid, Conflict) as error:
        errors |= error.problems if isinstance(error, Invalid) else {"form": str(error)}
    if not values["reason"].strip():
        errors["reason"] = "Give a reason: it goes in the moderation log."
    if errors:
        context = {"view": view, "person": person, "values": values, "errors": errors}
        return render(request, "ban_confirm.html", context, 400)
    raise see_other(ids.group_moderation_path(view.group.slug))


FOLLOW_HINT = "Give the group's address, like diabetes@hospital.example, or its link."


async def authorize_interaction(request: web.Request) -> web.Response:
    """Where other servers send people who want to follow a group from here (OStatus)."""
    require_member(request)
    uri = request.query.get("uri", "")[:2048]
    return render(request, "follow_remote.html", {"values": {"handle": uri}, "errors": {}})


@rerenders_stale_forms
async def follow_remote_group(request: web.Request) -> web.StreamResponse:
    require_member(request)
    data = await form(request)
    handle = data.get("handle", "").strip()[:2048]
    values = {"handle": handle}
    if stale_form(request):
        context = {"values": values, "errors": {"form": STALE_FORM}}
        return render(request, "follow_remote.html", context, 400)
    if not handle:
        return render(
            request,
            "follow_remote.html",
            {"values": values, "errors": {"handle": FOLLOW_HINT}},
            400,
        )
    federation = request.app[FEDERATION]
    session, moment = db(request), now(request)
    try:
        signer = await federation.directory.instance_signer(session)
        iri = await resolve_handle(federation.client, handle, moment, signer)
        # One of ours (a group or person here): its page; anything else of ours is refused
        # below, as the directory never fetches this node's own actors.
        local = federation.documents.iris.parse_local(iri)
        if local is not None:
            raise see_other(ids.path_of(local))
        group = await federation.directory.remote_group(session, iri, moment)
    except PolicyRefused as refused:
        message = (
            f"This server does not federate with {refused.host[:200]}: "
            "its admins have not allowed that server."
        )
        return render(
            request, "follow_remote.html", {"values": values, "errors": {"handle": message}}, 400
        )
    except FetchError as error:
        # Why, only in the log: the form would otherwise tell anyone with an account which
        # addresses this node can reach, and what answers there.
        log.info("remote follow of %r failed: %s", handle[:200], error)
        host = handle_host(handle)
        found = f"That group could not be found on {host}, or we could not reach {host}."
        message = f"{found if host else 'That group could not be found.'} {FOLLOW_HINT}"
        return render(
            request, "follow_remote.html", {"values": values, "errors": {"handle": message}}, 400
        )
    if follows_remote_partner_group(group.visibility, group.domain == ""):
        # Another node's partner group, which answered this node's signed look-up: the person
        # who typed its address asks to follow it; its node decides by its partner list.
        view = await groups.unchecked_view(session, group, viewer(request))
        if not view.standing.banned:
            await membership.join(session, view, moment)
        raise see_other(group_path(group.slug, group.domain))
    view = await groups.view_group(session, f"{group.slug}@{group.domain}", viewer(request))
    if view.may(Action.JOIN):
        await membership.join(session, view, moment)
    raise see_other(group_path(group.slug, group.domain))
