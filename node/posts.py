"""Threads, posts and helpful marks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    false,
    func,
    insert,
    inspect,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from node import mentions, paging, rate_limits
from node.config import Limits
from node.crisis import WrittenPost, report_crisis_posts
from node.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from node.events import (
    HelpfulChanged,
    Origin,
    PostDeleted,
    PostEdited,
    PostReplied,
    ThreadLockChanged,
    ThreadPinChanged,
    ThreadStarted,
    record,
)
from node.groups import (
    GroupView,
    check_visible,
    shared_with_host,
    standing_of_row,
    standings_of,
    tags_in_row,
    unchecked_view_of,
    view_of_row,
    view_with_tags,
    visible_groups,
)
from node.ids import new_object_id
from node.modlog import ModAction, log_action, required_reason
from node.paging import FIRST_PAGE, KeyKind, Page, PageRequest, beyond, order
from node.policy import (
    NO_STANDING,
    PARTNERS,
    Action,
    Standing,
    Viewer,
    may,
    may_delete_post,
    may_edit_post,
    may_post_anonymously,
    names_author,
    shown_by_federation_policy,
)
from node.poll_drafts import PollDraft, poll_problems, store_poll
from node.qa_windows import QaWindow, refusal, window_of_row, windows_of
from node.search_index import index_posts, unindex_posts
from node.storage.engine import note_erasure
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Member,
    Poll,
    Post,
    ProfessionalVerification,
    QaSession,
    Reaction,
    Thread,
)
from node.text import neutralise, normalise_line_endings, render_markdown, sanitise_html
from node.validation import collect, text_problem

HELPFUL = "helpful"
POLLS_HERE_ONLY = (
    "Polls can be added only to threads in groups of this node: this group is on another server."
)
DELETED_TITLE = "(deleted)"
THREAD_NOT_FOUND = "There is no thread at this address."
THREAD_CLOSED = (
    "This thread is closed to replies: its opening post was deleted. A moderator can reopen it."
)
POST_NOT_FOUND = "There is no post at this address."
THREAD_HELD = "This thread waits for a moderator's approval; replies can follow once approved."
PARENT_HELD = "The post you are replying to waits for a moderator's approval."
POST_HELD = "This post waits for a moderator's approval."
APPROVED = "approved"
THREADS_BY_MODERATORS = "Only moderators can start threads in this group."
ANONYMOUS_REFUSED = (
    "Anonymous posting is only for private groups of this node: in a public group everyone, "
    "on other servers too, sees who wrote a post."
)


@dataclass(frozen=True)
class Draft:
    """What a person typed for a post; kept so a form can be shown again unchanged.

    A post from another server brings its HTML (sanitised here, never trusted) and its id;
    `body` is then its Markdown source, or its text.
    """

    body: str
    content_warning: str = ""
    html: str | None = None
    ap_id: str | None = None
    # Members of this node that another server's Mention tags name (their usernames);
    # what a member here writes is searched for `@name` instead.
    mentions: tuple[str, ...] = ()

    def cleaned(self) -> Draft:
        return replace(
            self,
            body=neutralise(normalise_line_endings(self.body)).strip(),
            content_warning=neutralise(self.content_warning),
        )

    def rendered(self, known: Known | None = None) -> str:
        if self.html is None:
            return mentions.link_mentions(render_markdown(self.body), known or {})
        return neutralise(sanitise_html(self.html))  # entities are characters by now

    def mentioned(self, known: Known) -> list[int]:
        """The member ids this post mentions, of those `known` (from `_known`)."""
        if self.html is None:
            return mentions.mentioned_in(self.body, known)
        found = (known.get((name.lower(), "")) for name in self.mentions)
        return list(dict.fromkeys(person.member_id for person in found if person is not None))


Known = dict[tuple[str, str], mentions.Mentioned]


async def _known(session: AsyncSession, drafts: Sequence[Draft]) -> Known:
    """Everyone the drafts mention that this node knows: one query (nothing is fetched)."""
    return await mentions.resolve(
        session,
        [draft.body for draft in drafts if draft.html is None],
        [name for draft in drafts if draft.html is not None for name in draft.mentions],
    )


def vouched_by_remote_group(view: GroupView, announced: bool) -> bool:
    """A remote group's Announce vouches for what happens in it: the group, not this node,
    decides who may post there. A local group is never vouched for from outside."""
    return _vouched(view.group, announced)


def _vouched(group: ConditionGroup, announced: bool) -> bool:
    if announced and group.domain == LOCAL:
        raise Forbidden("Only a remote group can announce activity in itself.")
    return announced


def _draft_problems(draft: Draft, limits: Limits) -> dict[str, str]:
    return collect(
        body=text_problem(draft.body, "The post", limits.post_max),
        content_warning=text_problem(
            draft.content_warning, "The content warning", limits.content_warning_max, False
        ),
    )


def _new_post_row(
    thread_id: str,
    parent_id: str | None,
    author_id: int,
    draft: Draft,
    now: datetime,
    anonymous: bool = False,
    known: Known | None = None,
) -> dict[str, object]:
    return {
        "id": new_object_id(),
        "thread_id": thread_id,
        "parent_id": parent_id,
        "author_id": author_id,
        "source": draft.body,
        "content_html": draft.rendered(known),
        "content_warning": draft.content_warning,
        "created_at": now,
        "edited_at": None,
        "deleted_at": None,
        "held_at": None,
        "ap_id": draft.ap_id,
        "anonymous": anonymous,
    }


def _new_post(
    thread_id: str,
    parent_id: str | None,
    author_id: int,
    draft: Draft,
    now: datetime,
    anonymous: bool = False,
    known: Known | None = None,
) -> Post:
    return Post(**_new_post_row(thread_id, parent_id, author_id, draft, now, anonymous, known))


def anonymity_offered(group: ConditionGroup) -> bool:
    """Whether a member may post anonymously in `group` (the forms offer it only there)."""
    return may_post_anonymously(group.visibility, group.domain == LOCAL)


def _anonymous_problem(group: ConditionGroup, anonymous: bool) -> str | None:
    return ANONYMOUS_REFUSED if anonymous and not anonymity_offered(group) else None


async def start_thread(
    session: AsyncSession,
    limits: Limits,
    view: GroupView,
    *,
    title: str,
    draft: Draft,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
    anonymous: bool = False,
    poll: PollDraft | None = None,
) -> Thread:
    """Start a thread; `anonymous` (private groups of this node only) names no author;
    `poll` (a draft from the form) gives it a poll, checked with the rest."""
    vouched = vouched_by_remote_group(view, announced)
    if not vouched and not view.may(Action.POST):
        raise Forbidden("Only active members of this group can start threads. Join it first.")
    if not vouched and view.group.posting_restricted_to_mods and not _moderates_here(view):
        # Lemmy's `postingRestrictedToMods`: ours, and a remote group's as it publishes it.
        raise Forbidden(THREADS_BY_MODERATORS)
    title = neutralise(title, name=True)
    draft = draft.cleaned()
    problems = collect(
        title=text_problem(title, "The title", limits.title_max),
        anonymous=_anonymous_problem(view.group, anonymous),
    )
    problems |= _draft_problems(draft, limits)
    poll = poll.cleaned() if poll is not None and poll.wanted else None
    if poll is not None:
        problems |= poll_problems(poll, now)
        if view.group.domain != LOCAL:
            # A poll is counted by its group's node; another server's group counts its own.
            problems["poll_options"] = POLLS_HERE_ONLY
    if problems:
        raise Invalid(problems)
    assert view.viewer.member_id is not None
    await rate_limits.count_post(session, limits.rates, view, origin, now)
    held = await _holds(session, view.group, view.viewer, view.standing, view.viewer.member_id)
    thread = Thread(
        id=new_object_id(),
        group_id=view.group.id,
        title=title,
        author_id=view.viewer.member_id,
        created_at=now,
        last_activity_at=now,
        ap_id=draft.ap_id,
    )
    session.add(thread)
    await session.flush()
    if poll is not None:
        await store_poll(session, thread.id, poll, now)
    known = await _known(session, [draft])
    post = _new_post(thread.id, None, view.viewer.member_id, draft, now, anonymous, known)
    post.held_at = now if held else None
    session.add(post)
    await session.flush()
    # Indexed now, held or not: a search finds it only once it is published (node/search.py).
    await index_posts(session, [post.id])
    await mentions.store(session, {post.id: draft.mentioned(known)})
    if held:
        # Seen by its author and the moderators only, and published when approved.
        return thread
    view.group.last_activity_at = now
    await session.flush()
    record(session, ThreadStarted(thread.id, post.id, origin))
    texts = (title, draft.body, draft.content_warning)
    await report_crisis_posts(session, [_written(post.id, view.group, origin, texts)], now)
    return thread


async def _holds(
    session: AsyncSession, group: ConditionGroup, viewer: Viewer, standing: Standing, author_id: int
) -> bool:
    """Whether a new post by `author_id` waits for a moderator: in a local group that holds
    first posts, until its author has that many posts approved there. Moderators are never
    held; a remote group decides for itself what it holds."""
    if not _group_holds(group) or may(Action.MODERATE, viewer, group.visibility, standing):
        return False
    counts = await _approved_counts(session, {(group.id, author_id)})
    return counts.get((group.id, author_id), 0) < group.hold_first_posts


def _group_holds(group: ConditionGroup) -> bool:
    return group.domain == LOCAL and group.hold_first_posts > 0


async def _approved_counts(
    session: AsyncSession, pairs: set[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """How many posts each (group id, author id) has had published (never held, or approved;
    deleted ones count: they were published)."""
    if not pairs:
        return {}
    rows = await session.execute(
        select(Thread.group_id, Post.author_id, func.count())
        .join(Thread, Thread.id == Post.thread_id)
        .where(
            Thread.group_id.in_(sorted({group_id for group_id, _ in pairs})),
            Post.author_id.in_(sorted({author_id for _, author_id in pairs})),
            Post.held_at.is_(None),
        )
        .group_by(Thread.group_id, Post.author_id)
    )
    return {(group_id, author_id): int(count) for group_id, author_id, count in rows.all()}


def _sees_held(view: GroupView, author_id: int) -> bool:
    """A held post is seen by its author and the group's moderators, by nobody else."""
    return view.viewer.member_id == author_id or view.may(Action.MODERATE)


