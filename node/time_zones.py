"""The time zone a reader sees times in: their own choice, else their browser's, else UTC.

Zone names are IANA names (Europe/London) that the zoneinfo database on this machine knows;
anything else, from a form or a cookie, is never used."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, tzinfo
from functools import lru_cache

MAX_NAME = 64
TIME_ZONE_PROBLEM = (
    "Give a time zone by its name, like Europe/London or America/New_York, or leave it empty."
)


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def valid_zone(name: str | None) -> str | None:
    """`name` when it is a zone this machine knows, else None (never raises)."""
    if not name or len(name) > MAX_NAME or name not in known_zones():
        return None
    return name


def reader_zone(chosen: str | None, browser: str | None) -> tzinfo:
    """The member's chosen zone, else the browser's, else UTC."""
    name = valid_zone(chosen) or valid_zone(browser)
    return zoneinfo.ZoneInfo(name) if name else UTC


def zone_label(zone: tzinfo, moment: datetime) -> str:
    """How a time in `zone` names its zone: "UTC", or the local abbreviation (GMT, CET,
    EST) where there is one, else the offset (+0530)."""
    if zone is UTC:
        return "UTC"
    local = moment.astimezone(zone)
    name = local.tzname() or ""
    return name if name and name[0] not in "+-" else local.strftime("UTC%z")
