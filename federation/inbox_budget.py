"""How many inbox POSTs one server may send this process: a token bucket per host.

The host is the one a request's signature `keyId` names, read from the headers alone, before
the body is read and before any key is fetched: a flood is refused for the price of parsing
one header, and cannot make this node fetch anything. The budget is per process, in memory
(docs/FEDERATION.md, "Rate limits"): a refusal must cost no database round trip, and the
buckets are forgotten on restart, which favours the sender, never a flood for long.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from node.config import Rate

# Hosts remembered at once; past this the least recently seen is forgotten (its bucket full
# again). A sender naming ever new hosts gets a bucket for each anyway.
HOSTS_REMEMBERED = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: datetime


class InboxBudget:
    """A bucket of `rate.count` POSTs per host, refilled at `rate.count` per `rate.period`."""

    def __init__(self, rate: Rate | None, hosts_remembered: int = HOSTS_REMEMBERED) -> None:
        self.rate = rate
        self.hosts_remembered = hosts_remembered
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, host: str, now: datetime) -> timedelta | None:
        """Spend one POST of `host`'s budget, or say how long until one is there."""
        if self.rate is None or not host:
            return None
        capacity = float(self.rate.count)
        per_second = capacity / self.rate.period.total_seconds()
        bucket = self._buckets.pop(host, None) or _Bucket(capacity, now)
        elapsed = max(0.0, (now - bucket.at).total_seconds())  # a clock set back refills none
        bucket.tokens = min(capacity, bucket.tokens + elapsed * per_second)
        bucket.at = now
        self._buckets[host] = bucket
        while len(self._buckets) > self.hosts_remembered:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return timedelta(seconds=(1.0 - bucket.tokens) / per_second)
