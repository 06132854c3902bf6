"""When an expert Q&A takes posts: the rule every reply path asks (node/posts.py).

A Q&A thread takes questions (replies to its opening post) from its scheduling until its end,
answers (replies to a question, or below) during its window only, except from the group's
moderators, who may post before it starts too; from its end on it is read-only for everyone,
by time alone: no worker has to lock it for replies to be refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import QaSession


def when(moment: datetime) -> str:
    return moment.strftime("%-d %b %Y, %H:%M UTC")


@dataclass(frozen=True)
class QaWindow:
    thread_id: str
    topic: str
    starts_at: datetime
    ends_at: datetime

    def ended(self, now: datetime) -> bool:
        return now >= self.ends_at

    def started(self, now: datetime) -> bool:
        return now >= self.starts_at

    def open(self, now: datetime) -> bool:
        return self.started(now) and not self.ended(now)


def window_of_row(row: QaSession) -> QaWindow:
    return QaWindow(row.thread_id, row.topic, row.starts_at, row.ends_at)


async def windows_of(session: AsyncSession, thread_ids: Iterable[str]) -> dict[str, QaWindow]:
    """The Q&A windows of those of these threads that are Q&As, in one query."""
    wanted = sorted(set(thread_ids))
    if not wanted:
        return {}
    rows = await session.scalars(select(QaSession).where(QaSession.thread_id.in_(wanted)))
    return {row.thread_id: window_of_row(row) for row in rows}


def ended_text(window: QaWindow) -> str:
    return f"This Q&A ended at {when(window.ends_at)}: its thread is read-only."


def refusal(
    window: QaWindow | None, *, question: bool, moderates: bool, now: datetime
) -> str | None:
    """Why a post may not go into this thread now (None: it may, as far as the Q&A goes)."""
    if window is None:
        return None
    if window.ended(now):
        return ended_text(window)
    if not window.started(now) and not question and not moderates:
        return (
            f"Answers open when the Q&A starts, at {when(window.starts_at)}; until then, "
            "members ask their questions as replies to the opening post."
        )
    return None
