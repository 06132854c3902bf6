"""The member's feed, the read marker a thread page moves, and watching or muting a thread."""

from __future__ import annotations

from aiohttp import web

from node import ids, posts, thread_lists, thread_reads
from node.paging import page_request
from node.thread_reads import Subscription
from web.pages import db, form, node_of, now, render, require_member, see_other, viewer


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.FEED_PAGE, feed_page)
    router.add_post(ids.THREAD_SUBSCRIPTION_PATH, subscription_submit)


async def feed_page(request: web.Request) -> web.Response:
    require_member(request)
    wanted = page_request(request.query, thread_lists.FEED_KEYS)
    page = await thread_lists.feed(db(request), viewer(request), wanted)
    return render(request, "feed.html", {"page": page})


async def reading(request: web.Request, thread: posts.ThreadView) -> Subscription | None:
    """For a signed-in member on a thread page: move their read marker up to the newest
    post the page shows (in a short write transaction of its own, only when it moves: a
    GET's own transaction is a reading one), and give their watch or mute choice."""
    member_id = viewer(request).member_id
    if member_id is None:
        return None
    row = await thread_reads.reader_row(db(request), member_id, thread.thread.id)
    newest = max((item.post.created_at for item in thread.posts), default=None)
    marker = row.read_up_to if row is not None else None
    # Only a GET moves it: a form shown again after a refused POST is inside that POST's
    # transaction (SQLite's write lock), which a second transaction would wait on.
    if request.method == "GET" and newest is not None and (marker is None or marker < newest):
        node = node_of(request)
        async with node.transaction() as session:
            await thread_reads.mark_read(session, member_id, thread.thread.id, newest, now(request))
    return None if row is None else row.subscription  # type: ignore[return-value]


async def subscription_submit(request: web.Request) -> web.StreamResponse:
    """Watch a thread, mute it (it leaves the feed), or neither. CSRF is checked by the
    middleware, as for every form; a stale form changes nothing and shows the thread."""
    require_member(request)
    thread_id = request.match_info["thread_id"]
    data = await form(request)
    choice = thread_reads.parse_subscription(data.get("subscription", ""))
    # The thread, as this member may read it (NotFound otherwise, as for a missing one).
    found = await posts.opening_post_in_context(db(request), thread_id, viewer(request))
    member_id = viewer(request).member_id
    assert member_id is not None
    await thread_reads.set_subscription(
        db(request), member_id, found.thread.id, choice, now(request)
    )
    raise see_other(f"{ids.thread_path(found.thread.id)}#subscription")
