"""Time is injected: services take `now`, callers get it from a Clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    """Development only: time that runs `rate` times faster than the wall clock from the
    moment it is made, so that a real process shows in seconds what its retry and circuit
    policies do over minutes (`HEALTHNODE_CLOCK_RATE`, README)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._start = datetime.now(UTC)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._started) * self.rate)
