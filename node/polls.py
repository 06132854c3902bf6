"""Polls: voting, results and the counts other servers publish (node/poll_drafts.py creates
them with their thread).

- Members who may reply in the group vote: once per poll, one option or several as the poll
  says; a vote is replaced only if the author allowed changes, and only before closing.
- Results show to a viewer who voted, and to everyone once the poll closed; never who voted
  what. In groups of more than 20 members a count from 1 to 9 reads "fewer than 10" (totals
  too), and the counts this node publishes withhold it (a 0), so that no other server shows
  what the page hides.
- A poll of a thread started on another server (`Thread.ap_id` set) is a copy: its counts
  are its owner's, as its `Question` says; a local member's vote is kept here (so they see
  that they voted) and sent to the owner, which counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Conflict, Forbidden, Invalid, NotFound
from node.events import Origin, PollVoted, record
from node.groups import GroupView
from node.policy import OPEN_VISIBILITIES, Action, Viewer, federates
from node.posts import opening_post_in_context
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Membership,
    Poll,
    PollOption,
    PollVote,
    Thread,
)
from node.text import neutralise

# A group with more than this many active members shows a count from 1 to 9 only as "fewer
# than 10" (SMALL_COUNT_BELOW, as the member counts of issue 12 do).
LARGE_GROUP_ABOVE = 20
SMALL_COUNT_BELOW = 10
NO_POLL = "This thread has no poll."
CLOSED = "This poll is closed: it takes no more votes."
VOTED_ALREADY = "You have voted in this poll already, and its author did not allow changing votes."
MEMBERS_VOTE = "Only members of this group can vote. Join it first."
CHOOSE_ONE = "Choose one option."
CHOOSE_SOME = "Choose at least one option."
UNKNOWN_OPTION = "That option is not part of this poll."
# How much of a remote Question is kept.
REMOTE_OPTIONS_MAX = 20
REMOTE_OPTION_MAX = 200


def is_small(count: int) -> bool:
    return 0 < count < SMALL_COUNT_BELOW


def shown_count(count: int, large_group: bool) -> str:
    """A count as the page shows it: "fewer than 10" for 1 to 9 in a large group."""
    if large_group and is_small(count):
        return f"fewer than {SMALL_COUNT_BELOW}"
    return str(count)


def published_count(count: int, large_group: bool) -> int:
    """A count as this node publishes it: 1 to 9 in a large group is withheld (0)."""
    return 0 if large_group and is_small(count) else count


@dataclass(frozen=True)
class OptionResult:
    option: PollOption
    count: int
    shown: str
    # The bar's width, 0 to 100 (the share of voters who chose it; 0 while it is withheld).
    percent: int
    chosen: bool


@dataclass(frozen=True)
class PollView:
    """A thread's poll as one viewer sees it."""

    poll: Poll
    options: list[OptionResult]
    voters_shown: str
    closed: bool
    voted: bool
    may_vote: bool
    # Results are shown after the viewer voted, or once the poll closed.
    results_shown: bool
    remote: bool

    @property
    def may_change(self) -> bool:
        return self.voted and self.may_vote and self.poll.changeable and not self.remote


async def _options(session: AsyncSession, thread_id: str) -> list[PollOption]:
    rows = await session.execute(
        select(PollOption).where(PollOption.thread_id == thread_id).order_by(PollOption.position)
    )
    return list(rows.scalars())


async def _counts(session: AsyncSession, thread_id: str) -> tuple[dict[int, int], int]:
    """Votes per option id, and the number of voters, as counted here."""
    per_option = dict(
        (
            await session.execute(
                select(PollVote.option_id, func.count())
                .where(PollVote.thread_id == thread_id)
                .group_by(PollVote.option_id)
            )
        ).all()
    )
    voters = (
        await session.execute(
            select(func.count(func.distinct(PollVote.voter_id))).where(
                PollVote.thread_id == thread_id
            )
        )
    ).scalar_one()
    return {int(key): int(value) for key, value in per_option.items()}, int(voters)


async def _large(session: AsyncSession, group_id: int) -> bool:
    members = (
        await session.execute(
            select(func.count())
            .select_from(Membership)
            .where(Membership.group_id == group_id, Membership.state == "active")
        )
    ).scalar_one()
    return int(members) > LARGE_GROUP_ABOVE


async def _tallies(
    session: AsyncSession, poll: Poll, thread: Thread, options: list[PollOption]
) -> tuple[dict[int, int], int]:
    if thread.ap_id is not None:
        return {option.id: option.remote_count for option in options}, poll.remote_voters
    return await _counts(session, poll.thread_id)


async def _own_choices(session: AsyncSession, thread_id: str, member_id: int | None) -> set[int]:
    if member_id is None:
        return set()
    rows = await session.execute(
        select(PollVote.option_id).where(
            PollVote.thread_id == thread_id, PollVote.voter_id == member_id
        )
    )
    return set(rows.scalars())


def is_closed(poll: Poll, now: datetime) -> bool:
    return now >= poll.closes_at


