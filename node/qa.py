"""Expert Q&A: a moderator schedules a session in a group, with verified professionals to
answer during a time window (docs/POLICY.md, "Expert Q&A").

The session is a thread: its opening post presents it; questions are replies to that post,
answers replies to a question. The named experts' answers are labelled and listed first under
their question; after the window the thread is read-only (node/qa_windows.py decides, by
time) and its page opens with an index of the questions and their answers. It federates as
an ordinary thread whose Page carries `startTime` and `endTime`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from node import posts, professionals
from node.config import Limits
from node.errors import Forbidden, Invalid
from node.events import ThreadLockChanged, record
from node.groups import GroupView
from node.members import find_member_by_handle, handle_of
from node.policy import Action
from node.qa_windows import QaWindow, when
from node.storage.models import LOCAL, ConditionGroup, Member, QaExpert, QaSession, Thread
from node.text import neutralise
from node.validation import collect, text_problem

MAX_EXPERTS = 5
MAX_AHEAD = timedelta(days=365)
NOT_A_MODERATOR = "Only this group's moderators can schedule an expert Q&A."
ONLY_LOCAL_GROUPS = "An expert Q&A can be scheduled only in a group of this node."
TIME_FORMAT = "%Y-%m-%dT%H:%M"  # what a browser's datetime-local field sends
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def zone_named(name: str) -> ZoneInfo:
    try:
        if len(name) > 64:
            raise ValueError(name)
        return ZoneInfo(name.strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid(
            {"zone": "Give a time zone by its name, such as UTC or Europe/Paris."}
        ) from None


def form_time(text: str, zone: ZoneInfo, field: str, what: str) -> datetime:
    """A time as a form gives it (YYYY-MM-DDTHH:MM, or with a space), in `zone`, as UTC."""
    try:
        moment = datetime.strptime(text.strip().replace(" ", "T")[:16], TIME_FORMAT)
        return moment.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        raise Invalid(
            {field: f"Give the {what} as a date and time, such as 2026-12-07 14:00."}
        ) from None


def zoned(moment: datetime, zone: ZoneInfo) -> str:
    """A moment as the moderator entered it, with its zone (and UTC, if that differs)."""
    local = moment.astimezone(zone)
    text = local.strftime("%-d %b %Y, %H:%M ") + str(zone)
    return text if local.utcoffset() == moment.utcoffset() else f"{text} ({when(moment)})"


def _escaped(text: str) -> str:
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _handles(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for part in re.split(r"[\s,;]+", text):
        if part.strip().removeprefix("@"):
            seen.setdefault(part.strip().removeprefix("@"), None)
    return list(seen)


async def verified_experts(session: AsyncSession, text: str, now: datetime) -> list[Member]:
    """The members the usernames name, if every one is a confirmed professional: verified by
    this node, or (a remote member) by their own node, which this node's admins trust."""
    handles = _handles(text)
    if not handles:
        raise Invalid({"experts": "Name at least one verified professional to answer."})
    if len(handles) > MAX_EXPERTS:
        raise Invalid({"experts": f"Name at most {MAX_EXPERTS} professionals."})
    found: list[Member] = []
    for handle in handles:
        member = await find_member_by_handle(session, handle)
        if member is None or member.erased_at is not None:
            raise Invalid({"experts": f"There is no member called {handle} known here."})
        if not await professionals.is_verified(session, member.id, now):
            raise Invalid(
                {
                    "experts": f"{handle} is not a verified professional: only members verified "
                    "by this node, or by a partner node its admins trust, can answer a Q&A."
                }
            )
        found.append(member)
    return found