def _moderates_here(view: GroupView) -> bool:
    """A moderator of the group; our admins moderate our groups, not another server's."""
    return view.standing.moderates or (view.group.domain == LOCAL and view.may(Action.MODERATE))


@dataclass(frozen=True)
class PostInContext:
    post: Post
    thread: Thread
    view: GroupView


async def _thread_in_context(
    session: AsyncSession, thread_id: str, viewer: Viewer
) -> tuple[Thread, GroupView]:
    """A thread the viewer may read, decided in its one query: a private thread costs what a
    missing one costs, and answers the same NotFound."""
    thread, view, _ = await _thread_in_context_with(session, thread_id, viewer)
    return thread, view


async def _thread_in_context_with(
    session: AsyncSession,
    thread_id: str,
    viewer: Viewer,
    widen: Callable[[Select[Any]], Select[Any]] | None = None,
) -> tuple[Thread, GroupView, tuple[Any, ...]]:
    """`_thread_in_context`; `widen` adds columns about the thread, read in the same query."""
    opening_held = (
        select(Post.held_at)
        .where(Post.thread_id == Thread.id, Post.parent_id.is_(None))
        .correlate(Thread)
        .scalar_subquery()
    )
    statement = (
        visible_groups(viewer, Action.READ)
        .join(Thread, Thread.group_id == ConditionGroup.id)
        .join(Member, Member.id == Thread.author_id)
        .add_columns(Thread, opening_held, tags_in_row())
        .where(Thread.id == thread_id, shown_by_federation_policy(Member.federation_hidden))
    )
    if widen is not None:
        statement = widen(statement)
    row = (await session.execute(statement)).first()
    if row is None:
        raise NotFound(THREAD_NOT_FOUND)
    group, state, role, thread, held_at, tags, *extras = row
    view = view_with_tags(group, standing_of_row(state, role), viewer, tags)
    if held_at is not None and not _sees_held(view, thread.author_id):
        raise NotFound(THREAD_NOT_FOUND)
    return thread, view, tuple(extras)


