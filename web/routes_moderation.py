"""Reports, the moderation queues and logs, and moderators' thread tools."""

from __future__ import annotations

from aiohttp import web

from node import groups, ids, membership, moderation, posts
from node.errors import Conflict, Forbidden, Invalid
from node.members import get_member
from node.paging import page_request
from node.policy import Action
from node.reports import ReportCategory
from web.appkeys import NODE
from web.pages import (
    STALE_FORM,
    db,
    form,
    now,
    render,
    require_member,
    rerenders_stale_forms,
    row_id,
    safe_next,
    see_other,
    stale_form,
    viewer,
)
from web.routes_threads import thread_page

CATEGORIES = [(category.value, moderation.CATEGORY_LABELS[category]) for category in ReportCategory]
REFUSED = (Invalid, Conflict, Forbidden)


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.POST_REPORT_PATH, post_report_form)
    router.add_post(ids.POST_REPORT_PATH, post_report_submit)
    router.add_get(ids.MEMBER_REPORT_PATH, member_report_form)
    router.add_post(ids.MEMBER_REPORT_PATH, member_report_submit)
    router.add_get(ids.MY_REPORTS_PAGE, my_reports)
    router.add_get(ids.GROUP_REPORTS_PATH, group_queue)
    router.add_get(ids.ADMIN_REPORTS_PAGE, node_queue)
    router.add_get(ids.REPORT_PAGE, report_page)
    router.add_post(ids.REPORT_ACT_PAGE, report_act)
    router.add_get(ids.GROUP_MODERATION_LOG_PATH, group_log)
    router.add_get(ids.ADMIN_AUDIT_PAGE, audit_log)
    router.add_get(ids.GROUP_BAN_CONFIRM_PATH, ban_form)
    router.add_post(ids.THREAD_LOCK_PATH, thread_lock)
    router.add_post(ids.THREAD_PIN_PATH, thread_pin)
    router.add_get(ids.POST_REVEAL_PATH, reveal_form)
    router.add_post(ids.POST_REVEAL_PATH, reveal_submit)


def _problems(error: Invalid | Conflict | Forbidden) -> dict[str, str]:
    return error.problems if isinstance(error, Invalid) else {"form": str(error)}


def _status(error: Exception) -> int:
    return 403 if isinstance(error, Forbidden) else 409 if isinstance(error, Conflict) else 400


# ------------------------------------------------------------------------------ reporting


async def post_report_form(request: web.Request) -> web.Response:
    require_member(request)
    found = await posts.post_in_context(db(request), request.match_info["post_id"], viewer(request))
    context = {"found": found, "person": None, "values": {}, "errors": {}, "categories": CATEGORIES}
    return render(request, "report_new.html", context)


@rerenders_stale_forms
async def post_report_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    post_id = request.match_info["post_id"]
    data = await form(request)
    values = {key: data.get(key, "") for key in ("category", "comment")}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    status = 400
    if not errors:
        try:
            await moderation.report_post(
                db(request), viewer(request), post_id=post_id, now=now(request),
                rates=request.app[NODE].settings.limits.rates, **values,
            )  # fmt: skip
        except REFUSED as error:
            errors, status = _problems(error), _status(error)
        else:
            return render(request, "report_filed.html", {"message": moderation.REPORT_THANKS})
    found = await posts.post_in_context(db(request), post_id, viewer(request))
    context = {"found": found, "person": None, "values": values, "errors": errors}
    return render(request, "report_new.html", context | {"categories": CATEGORIES}, status)


async def member_report_form(request: web.Request) -> web.Response:
    require_member(request)
    person = await get_member(db(request), request.match_info["username"])
    context = {
        "found": None,
        "person": person,
        "values": {},
        "errors": {},
        "categories": CATEGORIES,
    }
    return render(request, "report_new.html", context)


