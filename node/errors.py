"""Domain errors, mapped by the web layer to 404, 403, 409, 400."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose; the message is shown to the person."""


class NotFound(DomainError):
    pass


class Forbidden(DomainError):
    pass


class Conflict(DomainError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(DomainError):
    """One or more fields are wrong; `problems` maps a field name to a readable message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(problems.values()))
        self.problems = problems
