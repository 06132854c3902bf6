"""Member text: Markdown rendered to HTML, then sanitised so nothing active survives."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

# Raw HTML in member text is shown as text, never passed through.
_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("strikethrough")

ALLOWED_TAGS = {
    "p", "br", "strong", "em", "del", "s", "a", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
LINK_REL = "nofollow ugc noopener"


def sanitise_html(html: str) -> str:
    """Keep only plain formatting: no script, no style, no event attributes, no images."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
        strip_comments=True,
    )


def render_markdown(source: str) -> str:
    return sanitise_html(_markdown.render(source))


def normalise_line_endings(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
