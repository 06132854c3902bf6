"""Attempt counters that hold across processes: sign-in guesses and registrations.

An attempt is counted before it is made (the password checked, the account created), by a
compare-and-set on its counter row, so that concurrent attempts in any number of processes
sharing the database never get more than the throttle allows. An attempt that turns out
well is refunded by the caller.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import Throttle
from node.errors import DomainError
from node.storage.models import AttemptCounter

# Compare-and-set tries before giving up; only a crowd of attempts on one key gets there.
CONTENDED_TRIES = 8


class Throttled(DomainError):
    """Too many attempts under a key: the next is allowed after `wait`."""

    def __init__(self, wait: timedelta) -> None:
        self.wait = wait
        super().__init__(f"Too many attempts. Please wait {describe_wait(wait)} and try again.")


def describe_wait(wait: timedelta) -> str:
    seconds = max(1, math.ceil(wait.total_seconds()))
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


async def count_attempt(session: AsyncSession, key: str, throttle: Throttle, now: datetime) -> None:
    """Count one attempt under `key`, or raise Throttled if it must wait. The caller commits
    the count before making the attempt."""
    for _ in range(CONTENDED_TRIES):
        row = (
            await session.execute(
                select(AttemptCounter.attempts, AttemptCounter.last_at).where(
                    AttemptCounter.key == key
                )
            )
        ).one_or_none()
        if row is None:
            if await _insert_first(session, key, now):
                return
            continue  # another attempt created it meanwhile: read it
        attempts, last_at = row
        if now - last_at >= throttle.forget_after:
            counted = 0
        else:
            allowed_at = last_at + throttle.delay_after(attempts)
            if now < allowed_at:
                raise Throttled(allowed_at - now)
            counted = attempts
        changed = await session.execute(
            update(AttemptCounter)
            .where(
                AttemptCounter.key == key,
                AttemptCounter.attempts == attempts,
                AttemptCounter.last_at == last_at,
            )
            .values(attempts=counted + 1, last_at=now)
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            return
    raise Throttled(throttle.first_delay)


async def _insert_first(session: AsyncSession, key: str, now: datetime) -> bool:
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    statement = (
        insert(AttemptCounter)
        .values(key=key, attempts=1, last_at=now)
        .on_conflict_do_nothing(index_elements=[AttemptCounter.key])
        .returning(AttemptCounter.key)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None


async def refund_attempt(session: AsyncSession, key: str) -> None:
    """Take back one attempt that turned out well (a right password)."""
    await session.execute(
        update(AttemptCounter)
        .where(AttemptCounter.key == key, AttemptCounter.attempts > 0)
        .values(attempts=AttemptCounter.attempts - 1)
    )


async def forget(session: AsyncSession, key: str) -> None:
    await session.execute(delete(AttemptCounter).where(AttemptCounter.key == key))


async def forget_quiet_keys(session: AsyncSession, now: datetime, after: timedelta) -> None:
    await session.execute(delete(AttemptCounter).where(AttemptCounter.last_at < now - after))
