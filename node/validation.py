"""Shared field checks. Each returns a readable problem or None."""

from __future__ import annotations

import re

HANDLE_PATTERN = re.compile(r"[a-z0-9_]{1,30}")


def normalise_handle(text: str) -> str:
    return text.strip().lower()


# A remote name is what its server calls the actor (preferredUsername, up to 100 characters,
# kept as given); with "@" and the domain, a handle is never longer than this.
REMOTE_HANDLE_MAX = 400


def remote_handle_readings(text: str) -> list[tuple[str, str]]:
    """The (name, domain) pairs a handle `name@domain` or `@name@domain` can mean: the name as
    typed (remote servers' names keep their case and may hold "@"), the domain lowercased.
    Empty when the text names no remote actor."""
    text = text.strip()
    if len(text) > REMOTE_HANDLE_MAX or "\x00" in text:
        return []  # no such name is stored; and PostgreSQL refuses NUL outright
    readings = []
    for candidate in dict.fromkeys((text, text.removeprefix("@"))):
        name, at, domain = candidate.rpartition("@")
        if at and name and domain:
            readings.append((name, domain.lower()))
    return readings


def handle_problem(handle: str, what: str) -> str | None:
    if not handle:
        return f"Choose a {what}."
    if not HANDLE_PATTERN.fullmatch(handle):
        return f"A {what} is 1 to 30 characters: lowercase letters, digits and underscores only."
    return None


def text_problem(text: str, label: str, maximum: int, required: bool = True) -> str | None:
    if required and not text.strip():
        return f"{label} cannot be empty."
    if len(text) > maximum:
        return f"{label} is too long: {len(text)} characters, the limit is {maximum}."
    if "\x00" in text:
        return f"{label} contains a character that cannot be stored."
    return None


def collect(**problems: str | None) -> dict[str, str]:
    return {field: message for field, message in problems.items() if message}
