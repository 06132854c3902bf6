"""The SQL statements a node runs while a test does something, for tests that count work."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from node.runtime import NodeContext


@contextmanager
def statements_of(node: NodeContext, requests_only: bool = False) -> Iterator[list[str]]:
    """The SQL statements the node runs meanwhile, without their parameters. With
    `requests_only`, only those its web requests run: the node's workers share the engine,
    and may run theirs (closing an ended Q&A, announcing expired verifications) meanwhile."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        if not requests_only or _in_request_handler():
            seen.append(" ".join(str(args[2]).split()))

    event.listen(node.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(node.engine.sync_engine, "before_cursor_execute", record)


def _in_request_handler() -> bool:
    task = asyncio.current_task()
    coroutine = task.get_coro() if task is not None else None
    return getattr(coroutine, "__qualname__", "").startswith("RequestHandler.")
