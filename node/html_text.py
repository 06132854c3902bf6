"""Plain text out of (remote) HTML: for titles, lengths and sources when no Markdown came."""

from __future__ import annotations

import html
import re

import nh3


def html_to_text(markup: str) -> str:
    with_breaks = re.sub(r"(?i)<\s*(br|/p|/li|/h[1-6]|/blockquote)\s*/?>", "\n", markup)
    text = html.unescape(nh3.clean(with_breaks, tags=set()))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