@rerenders_stale_forms
async def member_report_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    person = await get_member(db(request), request.match_info["username"])
    data = await form(request)
    values = {key: data.get(key, "") for key in ("category", "comment")}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    status = 400
    if not errors:
        try:
            await moderation.report_member(
                db(request), viewer(request), username=person.username, now=now(request),
                rates=request.app[NODE].settings.limits.rates, **values,
            )  # fmt: skip
        except REFUSED as error:
            errors, status = _problems(error), _status(error)
        else:
            return render(request, "report_filed.html", {"message": moderation.REPORT_THANKS})
    context = {"found": None, "person": person, "values": values, "errors": errors}
    return render(request, "report_new.html", context | {"categories": CATEGORIES}, status)


async def my_reports(request: web.Request) -> web.Response:
    require_member(request)
    wanted = page_request(request.query, moderation.MY_REPORT_KEYS)
    mine = await moderation.reports_of(db(request), viewer(request), wanted)
    return render(request, "reports_mine.html", {"mine": mine})


# -------------------------------------------------------------------------------- queues


async def group_queue(request: web.Request) -> web.Response:
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    if not view.may(Action.MODERATE):  # before the cursor: a member's answer stays a 403
        raise Forbidden(moderation.QUEUE_FORBIDDEN)
    wanted = page_request(request.query, moderation.QUEUE_KEYS)
    entries = await moderation.group_queue(db(request), view, wanted)
    context = {"view": view, "entries": entries, "now": now(request)}
    return render(request, "reports_queue.html", context)


def _require_admin(request: web.Request) -> None:
    if not viewer(request).is_admin:
        raise web.HTTPNotFound()  # the page's existence is nobody else's business


async def node_queue(request: web.Request) -> web.Response:
    _require_admin(request)
    wanted = page_request(request.query, moderation.QUEUE_KEYS)
    entries = await moderation.node_queue(db(request), viewer(request), wanted)
    return render(
        request, "reports_queue.html", {"view": None, "entries": entries, "now": now(request)}
    )