def _check_readable_thread(group: ConditionGroup, standing: Standing, viewer: Viewer) -> None:
    """What `_thread_in_context` decides of a thread in `group`, from rows already loaded."""
    try:
        check_visible(group, standing, viewer, Action.READ)
    except NotFound:
        raise NotFound(THREAD_NOT_FOUND) from None


async def post_in_context(
    session: AsyncSession,
    post_id: str,
    viewer: Viewer,
    authors_own: bool = False,
    partner_host: str = "",
) -> PostInContext:
    """A post with its thread and group, or NotFound if the viewer may not read it.

    With `authors_own`, the post's author gets it even where they can no longer read the group
    (after leaving, or a ban): they may still delete what they wrote. With `partner_host` (a
    verified signer's host), a post of a partner group shared with that host is found too.
    """
    return await _post_where(session, Post.id == post_id, viewer, authors_own, partner_host)


async def opening_post_in_context(
    session: AsyncSession, thread_id: str, viewer: Viewer, partner_host: str = ""
) -> PostInContext:
    """A thread's opening post, as `post_in_context` gives it."""
    where = (Post.thread_id == thread_id) & Post.parent_id.is_(None)
    return await _post_where(session, where, viewer, False, partner_host)


async def _post_where(
    session: AsyncSession,
    where: ColumnElement[bool],
    viewer: Viewer,
    authors_own: bool,
    partner_host: str = "",
) -> PostInContext:
    """The post, thread, group and standing in one query that lets through only what the viewer
    may read (or, with `authors_own`, wrote; or, with `partner_host`, what a partner group
    shares with that host): a private post costs what a missing one costs."""
    own = authors_own and viewer.member_id is not None
    thread_author = aliased(Member)
    or_else = Post.author_id == viewer.member_id if own else None
    if partner_host:
        shared = shared_with_host(partner_host)
        or_else = shared if or_else is None else or_(or_else, shared)
    row = (
        await session.execute(
            visible_groups(viewer, Action.READ, or_else)
            .join(Thread, Thread.group_id == ConditionGroup.id)
            .join(Post, Post.thread_id == Thread.id)
            .join(Member, Member.id == Post.author_id)
            .join(thread_author, thread_author.id == Thread.author_id)
            .add_columns(Thread, Post)
            .where(
                where,
                shown_by_federation_policy(
                    Member.federation_hidden, thread_author.federation_hidden
                ),
            )
        )
    ).first()
    if row is None:
        raise NotFound(POST_NOT_FOUND)
    group, state, role, thread, post = row
    standing = standing_of_row(state, role)
    if own and post.author_id == viewer.member_id:
        # The author's own post, even where they may no longer read the group.
        return PostInContext(
            post, thread, await unchecked_view_of(session, group, standing, viewer)
        )
    if partner_host and group.visibility == PARTNERS and group.domain == LOCAL:
        # Let through by `shared_with_host` alone (the viewer is no one of this node): what a
        # partner sees is what the public sees of a public group, so nothing held.
        if post.held_at is not None:
            raise NotFound(POST_NOT_FOUND)
        return PostInContext(
            post, thread, await unchecked_view_of(session, group, standing, viewer)
        )
    view = await view_of_row(session, group, standing, viewer, None)
    if post.held_at is not None and not _sees_held(view, post.author_id):
        raise NotFound(POST_NOT_FOUND)
    return PostInContext(post, thread, view)


async def reply(
    session: AsyncSession,
    limits: Limits,
    viewer: Viewer,
    *,
    thread_id: str,
    parent_id: str | None,
    draft: Draft,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
    anonymous: bool = False,
) -> Post:
    """Reply in a thread; `anonymous` (private groups of this node only) names no author."""
    thread, view = await _thread_in_context(session, thread_id, viewer)
    _may_reply(view.group, view.standing, viewer, announced)
    if problem := _anonymous_problem(view.group, anonymous):
        raise Invalid({"anonymous": problem})
    parent = await session.get(Post, parent_id) if parent_id else None
    draft = _checked_reply(thread, parent_id, parent, draft, limits)
    assert viewer.member_id is not None
    opening = (await _openings(session, {thread.id}))[thread.id]
    if not announced:  # a Q&A's window first: its refusal says when it ended
        window = (await windows_of(session, [thread.id])).get(thread.id)
        question = parent is None or parent.id == opening.id
        if problem := refusal(window, question=question, moderates=_moderates_here(view), now=now):
            raise Conflict(problem)
    if is_closed(thread, view.group, opening):
        raise Conflict(THREAD_CLOSED)
    if opening.held_at is not None:
        raise Conflict(THREAD_HELD)
    await rate_limits.count_post(session, limits.rates, view, origin, now)
    if parent is None:
        parent = opening
    known = await _known(session, [draft])
    post = _new_post(thread.id, parent.id, viewer.member_id, draft, now, anonymous, known)
    if await _holds(session, view.group, viewer, view.standing, viewer.member_id):
        post.held_at = now
        session.add(post)
        await session.flush()
        await index_posts(session, [post.id])
        await mentions.store(session, {post.id: draft.mentioned(known)})
        return post  # published, and bumps its thread, when approved
    session.add(post)
    thread.last_activity_at = now
    view.group.last_activity_at = now
    await session.flush()
    await index_posts(session, [post.id])
    await mentions.store(session, {post.id: draft.mentioned(known)})
    record(session, PostReplied(post.id, origin))
    texts = (draft.body, draft.content_warning)
    await report_crisis_posts(session, [_written(post.id, view.group, origin, texts)], now)
    return post


def _written(
    post_id: str, group: ConditionGroup, origin: Origin | None, texts: tuple[str, ...]
) -> WrittenPost:
    return WrittenPost(post_id, group.id, group.domain == LOCAL, origin is None, texts)