async def poll_view(
    session: AsyncSession, thread: Thread, view: GroupView, now: datetime
) -> PollView | None:
    """The thread's poll for the viewer of `view` (who may read the thread), or None."""
    poll = await session.get(Poll, thread.id)
    if poll is None:
        return None
    options = await _options(session, thread.id)
    counts, voters = await _tallies(session, poll, thread, options)
    large = await _large(session, view.group.id)
    mine = await _own_choices(session, thread.id, view.viewer.member_id)
    closed = is_closed(poll, now)
    voted = bool(mine)
    results = [
        OptionResult(
            option,
            counts.get(option.id, 0),
            shown_count(counts.get(option.id, 0), large),
            _percent(published_count(counts.get(option.id, 0), large), voters),
            option.id in mine,
        )
        for option in options
    ]
    return PollView(
        poll,
        results,
        shown_count(voters, large),
        closed,
        voted,
        may_vote=view.may(Action.REPLY) and not closed,
        results_shown=voted or closed,
        remote=thread.ap_id is not None,
    )


def _percent(count: int, voters: int) -> int:
    return round(100 * count / voters) if voters else 0


async def _locked_poll(session: AsyncSession, thread_id: str) -> Poll:
    """The poll, locked until the transaction ends (PostgreSQL; SQLite's writers take turns):
    two votes of one person at once then take turns, and the second sees the first."""
    poll = (
        await session.execute(select(Poll).where(Poll.thread_id == thread_id).with_for_update())
    ).scalar_one_or_none()
    if poll is None:
        raise NotFound(NO_POLL)
    return poll


async def vote(
    session: AsyncSession,
    viewer: Viewer,
    *,
    thread_id: str,
    option_ids: Sequence[int],
    now: datetime,
    origin: Origin | None = None,
    adding: bool = False,
    ap_id: str | None = None,
) -> PollView:
    """Vote in a thread's poll. A second vote replaces the
    first where the poll allows changes; `adding` (a remote voter's Notes, one per option, as
    Mastodon sends them) adds an option to a multiple-choice vote instead."""
    found = await opening_post_in_context(session, thread_id, viewer)
    thread, view = found.thread, found.view
    poll = await _locked_poll(session, thread.id)
    if not view.may(Action.REPLY):
        raise Forbidden(MEMBERS_VOTE)
    if found.post.deleted_at is not None or found.post.held_at is not None:
        raise Conflict(CLOSED)
    if is_closed(poll, now):
        raise Conflict(CLOSED)
    options = {option.id: option for option in await _options(session, thread.id)}
    chosen = set(option_ids)
    if not chosen:
        raise Invalid({"poll": CHOOSE_SOME if poll.multiple else CHOOSE_ONE})
    if not chosen <= options.keys():
        raise Invalid({"poll": UNKNOWN_OPTION})
    assert viewer.member_id is not None
    mine = await _own_choices(session, thread.id, viewer.member_id)
    if adding and poll.multiple:
        chosen |= mine
    if not poll.multiple and len(chosen) > 1:
        raise Invalid({"poll": CHOOSE_ONE})
    if chosen == mine:
        return await _after(session, thread, view, now)  # the same vote again: nothing to do
    if mine and not poll.changeable and not (adding and poll.multiple):
        raise Conflict(VOTED_ALREADY)
    gone = mine - chosen
    if gone:
        await session.execute(
            delete(PollVote).where(
                PollVote.thread_id == thread.id,
                PollVote.voter_id == viewer.member_id,
                PollVote.option_id.in_(sorted(gone)),
            )
        )
    try:
        async with session.begin_nested():
            for option_id in sorted(chosen - mine):
                session.add(
                    PollVote(
                        thread_id=thread.id,
                        option_id=option_id,
                        voter_id=viewer.member_id,
                        created_at=now,
                        ap_id=ap_id,
                    )
                )
    except IntegrityError:
        raise Conflict("Your vote was counted already.") from None
    if thread.ap_id is None and view.group.domain == LOCAL and federates(view.group.visibility):
        poll.tallies_changed_at = now  # the poll worker publishes the new counts
    await session.flush()
    record(session, PollVoted(thread.id, viewer.member_id, tuple(sorted(chosen)), origin))
    return await _after(session, thread, view, now)


async def _after(session: AsyncSession, thread: Thread, view: GroupView, now: datetime) -> PollView:
    result = await poll_view(session, thread, view, now)
    assert result is not None
    return result


async def option_named(session: AsyncSession, thread_id: str, name: str) -> PollOption:
    """An option by its text, as a remote vote names it (Mastodon's Note `name`)."""
    for option in await _options(session, thread_id):
        if option.name == name.strip():
            return option
    raise Invalid({"poll": UNKNOWN_OPTION})


async def has_poll(session: AsyncSession, thread_id: str) -> bool:
    return await session.get(Poll, thread_id) is not None


# ---------------------------------------------------------------- what other servers publish


