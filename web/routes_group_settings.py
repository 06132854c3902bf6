"""A group's settings (its owner's), its held posts (its moderators'), withdrawing invitations."""

from __future__ import annotations

from aiohttp import web

from node import groups, ids, membership, partners, posts
from node.errors import Conflict, Forbidden, Invalid
from node.modlog import ModAction, log_action
from node.paging import page_request
from node.policy import PARTNERS, Action
from web import routes_groups
from web.appkeys import FEDERATION
from web.pages import (
    STALE_FORM,
    badges_of,
    db,
    form,
    node_of,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    see_other,
    stale_form,
    viewer,
)

SETTINGS_FIELDS = ("name", "description", "rules", "tags", "join_policy", "hold_first_posts")
DECISIONS = ("approve", "reject")


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.GROUP_SETTINGS_PATH, settings_form)
    router.add_post(ids.GROUP_SETTINGS_PATH, settings_submit)
    router.add_get(ids.GROUP_HELD_PATH, held_page)
    router.add_post(ids.GROUP_HELD_DECISION_PATH, held_decision)
    router.add_post(ids.GROUP_WITHDRAW_INVITE_PATH, withdraw_invitation)


async def _owned_view(request: web.Request) -> groups.GroupView:
    require_member(request)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    if view.group.domain or not view.may(Action.EDIT_SETTINGS):
        raise Forbidden("Only the group's owner can change its settings.")
    return view


async def _current_values(request: web.Request, view: groups.GroupView) -> dict[str, str]:
    group = view.group
    shared = await partners.partners_of(db(request), group.id) if _is_partner(view) else []
    return {
        "partners": "\n".join(shared),
        "name": group.name,
        "description": group.description,
        "rules": group.rules,
        "tags": ", ".join(view.tags),
        "join_policy": group.join_policy,
        "hold_first_posts": str(group.hold_first_posts),
        "posting_restricted_to_mods": "yes" if group.posting_restricted_to_mods else "",
    }


def _settings_page(
    request: web.Request,
    view: groups.GroupView,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
    changed: list[str] | None = None,
) -> web.Response:
    context = {
        "view": view,
        "values": values,
        "errors": errors,
        "changed": changed,
        "policies": groups.join_policies(view.group.visibility != "public"),
        "hold_max": groups.HOLD_FIRST_POSTS_MAX,
    }
    return render(request, "group_settings.html", context, status)


async def settings_form(request: web.Request) -> web.Response:
    view = await _owned_view(request)
    return _settings_page(request, view, await _current_values(request, view), {})


@rerenders_stale_forms
async def settings_submit(request: web.Request) -> web.StreamResponse:
    view = await _owned_view(request)
    me = require_member(request)
    data = await form(request)
    values = {key: data.get(key, "") for key in SETTINGS_FIELDS}
    values["posting_restricted_to_mods"] = "yes" if data.get("posting_restricted_to_mods") else ""
    values["partners"] = data.get("partners", "")[:20_000]
    if stale_form(request):
        return _settings_page(request, view, values, {"form": STALE_FORM}, 400)
    wanted_partners: list[str] = []
    if _is_partner(view):
        try:
            wanted_partners = partners.parse_partner_domains([values["partners"]])
            if not wanted_partners:
                raise Invalid({"partners": "A partner group needs at least one partner domain."})
        except Invalid as error:
            return _settings_page(request, view, values, error.problems, 400)
    settings = groups.GroupSettings(
        name=values["name"],
        description=values["description"],
        rules=values["rules"],
        tags=values["tags"],
        join_policy=values["join_policy"],
        posting_restricted_to_mods=bool(values["posting_restricted_to_mods"]),
        hold_first_posts=values["hold_first_posts"],
    )
    try:
        changed = await groups.update_group(
            db(request),
            node_of(request).settings.limits,
            view,
            settings,
            actor_label=me.username,
            now=now(request),
        )
    except Invalid as error:
        return _settings_page(request, view, values, error.problems, 400)
    if _is_partner(view):
        # In this request's transaction: a removed domain's follows end and its queued
        # deliveries are dropped with the change itself.
        added, removed = await partners.set_partners(
            db(request),
            view.group,
            wanted_partners,
            now(request),
            group_actor_iri=request.app[FEDERATION].documents.group_iri(view.group),
        )
        if added or removed:
            changed.append("partner domains")
            await log_action(
                db(request),
                action=ModAction.EDIT_GROUP,
                reason=_partner_change(added, removed)[:2000],
                now=now(request),
                actor_label=me.username,
                actor_id=me.id,
                group_id=view.group.id,
            )
    fresh = await groups.unchecked_view(db(request), view.group, viewer(request))
    values = await _current_values(request, fresh)
    return _settings_page(request, fresh, values, {}, changed=changed)


def _is_partner(view: groups.GroupView) -> bool:
    return view.group.visibility == PARTNERS


def _partner_change(added: list[str], removed: list[str]) -> str:
    parts = []
    if added:
        parts.append("partner domains added: " + ", ".join(added))
    if removed:
        parts.append("partner domains removed: " + ", ".join(removed))
    return "; ".join(parts)


async def _moderated_view(request: web.Request) -> groups.GroupView:
    require_member(request)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    if not view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can see the posts waiting for approval.")
    return view


async def held_page(
    request: web.Request, errors: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    view = await _moderated_view(request)
    wanted = page_request(request.query, posts.HELD_KEYS)
    held = await posts.held_posts(db(request), view, wanted)
    badges = await badges_of(request, (item.byline.member for item in held.items))
    context = {"view": view, "held": held, "errors": errors or {}, "badges": badges}
    return render(request, "group_held.html", context, status)


@rerenders_stale_forms
async def held_decision(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    decision = request.match_info["decision"]
    if decision not in DECISIONS:
        raise web.HTTPNotFound()
    if stale_form(request):
        return await held_page(request, {"form": STALE_FORM}, 400)
    view = await _moderated_view(request)
    data = await form(request)
    post_id = request.match_info["post_id"]
    session, moment = db(request), now(request)
    try:
        if decision == "approve":
            await posts.approve_post(
                session,
                viewer(request),
                post_id=post_id,
                actor_label=me.username,
                now=moment,
                reason=data.get("reason", ""),
            )
        else:
            await posts.reject_post(
                session,
                viewer(request),
                post_id=post_id,
                reason=data.get("reason", ""),
                actor_label=me.username,
                now=moment,
            )
    except Invalid as error:
        return await held_page(request, {"form": "; ".join(error.problems.values())}, 400)
    except Conflict as error:
        return await held_page(request, {"form": str(error)}, 409)
    raise see_other(ids.group_held_path(view.group.slug))


@rerenders_stale_forms
async def withdraw_invitation(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    if stale_form(request):
        return await routes_groups.moderation_page(request, {"form": STALE_FORM}, 400)
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    data = await form(request)
    try:
        await membership.withdraw_invitation(
            db(request),
            view,
            data.get("username", ""),
            actor_label=me.username,
            now=now(request),
            reason=data.get("reason", ""),
        )
    except Invalid as error:
        message = "; ".join(error.problems.values())
        return await routes_groups.moderation_page(request, {"username": message}, 400)
    except Conflict as error:
        return await routes_groups.moderation_page(request, {"username": str(error)}, 409)
    raise see_other(ids.group_moderation_path(view.group.slug))