def is_closed(thread: Thread, group: ConditionGroup, opening: Post) -> bool:
    """A locked thread takes no replies; nor does one whose opening post was deleted, until a
    moderator reopens it.

    A remote group's threads follow their own server: it alone knows whether its moderators
    reopened one, and its Announce of a reply vouches for the reply. Its `Lock` is kept here
    (`set_thread_locked`), so our members are told at once."""
    if thread.locked_at is not None:
        return True
    return group.domain == LOCAL and opening.deleted_at is not None and thread.reopened_at is None


def _may_reply(group: ConditionGroup, standing: Standing, viewer: Viewer, announced: bool) -> None:
    vouched = _vouched(group, announced)
    if not vouched and not may(Action.REPLY, viewer, group.visibility, standing):
        raise Forbidden("Only active members of this group can reply. Join it first.")


def _checked_reply(
    thread: Thread, parent_id: str | None, parent: Post | None, draft: Draft, limits: Limits
) -> Draft:
    """The reply's draft, cleaned, if what it answers and what it says are acceptable."""
    if parent_id and (parent is None or parent.thread_id != thread.id):
        raise Invalid({"parent": "The post you are replying to does not exist."})
    if parent is not None and parent.deleted_at is not None:
        raise Invalid({"parent": "The post you are replying to has been deleted."})
    if parent is not None and parent.held_at is not None:
        raise Invalid({"parent": PARENT_HELD})
    draft = draft.cleaned()
    problems = _draft_problems(draft, limits)
    if problems:
        raise Invalid(problems)
    return draft


@dataclass(frozen=True)
class NewReply:
    """One reply of many written at once (`reply_many`): what `reply` takes."""

    viewer: Viewer
    thread_id: str
    parent_id: str | None
    draft: Draft
    origin: Origin | None = None
    announced: bool = False


async def reply_many(
    session: AsyncSession, limits: Limits, replies: Sequence[NewReply], now: datetime
) -> list[str | DomainError]:
    """`reply` for many replies at once: for each, in order, the new post's id, or the
    DomainError that `reply` would have raised for it (nothing of a refused one is kept).

    Every rule of `reply` applies to each reply on its own; the rows they need are loaded
    with a few set-based queries (rows the session already holds are not asked for again),
    and the accepted posts are inserted with one statement. One PostReplied is recorded per
    post, in order."""
    threads = await _by_key(session, Thread, {r.thread_id for r in replies})
    group_rows = await _by_key(session, ConditionGroup, {t.group_id for t in threads.values()})
    standings = await standings_of(
        session,
        [
            (threads[r.thread_id].group_id, r.viewer.member_id)
            for r in replies
            if r.thread_id in threads and r.viewer.member_id is not None
        ],
    )
    parents = await _by_key(session, Post, {r.parent_id for r in replies if r.parent_id})
    openings = await _openings(session, set(threads))
    windows = await windows_of(session, threads)
    approved = await _approved_counts(
        session,
        {
            (threads[r.thread_id].group_id, r.viewer.member_id)
            for r in replies
            if r.thread_id in threads
            and r.viewer.member_id is not None
            and _group_holds(group_rows[threads[r.thread_id].group_id])
        },
    )
    known = await _known(session, [r.draft for r in replies])
    mentioned: dict[str, list[int]] = {}
    results: list[str | DomainError] = []
    rows: list[dict[str, object]] = []
    touched_threads: set[str] = set()
    touched_groups: set[int] = set()
    held: set[str] = set()
    for new in replies:
        try:
            thread = threads.get(new.thread_id)
            group = group_rows.get(thread.group_id) if thread is not None else None
            if thread is None or group is None:
                raise NotFound(THREAD_NOT_FOUND)
            member_id = new.viewer.member_id
            standing = standings.get((group.id, member_id or 0), NO_STANDING)
            _check_readable_thread(group, standing, new.viewer)
            _may_reply(group, standing, new.viewer, new.announced)
            parent = parents.get(new.parent_id) if new.parent_id else None
            draft = _checked_reply(thread, new.parent_id, parent, new.draft, limits)
            assert member_id is not None
            parent_id = parent.id if parent is not None else openings[thread.id].id
            moderates = may(Action.MODERATE, new.viewer, group.visibility, standing)
            if not new.announced and (
                problem := refusal(
                    windows.get(thread.id),
                    question=parent_id == openings[thread.id].id,
                    moderates=moderates and (standing.moderates or group.domain == LOCAL),
                    now=now,
                )
            ):
                raise Conflict(problem)
            if is_closed(thread, group, openings[thread.id]):
                raise Conflict(THREAD_CLOSED)
            if openings[thread.id].held_at is not None:
                raise Conflict(THREAD_HELD)
        except DomainError as refused:
            results.append(refused)
            continue
        row = _new_post_row(thread.id, parent_id, member_id, draft, now, known=known)
        rows.append(row)
        mentioned[str(row["id"])] = draft.mentioned(known)
        results.append(str(row["id"]))
        if (
            _group_holds(group)
            and not moderates
            and approved.get((group.id, member_id), 0) < group.hold_first_posts
        ):
            row["held_at"] = now
            held.add(str(row["id"]))
            continue
        touched_threads.add(thread.id)
        touched_groups.add(group.id)
    if not rows:
        return results
    await session.execute(insert(Post), rows)
    await index_posts(session, [str(row["id"]) for row in rows])
    await mentions.store(session, mentioned)
    # Groups before threads, as the ORM's flush in `reply` orders them (parents first): a web
    # reply and a worker's batch on the same thread then never wait on each other's second
    # row, which PostgreSQL ends as a deadlock (a 500 to the person replying).
    await session.execute(
        update(ConditionGroup)
        .where(ConditionGroup.id.in_(sorted(touched_groups)))
        .values(last_activity_at=now)
    )
    await session.execute(
        update(Thread).where(Thread.id.in_(sorted(touched_threads))).values(last_activity_at=now)
    )
    written = []
    for new, result in zip(replies, results, strict=True):
        if isinstance(result, str) and result not in held:
            record(session, PostReplied(result, new.origin))
            group = group_rows[threads[new.thread_id].group_id]
            texts = (new.draft.body, new.draft.content_warning)
            written.append(_written(result, group, new.origin, texts))
    await report_crisis_posts(session, written, now)
    return results


