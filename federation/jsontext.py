"""Reading JSON that came over the network: one strict reader for every remote document.

Refused (ValueError): bytes that are not UTF-8, text that is not JSON, nesting deep enough to
exhaust Python's recursion, and lone surrogates written as \\u escapes. A database cannot store
a lone surrogate and no text library accepts one, so a document holding one is refused whole
rather than failing later, in processing or in storage.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

# A \uD800-\uDFFF escape: a surrogate, paired or not; only these need the full check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def load_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8-sig")  # strict: encoded surrogates are refused here
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the JSON holds a lone surrogate") from None
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None
    return document


# Threads for CPU-heavy reading of documents (large JSON, JSON-LD expansion), so the event
# loop keeps answering pages meanwhile: two per process at most, whatever the number of
# senders, so that such work cannot take every core either.
DOCUMENT_THREADS = 2
_document_threads = ThreadPoolExecutor(DOCUMENT_THREADS, thread_name_prefix="documents")

T = TypeVar("T")


async def off_the_loop(work: Callable[..., T], *args: Any) -> T:
    """Run `work(*args)` in one of the document threads."""
    return await asyncio.get_running_loop().run_in_executor(_document_threads, work, *args)