@dataclass(frozen=True)
class RemotePoll:
    """A poll as its owner's `Question` describes it."""

    options: tuple[tuple[str, int], ...]  # (text, count) in order
    multiple: bool
    closes_at: datetime
    voters: int


def _clean_options(poll: RemotePoll) -> list[tuple[str, int]]:
    kept: list[tuple[str, int]] = []
    seen: set[str] = set()
    for name, count in poll.options[:REMOTE_OPTIONS_MAX]:
        name = neutralise(name, name=True).strip()[:REMOTE_OPTION_MAX]
        if name and name not in seen:
            seen.add(name)
            kept.append((name, max(0, count)))
    return kept


async def store_remote(
    session: AsyncSession, thread_id: str, facts: RemotePoll, now: datetime
) -> None:
    """Keep (or bring up to date) the copy of a remote thread's poll: its options, its counts
    and its closing time, as the owner says. Options renamed or reordered start over."""
    thread = await session.get(Thread, thread_id)
    if thread is None or thread.ap_id is None:
        return  # only copies of other servers' polls are written from outside
    options = _clean_options(facts)
    if len(options) < 2:
        return
    poll = await session.get(Poll, thread_id)
    if poll is None:
        poll = Poll(
            thread_id=thread_id, multiple=facts.multiple, changeable=False,
            closes_at=facts.closes_at, created_at=now, remote_voters=0,
        )  # fmt: skip
        session.add(poll)
        await session.flush()
    poll.multiple = facts.multiple
    poll.closes_at = facts.closes_at
    poll.remote_voters = max(0, facts.voters)
    existing = await _options(session, thread_id)
    if [option.name for option in existing] == [name for name, _ in options]:
        for option, (_, count) in zip(existing, options, strict=True):
            option.remote_count = count
        await session.flush()
        return
    await session.execute(delete(PollVote).where(PollVote.thread_id == thread_id))
    await session.execute(delete(PollOption).where(PollOption.thread_id == thread_id))
    session.add_all(
        PollOption(thread_id=thread_id, position=index, name=name, remote_count=count)
        for index, (name, count) in enumerate(options)
    )
    await session.flush()


# ---------------------------------------------------------------- what this node publishes


@dataclass(frozen=True)
class PublishedPoll:
    """A local poll as its `Question` carries it (counts withheld as `published_count`)."""

    options: tuple[tuple[str, int], ...]
    multiple: bool
    closes_at: datetime
    closed: bool
    voters: int


async def published_poll(
    session: AsyncSession, thread: Thread, group: ConditionGroup, now: datetime
) -> PublishedPoll | None:
    poll = await session.get(Poll, thread.id)
    if poll is None:
        return None
    options = await _options(session, thread.id)
    counts, voters = await _tallies(session, poll, thread, options)
    large = await _large(session, group.id)
    return PublishedPoll(
        tuple(
            (option.name, published_count(counts.get(option.id, 0), large)) for option in options
        ),
        poll.multiple,
        poll.closes_at,
        is_closed(poll, now),
        published_count(voters, large),
    )


async def polls_to_publish(session: AsyncSession, now: datetime, limit: int = 50) -> list[Poll]:
    """Local polls of public groups whose counts changed since their last `Update`, or that
    closed and have not said so yet (the poll worker's queue), locked for the run."""
    rows = await session.execute(
        select(Poll)
        .join(Thread, Thread.id == Poll.thread_id)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .where(
            Thread.ap_id.is_(None),
            ConditionGroup.domain == LOCAL,
            # `federates` in SQL: a private group's poll is never published, not even closed.
            ConditionGroup.visibility.in_(OPEN_VISIBILITIES),
            (Poll.tallies_changed_at.is_not(None))
            | (Poll.closing_sent_at.is_(None) & (Poll.closes_at <= now)),
        )
        .order_by(Poll.closes_at)
        .limit(limit)
        # Locked until the transaction ends, as a vote locks its poll: a vote during the run
        # waits, and marks the poll again after the run cleared the mark (not before).
        .with_for_update(of=Poll)
    )
    return list(rows.scalars())


async def mark_published(session: AsyncSession, poll: Poll, now: datetime) -> None:
    """The poll's counts went out as they are now (and its closing, if it closed)."""
    values: dict[str, object] = {"tallies_changed_at": None}
    if is_closed(poll, now):
        values["closing_sent_at"] = now
    await session.execute(
        update(Poll)
        .where(Poll.thread_id == poll.thread_id)
        .values(**values)
        .execution_options(synchronize_session="fetch")
    )


async def forget_votes(session: AsyncSession, member_id: int, now: datetime) -> None:
    """An erased account's votes go, as its helpful marks do; the polls they were in publish
    their new counts (the poll worker skips any that is not published)."""
    voted_in = select(PollVote.thread_id).where(PollVote.voter_id == member_id)
    await session.execute(
        update(Poll)
        .where(Poll.thread_id.in_(voted_in))
        .values(tallies_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(delete(PollVote).where(PollVote.voter_id == member_id))