async def _by_key(session: AsyncSession, model: Any, keys: set[Any]) -> dict[Any, Any]:
    """Rows by primary key: those the session holds already, and the rest with one query."""
    mapper = inspect(model)
    found: dict[Any, Any] = {}
    missing = []
    for key in keys:
        held = session.identity_map.get(mapper.identity_key_from_primary_key([key]))
        if held is not None:
            found[key] = held
        else:
            missing.append(key)
    if missing:
        column = mapper.primary_key[0]
        rows = await session.execute(select(model).where(column.in_(sorted(missing))))
        for row in rows.scalars():
            found[getattr(row, column.key)] = row
    return found


async def _openings(session: AsyncSession, thread_ids: set[str]) -> dict[str, Post]:
    """The opening post of each thread, as it stands now, share-locked until the transaction
    ends (PostgreSQL): a reply and the deletion that closes its thread take turns, so none
    slips into a thread closed a moment before."""
    if not thread_ids:
        return {}
    rows = await session.execute(
        select(Post)
        .where(Post.thread_id.in_(sorted(thread_ids)), Post.parent_id.is_(None))
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )
    return {post.thread_id: post for post in rows.scalars()}


async def first_post(session: AsyncSession, thread_id: str) -> Post:
    return (
        await session.execute(
            select(Post).where(Post.thread_id == thread_id, Post.parent_id.is_(None))
        )
    ).scalar_one()


async def edit_post(
    session: AsyncSession,
    limits: Limits,
    viewer: Viewer,
    *,
    post_id: str,
    draft: Draft,
    title: str | None = None,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
) -> PostInContext:
    found = await post_in_context(session, post_id, viewer)
    await _lock(session, found.post)
    is_author = found.post.author_id == viewer.member_id
    vouched = vouched_by_remote_group(found.view, announced) and is_author
    if not vouched and not may_edit_post(viewer, found.view.standing, is_author):
        raise Forbidden("Only the author, while a member of the group, can edit this post.")
    if found.post.deleted_at is not None:
        raise Conflict("This post has been deleted and can no longer be edited.")
    draft = draft.cleaned()
    problems = _draft_problems(draft, limits)
    is_opening_post = found.post.parent_id is None
    if is_opening_post and title is not None:
        title = neutralise(title, name=True)
        problems |= collect(title=text_problem(title, "The title", limits.title_max))
    if problems:
        raise Invalid(problems)
    found.post.source = draft.body
    found.post.content_html = draft.rendered(await _known(session, [draft]))
    found.post.content_warning = draft.content_warning
    found.post.edited_at = now
    note_erasure(session)  # the earlier text is gone from the page, not yet from the file
    if is_opening_post and title is not None:
        found.thread.title = title
    await session.flush()
    await index_posts(session, [found.post.id])
    if found.post.held_at is None:  # a held post is published as it stands when approved
        record(session, PostEdited(found.post.id, origin))
    return found


async def delete_post(
    session: AsyncSession,
    viewer: Viewer,
    *,
    post_id: str,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
    reason: str | None = None,
) -> PostInContext:
    """Replace a post by a tombstone: its text is erased, its place in the thread stays.
    A moderator's removal gives a `reason` (it goes out with the Delete)."""
    found = await post_in_context(session, post_id, viewer, authors_own=True)
    await _lock(session, found.post)
    is_author = found.post.author_id == viewer.member_id
    vouched = vouched_by_remote_group(found.view, announced)
    if not vouched and not may_delete_post(
        viewer, found.view.group.visibility, found.view.standing, is_author
    ):
        raise Forbidden("Only the author or a moderator can delete this post.")
    if found.post.deleted_at is None:
        await tombstone(session, found.post, found.thread, now)
        assert viewer.member_id is not None
        if found.post.held_at is None:  # a held post was never published: nothing to undo
            record(session, PostDeleted(found.post.id, viewer.member_id, origin, reason))
    return found


@dataclass(frozen=True)
class Byline:
    """A post's author as one viewer's pages name them: `member` None reads "Anonymous
    member", and its author reads "Anonymous member (you)". Templates name authors only
    through a byline, so an anonymous post's author is in no page's HTML at all."""

    member: Member | None
    yours: bool

    @property
    def anonymous(self) -> bool:
        return self.member is None


def byline_of(anonymous: bool, author: Member, viewer: Viewer) -> Byline:
    return Byline(author if names_author(anonymous) else None, author.id == viewer.member_id)


@dataclass(frozen=True)
class HeldPost:
    post: Post
    thread: Thread
    author: Member
    byline: Byline


# The cursor of the held posts' list: when each was held (oldest first), then the post's id.
HELD_KEYS: tuple[KeyKind, ...] = ("moment", "id")


async def held_posts(
    session: AsyncSession, view: GroupView, request: PageRequest = FIRST_PAGE
) -> Page[HeldPost]:
    """A page of the posts waiting for approval in a group, oldest first (node/paging.py):
    for its moderators only."""
    if not view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can see the posts waiting for approval.")
    keys = [Post.held_at, Post.id]
    statement = (
        select(Post, Thread, Member)
        .join(Thread, Thread.id == Post.thread_id)
        .join(Member, Member.id == Post.author_id)
        .where(
            Thread.group_id == view.group.id,
            Post.held_at.is_not(None),
            Post.deleted_at.is_(None),
        )
    )
    if request.cursor is not None:
        statement = statement.where(beyond(keys, request.cursor, request.newer, ascending=True))
    rows = await session.execute(
        statement.order_by(*order(keys, request.newer, ascending=True)).limit(request.size + 1)
    )
    # paging.page_of, not this module's page_of (which page of a thread a post is on).
    page = paging.page_of(list(rows.all()), request, lambda row: (row[0].held_at, row[0].id))
    held = [
        HeldPost(post, thread, author, byline_of(post.anonymous, author, view.viewer))
        for post, thread, author in page.items
    ]
    return Page(held, page.older, page.newer)


