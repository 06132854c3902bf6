"""Attempt counters that hold across processes: sign-in guesses and registrations
(throttles), posts, reports and follow requests (rates).

An attempt is counted before it is made (the password checked, the account created, the
post written), by a compare-and-set on its counter row, so that concurrent attempts in any
number of processes sharing the database never get more than the limit allows. An attempt
that turns out well is refunded by the caller; one counted in the same transaction as what
it makes is taken back with it if that fails.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import Rate, Throttle
from node.errors import DomainError
from node.storage.models import AttemptCounter

# Compare-and-set tries before giving up; only a crowd of attempts on one key gets there.
CONTENDED_TRIES = 8


class Throttled(DomainError):
    """Too many attempts under a key: the next is allowed after `wait`."""

    def __init__(self, wait: timedelta, reason: str = "Too many attempts.") -> None:
        self.wait = wait
        super().__init__(f"{reason} Please wait {describe_wait(wait)} and try again.")


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


async def count_in_window(
    session: AsyncSession, key: str, rate: Rate, now: datetime, reason: str
) -> None:
    """Count one action under `key` in its window, or raise Throttled (saying `reason`) if
    `rate.count` were done in it already. The window opens with the first action after the
    last window closed; for these keys `last_at` holds when it opened."""
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
            continue
        attempts, opened_at = row
        if now - opened_at >= rate.period:
            counted = {"attempts": 1, "last_at": now}  # a new window opens
        elif attempts >= rate.count:
            raise Throttled(opened_at + rate.period - now, reason)
        else:
            counted = {"attempts": attempts + 1}
        changed = await session.execute(
            update(AttemptCounter)
            .where(
                AttemptCounter.key == key,
                AttemptCounter.attempts == attempts,
                AttemptCounter.last_at == opened_at,
            )
            .values(**counted)
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            return
    raise Throttled(rate.period / rate.count, reason)


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
