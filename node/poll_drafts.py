"""A poll as its author types it on the new-thread form: checked, then stored with the thread.

Kept apart from node/polls.py (voting and results), which reads threads through node/posts.py:
node/posts.py starts a thread with its poll in one go, and imports this module only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import Poll, PollOption
from node.text import neutralise

MIN_OPTIONS = 2
MAX_OPTIONS = 10
OPTION_MAX = 100
LONGEST_POLL = timedelta(days=90)
# The form's closing time: a date and time in UTC, as the browser's datetime-local gives it.
CLOSES_FORMAT = "%Y-%m-%dT%H:%M"


@dataclass(frozen=True)
class PollDraft:
    """What the author asked for: the options as typed (blank ones dropped), single or
    multiple choice, the closing time as typed, and whether voters may change their vote."""

    options: tuple[str, ...] = field(default_factory=tuple)
    multiple: bool = False
    changeable: bool = False
    closes: str = ""

    @property
    def wanted(self) -> bool:
        """Whether the author asked for a poll at all (typed any option or a closing time)."""
        return any(option.strip() for option in self.options) or bool(self.closes.strip())

    def cleaned(self) -> PollDraft:
        options = tuple(
            text
            for text in (neutralise(option, name=True).strip() for option in self.options)
            if text
        )
        return PollDraft(options, self.multiple, self.changeable, self.closes.strip())


def closing_time(text: str) -> datetime | None:
    """The closing time typed on the form, read as UTC; None if it is not a date and time."""
    for pattern in (CLOSES_FORMAT, CLOSES_FORMAT + ":%S"):  # browsers may add seconds
        try:
            moment = datetime.strptime(text.strip(), pattern)
        except ValueError:
            continue
        return moment.replace(tzinfo=UTC)
    return None


def poll_problems(draft: PollDraft, now: datetime) -> dict[str, str]:
    """What is wrong with a poll draft (cleaned), by form field; empty when it may be stored."""
    problems: dict[str, str] = {}
    if len(draft.options) < MIN_OPTIONS:
        problems["poll_options"] = (
            f"A poll needs at least {MIN_OPTIONS} options: fill in two or more, "
            "or leave them all empty for a thread without a poll."
        )
    elif len(draft.options) > MAX_OPTIONS:
        problems["poll_options"] = f"A poll has at most {MAX_OPTIONS} options."
    elif any(len(option) > OPTION_MAX for option in draft.options):
        problems["poll_options"] = f"Each option is at most {OPTION_MAX} characters."
    elif any("\x00" in option for option in draft.options):
        problems["poll_options"] = "An option contains a character that cannot be stored."
    elif len({option.casefold() for option in draft.options}) != len(draft.options):
        problems["poll_options"] = "Two options say the same thing: each option must differ."
    closes = closing_time(draft.closes)
    if not draft.closes:
        problems["poll_closes"] = "Choose when the poll closes (a date and time, UTC)."
    elif closes is None:
        problems["poll_closes"] = (
            "The closing time must be a date and a time, like 2026-12-24T18:00."
        )
    elif closes <= now:
        problems["poll_closes"] = "The closing time must be in the future."
    elif closes - now > LONGEST_POLL:
        problems["poll_closes"] = f"A poll runs for at most {LONGEST_POLL.days} days."
    return problems


async def store_poll(
    session: AsyncSession, thread_id: str, draft: PollDraft, now: datetime
) -> None:
    """Store a checked draft as the thread's poll."""
    closes = closing_time(draft.closes)
    assert closes is not None
    session.add(
        Poll(
            thread_id=thread_id,
            multiple=draft.multiple,
            changeable=draft.changeable,
            closes_at=closes,
            created_at=now,
            remote_voters=0,
        )
    )
    await session.flush()
    await session.execute(
        insert(PollOption),
        [
            {"thread_id": thread_id, "position": index, "name": name, "remote_count": 0}
            for index, name in enumerate(draft.options)
        ],
    )