async def _held_in_context(session: AsyncSession, viewer: Viewer, post_id: str) -> PostInContext:
    found = await post_in_context(session, post_id, viewer)
    if not found.view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can approve or reject a post.")
    await _lock(session, found.post)
    if found.post.held_at is None:
        raise Conflict("This post is not waiting for approval: it was approved already.")
    if found.post.deleted_at is not None:
        raise Conflict("This post is not waiting for approval: it was rejected or deleted.")
    return found


async def approve_post(
    session: AsyncSession,
    viewer: Viewer,
    *,
    post_id: str,
    actor_label: str,
    now: datetime,
    reason: str = "",
) -> PostInContext:
    """A moderator publishes a held post: from now on everyone who may read the group sees
    it, its thread moves up, and it federates (the event held back is recorded now)."""
    found = await _held_in_context(session, viewer, post_id)
    found.post.held_at = None
    found.thread.last_activity_at = now
    found.view.group.last_activity_at = now
    await session.flush()
    await log_action(
        session,
        action=ModAction.APPROVE_POST,
        reason=neutralise(reason).strip() or APPROVED,
        now=now,
        actor_label=actor_label,
        actor_id=viewer.member_id,
        group_id=found.view.group.id,
        post_id=found.post.id,
        thread_id=found.thread.id,
        member_id=found.post.author_id,
    )
    if found.post.parent_id is None:
        record(session, ThreadStarted(found.thread.id, found.post.id))
    else:
        record(session, PostReplied(found.post.id))
    return found


async def reject_post(
    session: AsyncSession,
    viewer: Viewer,
    *,
    post_id: str,
    reason: str,
    actor_label: str,
    now: datetime,
) -> PostInContext:
    """A moderator rejects a held post: its text is erased and it stays unseen; nothing
    federates, as nothing was ever published."""
    reason = required_reason(reason)
    found = await _held_in_context(session, viewer, post_id)
    await tombstone(session, found.post, found.thread, now)
    await log_action(
        session,
        action=ModAction.REJECT_POST,
        reason=reason,
        now=now,
        actor_label=actor_label,
        actor_id=viewer.member_id,
        group_id=found.view.group.id,
        post_id=found.post.id,
        thread_id=found.thread.id,
        member_id=found.post.author_id,
    )
    return found


async def _lock(session: AsyncSession, post: Post) -> None:
    """Read the post again, locked until the transaction ends (PostgreSQL; SQLite's writers
    take turns already): an edit racing a deletion then never writes the text back into a
    tombstone, nor a deletion erases what it did not see."""
    await session.refresh(post, with_for_update=True)


async def reopen_thread(
    session: AsyncSession, viewer: Viewer, *, thread_id: str, now: datetime
) -> Thread:
    """A moderator opens a thread closed by its opening post's deletion to replies again;
    reopening it twice is harmless."""
    thread, view = await _thread_in_context(session, thread_id, viewer)
    if not view.may(Action.MODERATE):
        raise Forbidden("Only this group's moderators can reopen a thread.")
    opening = (await _openings(session, {thread.id}))[thread.id]
    if thread.reopened_at is None and not is_closed(thread, view.group, opening):
        raise Conflict("This thread is open to replies already.")
    await session.execute(
        update(Thread)
        .where(Thread.id == thread.id, Thread.reopened_at.is_(None))
        .values(reopened_at=now)
        .execution_options(synchronize_session="fetch")
    )
    return thread


async def set_thread_locked(
    session: AsyncSession,
    viewer: Viewer,
    *,
    thread_id: str,
    locked: bool,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
) -> Thread:
    """Lock a thread to replies, or unlock it: a moderator of its group here, or the remote
    group's own `Lock` (`announced`). Doing it twice is harmless and records nothing."""
    thread = await _moderated_thread(
        session, viewer, thread_id, announced, "lock or unlock a thread"
    )
    if (thread.locked_at is not None) != locked:
        thread.locked_at = now if locked else None
        await session.flush()
        assert viewer.member_id is not None
        record(session, ThreadLockChanged(thread.id, locked, viewer.member_id, origin))
    return thread


async def set_thread_pinned(
    session: AsyncSession,
    viewer: Viewer,
    *,
    thread_id: str,
    pinned: bool,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
) -> Thread:
    """Pin a thread to the top of its group (featured), or unpin it; as `set_thread_locked`."""
    thread = await _moderated_thread(session, viewer, thread_id, announced, "pin or unpin a thread")
    if (thread.pinned_at is not None) != pinned:
        thread.pinned_at = now if pinned else None
        await session.flush()
        assert viewer.member_id is not None
        record(session, ThreadPinChanged(thread.id, pinned, viewer.member_id, origin))
    return thread


async def _moderated_thread(
    session: AsyncSession, viewer: Viewer, thread_id: str, announced: bool, what: str
) -> Thread:
    """A thread its group's moderators (or the remote group itself) act on, locked until the
    transaction ends so two such changes take turns."""
    thread, view = await _thread_in_context(session, thread_id, viewer)
    if not vouched_by_remote_group(view, announced) and not view.may(Action.MODERATE):
        raise Forbidden(f"Only this group's moderators can {what}.")
    await session.refresh(thread, with_for_update=True)
    return thread


async def tombstone(session: AsyncSession, post: Post, thread: Thread, now: datetime) -> None:
    """Erase a post's text (and its marks); its place in the thread stays."""
    note_erasure(session)
    post.deleted_at = now
    post.source = ""
    post.content_html = ""
    post.content_warning = ""
    if post.parent_id is None:
        thread.title = DELETED_TITLE  # a title can say as much as the text
    await session.execute(delete(Reaction).where(Reaction.post_id == post.id))
    await unindex_posts(session, [post.id])
    await session.flush()