async def schedule(
    session: AsyncSession,
    limits: Limits,
    view: GroupView,
    *,
    topic: str,
    intro: str,
    experts: str,
    starts_at: datetime,
    ends_at: datetime,
    zone: ZoneInfo,
    now: datetime,
) -> Thread:
    """A moderator schedules a Q&A: its thread opens at once to questions."""
    if view.group.domain != LOCAL:
        raise Forbidden(ONLY_LOCAL_GROUPS)
    if not view.may(Action.MODERATE) or not view.may(Action.POST):
        raise Forbidden(NOT_A_MODERATOR)
    topic = neutralise(topic, name=True).strip()
    intro = neutralise(intro).strip()
    problems = collect(
        topic=text_problem(topic, "The topic", limits.title_max),
        intro=text_problem(intro, "The introduction", limits.post_max // 2, False),
    )
    if ends_at <= starts_at:
        problems["ends"] = "The end must come after the start."
    elif ends_at <= now:
        problems["ends"] = "The end must be in the future."
    elif ends_at - now > MAX_AHEAD:
        problems["ends"] = f"The end must be within {MAX_AHEAD.days} days from now."
    try:
        chosen = await verified_experts(session, experts, now)
    except Invalid as error:
        problems |= error.problems
        chosen = []
    if problems:
        raise Invalid(problems)
    badges = await professionals.badges_for(session, [member.id for member in chosen], now)
    names = ", ".join(
        f"{_escaped(member.display_name or member.username)} (@{_escaped(handle_of(member))}, "
        f"{_escaped(badges[member.id].title)})"
        for member in chosen
    )
    body = (
        f"**Expert Q&A: {_escaped(topic)}**\n\n"
        f"Answering: {names}.\n\n"
        f"From {_escaped(zoned(starts_at, zone))} to {_escaped(zoned(ends_at, zone))}.\n\n"
        "Ask your question now as a reply to this post; the experts answer during the session. "
        "After it ends, the thread is read-only."
    )
    if intro:
        body += "\n\n" + intro
    thread = await posts.start_thread(
        session, limits, view, title=topic, draft=posts.Draft(body), now=now
    )
    session.add(
        QaSession(
            thread_id=thread.id,
            topic=topic,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by_id=view.viewer.member_id,
            created_at=now,
        )
    )
    await session.flush()
    session.add_all(QaExpert(thread_id=thread.id, member_id=member.id) for member in chosen)
    await session.flush()
    return thread


async def keep_remote_window(
    session: AsyncSession, thread: Thread, *, starts_at: datetime, ends_at: datetime, now: datetime
) -> None:
    """A remote group's Page with `startTime` and `endTime`: shown as a Q&A with its window
    (its own server names and labels the experts; we do not). Kept once, never moved."""
    if ends_at <= starts_at or await session.get(QaSession, thread.id) is not None:
        return
    session.add(
        QaSession(
            thread_id=thread.id,
            topic=thread.title,
            starts_at=starts_at,
            ends_at=ends_at,
            created_by_id=None,
            created_at=now,
        )
    )
    await session.flush()


# ------------------------------------------------------------------ closing


def _due(now: datetime) -> Select[tuple[QaSession, Thread]]:
    """Our Q&As whose window has ended and whose thread was not locked for it yet."""
    return (
        select(QaSession, Thread)
        .join(Thread, Thread.id == QaSession.thread_id)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .where(
            QaSession.ends_at <= now,
            QaSession.closed_at.is_(None),
            QaSession.created_by_id.is_not(None),
            ConditionGroup.domain == LOCAL,
        )
        .order_by(QaSession.ends_at)
    )


async def any_to_close(session: AsyncSession, now: datetime) -> bool:
    return (await session.execute(_due(now).limit(1))).first() is not None


async def close_ended(session: AsyncSession, now: datetime, batch: int = 50) -> int:
    """Lock the threads of our Q&As whose window has ended, as their scheduler: the lock
    federates as a moderator's `Lock` (federation/outbox.py), so that other servers close
    them too. Replies are refused from the end on anyway (node/qa_windows.py); this only
    tells the others. Answers how many it closed."""
    rows = (await session.execute(_due(now).limit(batch).with_for_update(of=QaSession))).all()
    for row, thread in rows:
        row.closed_at = now
        if thread.locked_at is None:
            thread.locked_at = row.ends_at
            assert row.created_by_id is not None
            record(session, ThreadLockChanged(thread.id, True, row.created_by_id))
    await session.flush()
    return len(rows)


# ------------------------------------------------------------------ the page


@dataclass(frozen=True)
class Answer:
    item: posts.PostView
    by_expert: bool


@dataclass(frozen=True)
class Question:
    item: posts.PostView
    answers: list[Answer]


@dataclass(frozen=True)
class QaPage:
    window: QaWindow
    experts: list[Member]
    # The opening post, on the first page only (as an ordinary thread shows it).
    opening: posts.PostView | None
    # This page's questions (posts.QA_PAGE_QUESTIONS at most), in time order.
    questions: list[Question]
    ended: bool
    started: bool


async def qa_page(session: AsyncSession, view: posts.ThreadView, now: datetime) -> QaPage | None:
    """The page of the thread as a Q&A: each of its questions with its answers, the experts'
    first (then in time order); replies below an answer go with its question (view_thread
    put them on the question's page). None if the thread is no Q&A."""
    if view.qa is None:
        return None
    experts = list(
        await session.scalars(
            select(Member)
            .join(QaExpert, QaExpert.member_id == Member.id)
            .where(QaExpert.thread_id == view.thread.id)
            .order_by(Member.id)
        )
    )
    expert_ids = {member.id for member in experts}
    opening_id = view.opening.id
    parents = {item.post.id: item.post.parent_id for item in view.posts}

    def question_of(post_id: str) -> str | None:
        """The reply to the opening post this post descends from (cycles cannot be stored)."""
        current: str | None = post_id
        for _ in range(len(parents) + 1):
            parent = parents.get(current) if current else None
            if parent is None:
                return None
            if parent == opening_id:
                return current
            current = parent
        return None

    questions: dict[str, list[Answer]] = {}
    for item in view.posts:
        if item.post.parent_id == opening_id:
            questions.setdefault(item.post.id, [])
    for item in view.posts:
        if item.post.parent_id is None or item.post.parent_id == opening_id:
            continue
        root = question_of(item.post.id)
        if root is not None:
            by_expert = item.post.author_id in expert_ids and not item.byline.anonymous
            questions[root].append(Answer(item, by_expert and not item.deleted))
    by_id = {item.post.id: item for item in view.posts}
    return QaPage(
        window=view.qa,
        experts=experts,
        opening=next((item for item in view.posts if item.post.id == opening_id), None),
        questions=[
            Question(
                by_id[question_id],
                sorted(answers, key=lambda answer: not answer.by_expert),  # stable: time order
            )
            for question_id, answers in questions.items()
        ],
        ended=view.qa.ended(now),
        started=view.qa.started(now),
    )
