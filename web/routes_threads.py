"""Threads and posts: start, read, reply, edit, delete, mark helpful."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import MultiDict

from node import crisis, groups, ids, moderation, polls, posts, professionals, qa
from node.errors import Conflict, Forbidden, Invalid
from node.ids import thread_path
from node.personal_details import Detail, personal_details
from node.policy import Action
from node.poll_drafts import MAX_OPTIONS, PollDraft
from node.storage.models import CrisisResource
from node.throttles import Throttled
from web.pages import (
    STALE_FORM,
    crisis_notices,
    crisis_resources,
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
from web.routes_activitypub import post_document, thread_document, wants_activity_json
from web.routes_feed import reading


def register(router: web.UrlDispatcher) -> None:
    router.add_get(ids.GROUP_NEW_THREAD_PATH, new_thread_form)
    router.add_post(ids.GROUP_NEW_THREAD_PATH, new_thread_submit)
    router.add_get(ids.THREAD_PATH, thread_page)
    router.add_post(ids.THREAD_REPLY_PATH, reply_submit)
    router.add_post(ids.THREAD_REOPEN_PATH, reopen_submit)
    router.add_post(ids.THREAD_VOTE_PATH, vote_submit)
    router.add_get(ids.POST_PATH, post_link)
    router.add_get(ids.POST_EDIT_PATH, edit_form)
    router.add_post(ids.POST_EDIT_PATH, edit_submit)
    router.add_get(ids.POST_DELETE_PATH, delete_form)
    router.add_post(ids.POST_DELETE_PATH, delete_submit)
    router.add_post(ids.POST_HELPFUL_PATH, helpful_submit)


async def post_anchor(request: web.Request, found: posts.PostInContext) -> str:
    """Where the thread shows this post to the viewer: the page it is on, at its anchor."""
    page = await posts.page_of(db(request), found)
    return ids.post_anchor_path(found.thread.id, found.post.id, page)


def requested_page(request: web.Request) -> int:
    """The page of the thread the address asks for (1 without one); 400 for no number."""
    raw = request.query.get(ids.PAGE_PARAMETER)
    if raw is None:
        return 1
    problem = posts.page_problem(raw)
    if problem is not None:
        raise Invalid({"page": problem})
    return int(raw)


REFUSED = (Invalid, Conflict, Forbidden, Throttled)


def _problems(error: Invalid | Conflict | Forbidden | Throttled) -> dict[str, str]:
    return error.problems if isinstance(error, Invalid) else {"form": str(error)}


def _status(error: Exception) -> int:
    if isinstance(error, Throttled):
        return 429
    return 403 if isinstance(error, Forbidden) else 409 if isinstance(error, Conflict) else 400


# The form fields saying that the author has seen the crisis resources, and the warning about
# personal details, for this draft: one each, so a draft changed after one warning still gets
# the other.
CRISIS_SEEN = "crisis_seen"
DETAILS_SEEN = "details_seen"
# The form field (a checkbox) asking to post anonymously.
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class CrisisPrompt:
    resources: list[CrisisResource]
    notices: crisis.Notices


async def crisis_prompt(
    request: web.Request, data: MultiDict[str], *texts: str
) -> CrisisPrompt | None:
    """The resources to show before publishing, once: when the draft says a crisis phrase and
    its author has not been shown them yet. Nothing is ever refused for it."""
    session = db(request)
    if data.get(CRISIS_SEEN) == "yes" or not await crisis.draft_matches(session, *texts):
        return None
    return CrisisPrompt(await crisis_resources(request), await crisis_notices(request))


@dataclass(frozen=True)
class BeforePublishing:
    """What to show once before a draft is published, if anything; never a refusal."""

    crisis: CrisisPrompt | None
    details: list[Detail]

    @property
    def shown(self) -> bool:
        return self.crisis is not None or bool(self.details)


async def before_publishing(
    request: web.Request, data: MultiDict[str], *texts: str
) -> BeforePublishing:
    """The crisis resources and the personal-details warning, each shown once per draft: the
    same re-rendered form carries both, and "Publish anyway" publishes."""
    details = [] if data.get(DETAILS_SEEN) == "yes" else personal_details(*texts)
    return BeforePublishing(await crisis_prompt(request, data, *texts), details)


def _anonymous(values: dict[str, str]) -> bool:
    return values[ANONYMOUS] == "yes"


# The poll's fields on the new-thread form: one text field per option, then its settings.
POLL_OPTION_FIELDS = tuple(f"poll_option_{number}" for number in range(1, MAX_OPTIONS + 1))
POLL_FIELDS = (*POLL_OPTION_FIELDS, "poll_multiple", "poll_changeable", "poll_closes")


def _poll_draft(values: dict[str, str]) -> PollDraft:
    return PollDraft(
        tuple(values[name] for name in POLL_OPTION_FIELDS),
        multiple=values["poll_multiple"] == "yes",
        changeable=values["poll_changeable"] == "yes",
        closes=values["poll_closes"],
    )


def _with_wait(response: web.Response, error: Exception | None) -> web.Response:
    """The form again, with its text kept; a post over the limit says when to try again."""
    if isinstance(error, Throttled):
        retry_after(response, error.wait)
    return response


async def new_thread_form(request: web.Request) -> web.Response:
    require_member(request)
    view = await groups.view_group(
        db(request), request.match_info["slug"], viewer(request), need=Action.READ
    )
    return render(request, "thread_new.html", {"view": view, "values": {}, "errors": {}})


@rerenders_stale_forms
async def new_thread_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    view = await groups.view_group(
        db(request), request.match_info["slug"], viewer(request), need=Action.READ
    )
    data = await form(request)
    fields = ("title", "body", "content_warning", CRISIS_SEEN, DETAILS_SEEN, ANONYMOUS)
    values = {key: data.get(key, "") for key in fields + POLL_FIELDS}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    status, refused = 400, None
    if not errors:
        texts = (values["title"], values["body"], values["content_warning"])
        checks = await before_publishing(request, data, *texts)
        if checks.shown:
            context = {"view": view, "values": values, "errors": errors, "checks": checks}
            return render(request, "thread_new.html", context)
        try:
            thread = await posts.start_thread(
                db(request),
                node_of(request).settings.limits,
                view,
                title=values["title"],
                draft=posts.Draft(values["body"], values["content_warning"]),
                now=now(request),
                anonymous=_anonymous(values),
                poll=_poll_draft(values),
            )
        except REFUSED as error:
            errors, status, refused = _problems(error), _status(error), error
        else:
            raise see_other(thread_path(thread.id))
    context = {"view": view, "values": values, "errors": errors}
    return _with_wait(render(request, "thread_new.html", context, status), refused)


async def thread_page(
    request: web.Request,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    checks: BeforePublishing | None = None,
) -> web.Response:
    if wants_activity_json(request) and request.method == "GET":
        return await thread_document(request, request.match_info["thread_id"])
    moment = now(request)
    page = requested_page(request)
    thread = await posts.view_thread(
        db(request), request.match_info["thread_id"], viewer(request), moment, page
    )
    poll = None
    if thread.has_poll and thread.page == 1:
        poll = await polls.poll_view(db(request), thread.thread, thread.group, moment)
    replying_to = (values or {}).get("parent") or request.query.get("reply_to", "")
    # The authors' verifications came with the posts: their badges need no query of their own.
    verifications = [
        (item.verification, item.author.domain) for item in thread.posts if item.verification
    ]
    context = {
        "thread": thread,
        "values": values or {},
        "errors": errors or {},
        "replying_to": next((p for p in thread.posts if p.post.id == replying_to), None),
        "checks": checks,
        "badges": await professionals.badges_of_rows(db(request), verifications, moment),
        "qa": await qa.qa_page(db(request), thread, moment) if thread.qa else None,
        "poll": poll,
        "subscription": await reading(request, thread),
        # Links on the page that reload it (Reply, the reply form) stay on this page.
        "this_page": ids.thread_page_path(thread.thread.id, thread.page),
        "page_query": f"?{ids.PAGE_PARAMETER}={thread.page}" if thread.page > 1 else "",
        # What a page holds (for the numbers of its list): posts, or a Q&A's questions.
        "page_size": posts.QA_PAGE_QUESTIONS if thread.qa else posts.THREAD_PAGE_SIZE,
    }
    return render_group_page(request, thread.group.group, "thread.html", context, status)


@rerenders_stale_forms
async def reply_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    data = await form(request)
    fields = ("body", "content_warning", "parent", CRISIS_SEEN, DETAILS_SEEN, ANONYMOUS)
    values = {key: data.get(key, "") for key in fields}
    if stale_form(request):
        return await thread_page(request, values, {"form": STALE_FORM}, 400)
    checks = await before_publishing(request, data, values["body"], values["content_warning"])
    if checks.shown:
        return await thread_page(request, values, checks=checks)
    try:
        post = await posts.reply(
            db(request),
            node_of(request).settings.limits,
            viewer(request),
            thread_id=request.match_info["thread_id"],
            parent_id=values["parent"] or None,
            draft=posts.Draft(values["body"], values["content_warning"]),
            now=now(request),
            anonymous=_anonymous(values),
        )
    except REFUSED as error:
        page = await thread_page(request, values, _problems(error), _status(error))
        return _with_wait(page, error)
    found = await posts.post_in_context(db(request), post.id, viewer(request))
    raise see_other(await post_anchor(request, found))


async def reopen_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    thread_id = request.match_info["thread_id"]
    try:
        await posts.reopen_thread(
            db(request), viewer(request), thread_id=thread_id, now=now(request)
        )
    except (Conflict, Forbidden) as error:
        return await thread_page(request, None, _problems(error), _status(error))
    raise see_other(thread_path(thread_id))


@rerenders_stale_forms
async def vote_submit(request: web.Request) -> web.StreamResponse:
    """A vote (or a changed vote) in the thread's poll; a refusal is shown on the thread."""
    require_member(request)
    data = await form(request)
    if stale_form(request):
        return await thread_page(request, None, {"poll": STALE_FORM}, 400)
    chosen: list[int] = []
    for raw in data.getall("option", []):
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
            return await thread_page(request, None, {"poll": polls.UNKNOWN_OPTION}, 400)
        chosen.append(int(raw))
    thread_id = request.match_info["thread_id"]
    try:
        await polls.vote(
            db(request), viewer(request), thread_id=thread_id, option_ids=chosen, now=now(request)
        )
    except REFUSED as error:
        message = " ".join(_problems(error).values())
        return await thread_page(request, None, {"poll": message}, _status(error))
    raise see_other(f"{thread_path(thread_id)}#poll")