async def set_helpful(
    session: AsyncSession,
    viewer: Viewer,
    *,
    post_id: str,
    helpful: bool,
    now: datetime,
    origin: Origin | None = None,
    announced: bool = False,
    activity_id: str | None = None,
) -> PostInContext:
    """Mark a post helpful or take the mark back; repeating either is harmless."""
    found = await post_in_context(session, post_id, viewer)
    if not vouched_by_remote_group(found.view, announced) and not found.view.may(Action.REACT):
        raise Forbidden("Only active members of this group can mark posts helpful.")
    if found.post.deleted_at is not None:
        raise Conflict("This post has been deleted.")
    if found.post.held_at is not None:
        raise Conflict(POST_HELD)
    if found.post.author_id == viewer.member_id and helpful:
        raise Conflict("You cannot mark your own post helpful.")
    assert viewer.member_id is not None
    key = (found.post.id, viewer.member_id, HELPFUL)
    existing = await session.get(Reaction, key)
    if helpful and existing is None:
        try:
            async with session.begin_nested():
                session.add(
                    Reaction(
                        post_id=key[0],
                        member_id=key[1],
                        kind=HELPFUL,
                        created_at=now,
                        activity_id=activity_id,
                    )
                )
        except IntegrityError:
            return found  # a concurrent click already marked it
        record(session, HelpfulChanged(found.post.id, viewer.member_id, True, origin))
    elif not helpful and existing is not None:
        like_id = existing.activity_id
        await session.delete(existing)
        await session.flush()
        record(session, HelpfulChanged(found.post.id, viewer.member_id, False, origin, like_id))
    return found


@dataclass(frozen=True)
class PostView:
    post: Post
    author: Member
    helpful_count: int
    marked_helpful: bool
    byline: Byline
    # The author's professional verification row, if any (current or not: node/professionals.py
    # decides what badge it makes), read with the post; None for an anonymous post.
    verification: ProfessionalVerification | None = None

    @property
    def mine(self) -> bool:
        return self.byline.yours

    @property
    def deleted(self) -> bool:
        return self.post.deleted_at is not None

    @property
    def held(self) -> bool:
        return self.post.held_at is not None


# Posts on a page of a thread: 1,000 replies make 20 pages of about 60 KB of HTML each.
THREAD_PAGE_SIZE = 50
# Questions on a page of an expert Q&A, each with all its answers: with three answers each
# (48 posts) a page weighs about 45 KB of HTML, or 63 KB for a member (who has a form and
# links on every post), as much as a page of an ordinary thread; 20 would pass 100 KB.
QA_PAGE_QUESTIONS = 12


@dataclass(frozen=True)
class ThreadView:
    thread: Thread
    group: GroupView
    # The posts of this page, in time order; the opening post is the first post of page 1.
    posts: list[PostView]
    # The thread's expert Q&A window, if it is one, and the moment the view was taken.
    qa: QaWindow | None = None
    now: datetime | None = None
    page: int = 1
    pages: int = 1
    # The opening post, on whichever page the view is; and the posts that this page's replies
    # answer but that are on other pages (for "In reply to"), by id.
    opening_post: Post | None = None
    elsewhere: dict[str, PostView] = field(default_factory=dict)
    # Whether the thread has a poll (it is read only for page 1, where the opening post is).
    has_poll: bool = False

    @property
    def qa_ended(self) -> bool:
        return self.qa is not None and self.now is not None and self.qa.ended(self.now)

    @property
    def opening(self) -> Post:
        if self.opening_post is not None:
            return self.opening_post
        return next(view.post for view in self.posts if view.post.parent_id is None)

    @property
    def closed(self) -> bool:
        if self.qa_ended:
            return True  # read-only by time, whether or not anything locked it
        return is_closed(self.thread, self.group.group, self.opening)

    @cached_property
    def by_id(self) -> dict[str, PostView]:
        """The posts of this page and those they answer on other pages, by id."""
        return {**self.elsewhere, **{item.post.id: item for item in self.posts}}


def page_problem(raw: str) -> str | None:
    """Why `raw` is no page number (None: it is one): ASCII digits, no leading zero, >= 1."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or raw != str(int(raw)):
        return "A page number is a whole number, such as 2."
    return None if int(raw) >= 1 else "Pages are numbered from 1."


def _shown_posts(thread: Thread, view: GroupView, *columns: Any) -> Select[Any]:
    """The thread's posts this viewer sees (by default with their authors), unordered."""
    return (
        select(*(columns or (Post, Member)))
        .select_from(Post)
        .join(Member, Member.id == Post.author_id)
        .where(
            Post.thread_id == thread.id,
            _held_shown(view),
            shown_by_federation_policy(Member.federation_hidden),
        )
    )


