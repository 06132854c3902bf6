"""A member's notifications: the list, marking read, and which kinds they want."""

from __future__ import annotations

from aiohttp import web

from node import ids, notifications
from node.notifications import KIND_LABELS, Kind
from web.pages import db, form, now, render, require_member, row_id, see_other, viewer

PAGES_MAX = 10_000
# What a moderator's action is called on the notifications page (the moderator is not named).
ACTION_WORDS = {
    "remove_post": "A moderator removed your post",
    "lock_thread": "A moderator locked your thread to replies",
    "unlock_thread": "A moderator unlocked your thread",
    "warn_member": "The moderators sent you a warning",
    "ban": "A moderator banned you",
    "unban": "A moderator lifted your ban",
    "approve_post": "A moderator approved your post",
    "reject_post": "A moderator did not approve your post",
}


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.NOTIFICATIONS_PAGE, notifications_page)
    router.add_post(ids.NOTIFICATIONS_READ_PAGE, mark_all_read)
    router.add_post(ids.NOTIFICATION_READ_PAGE, mark_one_read)
    router.add_get(ids.ACCOUNT_NOTIFICATIONS_PAGE, preferences_page)
    router.add_post(ids.ACCOUNT_NOTIFICATIONS_PAGE, preferences_submit)
    router.add_get(ids.OLD_NOTICES_PAGE, old_notices)


def _page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= PAGES_MAX:
        raise web.HTTPBadRequest(text="The page number must be a whole number from 1.")
    return int(raw)


def link_of(item: notifications.Item) -> str:
    """Where a notification leads: the post, else the thread, else the group's page (its
    moderation queue for a request to join), else the notifications page."""
    if item.kind is Kind.JOIN_REQUEST and item.group is not None:
        return ids.group_moderation_path(item.group.slug)
    if item.post is not None:
        # The post's own address: it redirects to the page of the thread that shows it.
        return ids.post_path(item.post.id)
    if item.thread is not None:
        return ids.thread_path(item.thread.id)
    if item.group is not None:
        return ids.group_path(item.group.slug, item.group.domain)
    return ids.NOTIFICATIONS_PAGE


async def notifications_page(request: web.Request) -> web.Response:
    me = require_member(request)
    page = _page_number(request)
    items, more = await notifications.page_of(db(request), viewer(request), page)
    unread = await notifications.unread_count(db(request), me.id)
    context = {
        "items": [(item, link_of(item)) for item in items],
        "page": page,
        "more": more,
        "unread": unread,
        "action_words": ACTION_WORDS,
    }
    return render(request, "notifications.html", context)


async def mark_all_read(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    await notifications.mark_read(db(request), me.id, now(request))
    raise see_other(ids.NOTIFICATIONS_PAGE)


async def mark_one_read(request: web.Request) -> web.StreamResponse:
    me = require_member(request)
    notification_id = row_id(request, "notification_id")
    await notifications.mark_read(db(request), me.id, now(request), notification_id)
    raise see_other(ids.NOTIFICATIONS_PAGE)


async def preferences_page(request: web.Request, saved: bool = False) -> web.Response:
    me = require_member(request)
    off = await notifications.kinds_off(db(request), me.id)
    kinds = [(kind.value, label, kind not in off) for kind, label in KIND_LABELS.items()]
    return render(
        request,
        "account_notifications.html",
        {"kinds": kinds, "saved": saved, "page": ids.ACCOUNT_NOTIFICATIONS_PAGE},
    )


async def preferences_submit(request: web.Request) -> web.Response:
    me = require_member(request)
    data = await form(request)
    known = {kind.value for kind in Kind}
    chosen = data.getall("kind", [])
    if any(value not in known for value in chosen):
        raise web.HTTPBadRequest(text="Unknown kind of notification.")
    await notifications.choose_kinds(db(request), me.id, {Kind(value) for value in chosen})
    return await preferences_page(request, saved=True)


async def old_notices(request: web.Request) -> web.StreamResponse:
    """Moderators' warnings were on their own page; they are notifications now."""
    raise web.HTTPMovedPermanently(ids.NOTIFICATIONS_PAGE)