async def post_link(request: web.Request) -> web.StreamResponse:
    if wants_activity_json(request):
        return await post_document(request, request.match_info["post_id"])
    found = await posts.post_in_context(db(request), request.match_info["post_id"], viewer(request))
    raise see_other(await post_anchor(request, found))


async def edit_form(request: web.Request) -> web.Response:
    require_member(request)
    found = await posts.post_in_context(db(request), request.match_info["post_id"], viewer(request))
    values = {
        "title": found.thread.title,
        "body": found.post.source,
        "content_warning": found.post.content_warning,
    }
    return render(request, "post_edit.html", {"found": found, "values": values, "errors": {}})


@rerenders_stale_forms
async def edit_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    post_id = request.match_info["post_id"]
    found = await posts.post_in_context(db(request), post_id, viewer(request))
    data = await form(request)
    values = {key: data.get(key, "") for key in ("title", "body", "content_warning")}
    errors: dict[str, str] = {"form": STALE_FORM} if stale_form(request) else {}
    status = 400
    if not errors:
        try:
            await posts.edit_post(
                db(request),
                node_of(request).settings.limits,
                viewer(request),
                post_id=post_id,
                draft=posts.Draft(values["body"], values["content_warning"]),
                title=values["title"] if found.post.parent_id is None else None,
                now=now(request),
            )
        except REFUSED as error:
            errors, status = _problems(error), _status(error)
        else:
            raise see_other(await post_anchor(request, found))
    context = {"found": found, "values": values, "errors": errors}
    return render(request, "post_edit.html", context, status)