def _page_count(items: int, page_size: int) -> int:
    return max(1, -(-items // page_size))


def _earlier_than(created_at: Any, post_id: Any) -> ColumnElement[bool]:
    """Posts before the given one in a thread's order (time, then id for equal times)."""
    return (Post.created_at < created_at) | ((Post.created_at == created_at) & (Post.id < post_id))


def _is_question(thread: Thread) -> ColumnElement[bool]:
    """Posts answering the thread's opening post: in an expert Q&A, its questions."""
    opening = aliased(Post)
    return Post.parent_id == (
        select(opening.id)
        .where(opening.thread_id == thread.id, opening.parent_id.is_(None))
        .scalar_subquery()
    )


def _shown_questions(thread: Thread, view: GroupView, *columns: Any) -> Select[Any]:
    """A Q&A's questions this viewer sees, unordered; a page of them holds their answers."""
    return _shown_posts(thread, view, *columns).where(_is_question(thread))


def _qa_page_posts(thread: Thread, view: GroupView, page: int) -> ColumnElement[bool]:
    """The posts of one page of an expert Q&A: its questions of that page (in time order)
    and the shown replies below them, at any depth (as node/qa.py groups them: a reply below
    a post the viewer does not see is shown nowhere); page 1 also holds the opening post."""
    questions = (
        _shown_questions(thread, view, Post.id)
        .order_by(Post.created_at, Post.id)
        .limit(QA_PAGE_QUESTIONS)
        .offset((page - 1) * QA_PAGE_QUESTIONS)
        .cte("page_questions")
    )
    below = select(questions.c.id).cte("page_question_trees", recursive=True)
    below = below.union_all(
        _shown_posts(thread, view, Post.id).join(below, Post.parent_id == below.c.id)
    )
    on_page = Post.id.in_(select(below.c.id))
    return on_page | Post.parent_id.is_(None) if page == 1 else on_page


async def page_of(session: AsyncSession, found: PostInContext) -> int:
    """The page of its thread that shows this post to the viewer who found it: in an expert
    Q&A, the page of the question it is, or that it is an answer (or reply) to."""
    post = found.post
    before = _shown_posts(found.thread, found.view, func.count()).where(
        _earlier_than(post.created_at, post.id)
    )
    qa = select(QaSession.thread_id).where(QaSession.thread_id == found.thread.id).exists()
    count, is_qa = (await session.execute(select(before.scalar_subquery(), qa))).one()
    if not is_qa:
        return count // THREAD_PAGE_SIZE + 1
    # The post and its ancestors up to the opening post: the one whose parent is the opening
    # post is its question (none for the opening post itself, which is on page 1).
    chain = (
        select(Post.id, Post.parent_id, Post.created_at)
        .where(Post.id == post.id)
        .cte("ancestors", recursive=True)
    )
    parent = aliased(Post)
    chain = chain.union_all(
        select(parent.id, parent.parent_id, parent.created_at).join(
            chain, parent.id == chain.c.parent_id
        )
    )
    question = (
        select(chain.c.id, chain.c.created_at)
        .where(chain.c.parent_id.in_(select(chain.c.id).where(chain.c.parent_id.is_(None))))
        .subquery("question")
    )
    questions_before = (
        _shown_questions(found.thread, found.view, func.count())
        .join(question, true())
        .where(_earlier_than(question.c.created_at, question.c.id))
    )
    return (await session.scalar(questions_before) or 0) // QA_PAGE_QUESTIONS + 1


async def view_thread(
    session: AsyncSession,
    thread_id: str,
    viewer: Viewer,
    now: datetime | None = None,
    page: int = 1,
) -> ThreadView:
    """One page of a thread as the viewer may read it; with `now`, a Q&A's window says if it
    ended. An expert Q&A's pages hold QA_PAGE_QUESTIONS questions each, with all the replies
    below them (node/qa.py groups them); other threads' pages hold THREAD_PAGE_SIZE posts.
    NotFound for a page past the last, saying how many there are.

    Its reads are few whatever the page: the thread with its group, the viewer's standing,
    Q&A window and whether it has a poll; the group's tags; the page's posts with their
    authors, helpful counts, the viewer's own marks and the count of all shown posts (of a
    Q&A's questions); the posts other pages hold that these answer, and the opening post, only
    when needed."""
    has_poll = select(Poll.thread_id).where(Poll.thread_id == Thread.id).correlate(Thread).exists()
    thread, view, (qa_row, poll) = await _thread_in_context_with(
        session,
        thread_id,
        viewer,
        lambda statement: statement.outerjoin(
            QaSession, QaSession.thread_id == Thread.id
        ).add_columns(QaSession, has_poll),
    )
    window = window_of_row(qa_row) if qa_row is not None else None
    helpful = (
        select(func.count())
        .where(Reaction.post_id == Post.id, Reaction.kind == HELPFUL)
        .correlate(Post)
        .scalar_subquery()
    )
    mine = (
        select(Reaction.post_id)
        .where(
            Reaction.post_id == Post.id,
            Reaction.member_id == viewer.member_id,
            Reaction.kind == HELPFUL,
        )
        .correlate(Post)
        .exists()
        if viewer.member_id is not None
        else false()
    )
    # What the pages are counted in: posts, or a Q&A's questions (counted apart, uncorrelated
    # with the page's rows).
    page_size = THREAD_PAGE_SIZE if window is None else QA_PAGE_QUESTIONS
    counted = (
        _shown_posts(thread, view, func.count())
        if window is None
        else _shown_questions(thread, view, func.count())
    )
    total_column = (
        func.count().over() if window is None else counted.correlate(None).scalar_subquery()
    )
    statement = (
        _shown_posts(thread, view)
        .outerjoin(ProfessionalVerification, ProfessionalVerification.member_id == Member.id)
        .add_columns(helpful, mine, ProfessionalVerification, total_column)
        .order_by(Post.created_at, Post.id)
    )
    if window is None:
        statement = statement.limit(THREAD_PAGE_SIZE).offset((page - 1) * THREAD_PAGE_SIZE)
    else:
        statement = statement.where(_qa_page_posts(thread, view, page))
    rows = (await session.execute(statement)).all()
    if not rows and page != 1:
        pages = _page_count(await session.scalar(counted) or 0, page_size)
        raise NotFound(
            f"This thread has {pages} page{'s' if pages != 1 else ''}: there is no page "
            f"{page}. Go back to the first page of the thread."
        )
    shown = []
    for post, author, count, marked, verification, _ in rows:
        byline = byline_of(post.anonymous, author, viewer)
        named = verification if byline.member is not None else None
        shown.append(PostView(post, author, count, bool(marked), byline, named))
    pages = _page_count(rows[0][-1] if rows else 0, page_size)
    on_page = {item.post.id for item in shown}
    opening = next((item.post for item in shown if item.post.parent_id is None), None)
    answered = {
        item.post.parent_id
        for item in shown
        if item.post.parent_id is not None and item.post.parent_id not in on_page
    }
    elsewhere: dict[str, PostView] = {}
    if opening is None or answered:
        found = await session.execute(
            _shown_posts(thread, view).where(
                Post.id.in_(sorted(answered)) | Post.parent_id.is_(None)
            )
        )
        for post, author in found.all():
            if post.parent_id is None:
                opening = post
            elsewhere[post.id] = PostView(
                post, author, 0, False, byline_of(post.anonymous, author, viewer)
            )
    return ThreadView(thread, view, shown, window, now, page, pages, opening, elsewhere, bool(poll))


def _held_shown(view: GroupView) -> ColumnElement[bool]:
    """Posts of the group the viewer sees: a held one only if they wrote or moderate it."""
    if view.may(Action.MODERATE):
        return true()
    if view.viewer.member_id is None:
        return Post.held_at.is_(None)
    return Post.held_at.is_(None) | (Post.author_id == view.viewer.member_id)
