"""Log lines: text (the default) or one JSON object per line (`--log-format json`), each
carrying the id of the request it was written in. The id is made here for every request,
or taken from X-Request-Id when a trusted proxy sent it (web/client_address.py), and is
answered in the X-Request-Id header.

What a line holds is what the code logs: the code logs route patterns, never paths, post
text, passwords, tokens or email addresses (tests/test_no_leaks.py greps both formats)."""

from __future__ import annotations

import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime

from aiohttp import web

from node.config import LOG_FORMATS as LOG_FORMATS  # the choices, for the command line
from web.client_address import from_trusted_proxy

REQUEST_ID_HEADER = "X-Request-Id"
# An id a proxy may hand on: short, and nothing a log line or a header could be bent with.
PASSED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_for(request: web.Request) -> str:
    """The trusted proxy's id for this request if it sent a well-formed one, else a new one."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    if PASSED_ID.fullmatch(offered) and from_trusted_proxy(request):
        return offered
    return secrets.token_hex(16)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id
    (inside a request), and exception (a traceback) when one is logged."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The text format, with ` [request_id]` after the message inside a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None) or request_id.get()
        if not rid:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{rid}]{newline}{rest}"


def configure_logging(log_format: str, level: int) -> None:
    """Log to stderr in the chosen format. Like logging.basicConfig, does nothing when the
    root logger has handlers already (the command runs inside something that logs)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