async def delete_form(
    request: web.Request, values: dict[str, str] | None = None, errors: dict[str, str] | None = None
) -> web.Response:
    require_member(request)
    found = await posts.post_in_context(
        db(request), request.match_info["post_id"], viewer(request), authors_own=True
    )
    context = {
        "found": found,
        "removal": found.post.author_id != viewer(request).member_id,
        "values": values or {},
        "errors": errors or {},
    }
    return render(request, "post_delete.html", context, 400 if errors else 200)


@rerenders_stale_forms
async def delete_submit(request: web.Request) -> web.StreamResponse:
    """An author deletes their post with one confirmation; a moderator removing someone
    else's also gives a reason (for the log and the removal's Delete) and ticks a box."""
    require_member(request)
    post_id, session, who = request.match_info["post_id"], db(request), viewer(request)
    data = await form(request)
    if stale_form(request):
        return await delete_form(request, {}, {"form": STALE_FORM})
    found = await posts.post_in_context(session, post_id, who, authors_own=True)
    if found.post.author_id == who.member_id:
        found = await posts.delete_post(session, who, post_id=post_id, now=now(request))
    else:
        if not found.view.may(Action.MODERATE):
            raise Forbidden("Only the author or a moderator can delete this post.")
        values = {"reason": data.get("reason", "")}
        problems = {} if data.get("confirm") == "yes" else {"confirm": moderation.CONFIRM_PROBLEM}
        try:
            if problems:
                raise Invalid(problems)
            found = await moderation.remove_post(
                session, who, post_id=post_id, reason=values["reason"], now=now(request)
            )
        except Invalid as error:
            if not values["reason"].strip():
                problems["reason"] = "Give a reason: it goes in the moderation log."
            return await delete_form(request, values, problems | error.problems)
    if not found.view.may(Action.READ):
        raise see_other("/")
    raise see_other(await post_anchor(request, found))


async def helpful_submit(request: web.Request) -> web.StreamResponse:
    require_member(request)
    data = await form(request)
    found = await posts.set_helpful(
        db(request),
        viewer(request),
        post_id=request.match_info["post_id"],
        helpful=data.get("helpful") == "yes",
        now=now(request),
    )
    raise see_other(await post_anchor(request, found))