async def report_page(
    request: web.Request,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    require_member(request)
    report_id = row_id(request, "report_id")
    entry = await moderation.review(db(request), viewer(request), report_id)
    context = {
        "entry": entry,
        "report_id": report_id,
        "values": values or {},
        "errors": errors or {},
        "now": now(request),
        "back": safe_next(request.query.get("back") or (values or {}).get("back")),
        "actions": _actions_for(entry),
    }
    return render(request, "report_review.html", context, status)


def _actions_for(entry: moderation.QueueEntry) -> list[tuple[str, str]]:
    """The choices a report offers, in the order a moderator weighs them."""
    choices = [(moderation.QueueAction.DISMISS, "Dismiss: nothing to do")]
    if entry.post is not None and entry.post.deleted_at is None:
        choices.append((moderation.QueueAction.REMOVE_POST, "Remove the post"))
    if entry.thread is not None and entry.thread.locked_at is None:
        choices.append((moderation.QueueAction.LOCK_THREAD, "Lock the thread to replies"))
    if entry.member is not None:
        if not entry.member.domain:
            choices.append((moderation.QueueAction.WARN_MEMBER, "Warn the member"))
        if entry.post is not None:
            choices.append((moderation.QueueAction.BAN, "Ban the member from the group"))
        if not entry.member.domain:
            choices.append((moderation.QueueAction.SUSPEND, "Suspend the account (admins)"))
    return [(str(value), label) for value, label in choices]


@rerenders_stale_forms
async def report_act(request: web.Request) -> web.StreamResponse:
    require_member(request)
    report_id = row_id(request, "report_id")
    data = await form(request)
    values = {key: data.get(key, "") for key in ("action", "reason", "days", "back")}
    if stale_form(request):
        return await report_page(request, values, {"form": STALE_FORM}, 400)
    try:
        await moderation.act_on_report(
            db(request),
            viewer(request),
            report_id,
            action=values["action"],
            reason=values["reason"],
            confirmed=data.get("confirm") == "yes",
            ban_days=values["days"],
            now=now(request),
        )
    except REFUSED as error:
        return await report_page(request, values, _problems(error), _status(error))
    raise see_other(safe_next(values["back"], ids.report_page(report_id)))


# ---------------------------------------------------------------------------------- logs


async def group_log(request: web.Request) -> web.Response:
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    if not view.may(Action.MODERATE):  # before the cursor, as the queue's
        raise Forbidden(moderation.LOG_FORBIDDEN)
    wanted = page_request(request.query, moderation.LOG_KEYS)
    lines = await moderation.group_log(db(request), view, wanted)
    return render(request, "moderation_log.html", {"view": view, "lines": lines})


async def audit_log(request: web.Request) -> web.Response:
    _require_admin(request)
    wanted = page_request(request.query, moderation.LOG_KEYS)
    lines = await moderation.audit_log(db(request), viewer(request), wanted)
    return render(request, "moderation_log.html", {"view": None, "lines": lines})


# ------------------------------------------------------------------- moderators' tools


async def ban_form(request: web.Request) -> web.Response:
    """Ban asks first: whom, why, for how long, and a ticked confirmation."""
    view = await groups.view_group(db(request), request.match_info["slug"], viewer(request))
    if not view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can ban people.")
    person = await membership.find_target(db(request), request.query.get("username", "")[:300])
    values = {"username": request.query.get("username", "")[:300]}
    context = {"view": view, "person": person, "values": values, "errors": {}}
    return render(request, "ban_confirm.html", context)


async def _thread_tool(request: web.Request, field: str) -> web.StreamResponse:
    require_member(request)
    thread_id = request.match_info["thread_id"]
    data = await form(request)
    on = data.get(field) == "yes"
    session, moment, who = db(request), now(request), viewer(request)
    reason = data.get("reason", "")
    try:
        if field == "locked":
            await moderation.set_thread_locked(
                session, who, thread_id=thread_id, locked=on, reason=reason, now=moment
            )
        else:
            await moderation.set_thread_pinned(
                session, who, thread_id=thread_id, pinned=on, reason=reason, now=moment
            )
    except Invalid as error:
        return await thread_page(request, None, {"moderate": str(error)}, 400)
    raise see_other(ids.thread_path(thread_id))


async def thread_lock(request: web.Request) -> web.StreamResponse:
    return await _thread_tool(request, "locked")


async def thread_pin(request: web.Request) -> web.StreamResponse:
    return await _thread_tool(request, "pinned")


async def _anonymous_post_to_moderate(request: web.Request) -> posts.PostInContext:
    found = await posts.post_in_context(db(request), request.match_info["post_id"], viewer(request))
    if not found.view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can see who wrote an anonymous post.")
    if not found.post.anonymous:
        raise Conflict("This post is not anonymous: its author is named with it.")
    return found


async def reveal_form(request: web.Request) -> web.Response:
    """A moderator asks who wrote an anonymous post: a reason first, for the log."""
    require_member(request)
    found = await _anonymous_post_to_moderate(request)
    context = {"found": found, "author": None, "values": {}, "errors": {}}
    return render(request, "post_reveal.html", context)


@rerenders_stale_forms
async def reveal_submit(request: web.Request) -> web.StreamResponse:
    """Shows the author to this moderator, this once; the log records it."""
    require_member(request)
    data = await form(request)
    values = {"reason": data.get("reason", "")}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    if not errors:
        try:
            revealed = await moderation.reveal_author(
                db(request),
                viewer(request),
                post_id=request.match_info["post_id"],
                reason=values["reason"],
                now=now(request),
            )
        except Invalid as error:
            errors = error.problems
        else:
            context = {"found": revealed.found, "author": revealed.author, "values": values}
            return render(request, "post_reveal.html", context | {"errors": {}})
    found = await _anonymous_post_to_moderate(request)
    context = {"found": found, "author": None, "values": values, "errors": errors}
    return render(request, "post_reveal.html", context, 400)
