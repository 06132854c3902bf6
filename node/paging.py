"""Keyset pagination for every list that grows: a page is the rows after (or before) the
last row seen, in one fixed order, so a row that arrives meanwhile never shifts the rows
of the pages after it (no row twice, none skipped), as `OFFSET` would.

A list is ordered by a few keys, all descending (newest first) or all ascending, the last
of them unique (an id). A cursor names one row by those keys, as text for a URL: the keys' values
joined by dots, a moment in microseconds since the epoch. `Older` pages continue after the
last row shown, `Newer` ones before the first. A cursor that does not parse is refused with
a reason (node.errors.Invalid, a 400), never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, and_, or_

from node.errors import Invalid
from node.ids import MAX_ROW_ID

T = TypeVar("T")
KeyKind = Literal["moment", "number", "id"]
Key = datetime | int | str

OLDER = "before"  # the URL parameter of a link to the page after the last row shown
NEWER = "after"  # and of one to the page before the first
PAGE_SIZE = 50
BAD_CURSOR = "This page link is not valid (it may have been cut short): start from the first page."

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PARTS = {
    "moment": re.compile(r"[0-9]{1,17}"),
    "number": re.compile(r"[0-9]{1,10}"),
    "id": re.compile(r"[0-9a-z]{1,20}"),
}
_LONGEST = 64


@dataclass(frozen=True)
class PageRequest:
    """Which page of a list: the first (no cursor), or the rows older or newer than a row."""

    cursor: tuple[Key, ...] | None = None
    newer: bool = False
    size: int = PAGE_SIZE


FIRST_PAGE = PageRequest()


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows, and the cursors of the pages on either side (None: no such page)."""

    items: list[T]
    older: str | None
    newer: str | None

    @property
    def first(self) -> bool:
        return self.newer is None


def _encode(value: Key) -> str:
    if isinstance(value, datetime):
        delta = value.astimezone(UTC) - _EPOCH
        return str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    return str(int(value)) if isinstance(value, bool | int) else value


def encode_cursor(values: Sequence[Key]) -> str:
    return ".".join(_encode(value) for value in values)


def decode_cursor(text: str, kinds: Sequence[KeyKind]) -> tuple[Key, ...]:
    """The keys a cursor names; Invalid when it is not one of ours for these kinds."""
    parts = text.split(".") if len(text) <= _LONGEST else []
    if len(parts) != len(kinds):
        raise Invalid({"page": BAD_CURSOR})
    values: list[Key] = []
    for part, kind in zip(parts, kinds, strict=True):
        if not _PARTS[kind].fullmatch(part):
            raise Invalid({"page": BAD_CURSOR})
        if kind == "moment":
            try:
                values.append(_EPOCH + timedelta(microseconds=int(part)))
            except OverflowError:
                raise Invalid({"page": BAD_CURSOR}) from None
        elif kind == "number":
            if int(part) > MAX_ROW_ID:  # compared with integer columns: no row is beyond it
                raise Invalid({"page": BAD_CURSOR})
            values.append(int(part))
        else:
            values.append(part)
    return tuple(values)


def page_request(query: Any, kinds: Sequence[KeyKind], size: int = PAGE_SIZE) -> PageRequest:
    """The page a URL's query asks for (`before` or `after`, at most one; neither: the
    first page)."""
    older, newer = query.get(OLDER), query.get(NEWER)
    if older is not None and newer is not None:
        raise Invalid({"page": BAD_CURSOR})
    if older is None and newer is None:
        return PageRequest(size=size)
    text = older if older is not None else newer
    return PageRequest(decode_cursor(text, kinds), newer=newer is not None, size=size)


def beyond(
    columns: Sequence[ColumnElement[Any]],
    values: Sequence[Key],
    newer: bool,
    ascending: bool = False,
) -> ColumnElement[bool]:
    """The rows after the cursor's row in the list's order (descending unless `ascending`),
    or, `newer`, before it: `(a, b, c) < (x, y, z)` spelled out, for SQLite and PostgreSQL."""
    greater = newer != ascending
    clauses = []
    for index, column in enumerate(columns):
        equal = [columns[i] == values[i] for i in range(index)]
        step = column > values[index] if greater else column < values[index]
        clauses.append(and_(*equal, step))
    return or_(*clauses)


def order(
    columns: Sequence[ColumnElement[Any]], newer: bool, ascending: bool = False
) -> list[ColumnElement[Any]]:
    """The ORDER BY that reads rows from the cursor on (`newer`: back towards the start)."""
    return [column.asc() if newer != ascending else column.desc() for column in columns]


def page_of(rows: list[T], request: PageRequest, key: Callable[[T], Sequence[Key]]) -> Page[T]:
    """A page from rows read with `order` and `beyond` and a limit of one more than the page
    size: that extra row says whether there is a page further on."""
    more = len(rows) > request.size
    rows = rows[: request.size]
    if request.newer:
        rows.reverse()
    if not rows:
        return Page([], None, None)
    first, last = encode_cursor(key(rows[0])), encode_cursor(key(rows[-1]))
    if request.newer:
        return Page(rows, last, first if more else None)
    return Page(rows, last if more else None, first if request.cursor is not None else None)
