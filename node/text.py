"""Member text: Markdown rendered to HTML, then sanitised so nothing active survives."""

from __future__ import annotations

import re
import unicodedata

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

# Raw HTML in member text is shown as text, never passed through. Tables are GitHub's
# pipe tables; their column alignment (a style attribute) does not survive sanitising.
_markdown = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(
    ["strikethrough", "table"]
)

ALLOWED_TAGS = {
    "p", "br", "strong", "em", "del", "s", "a", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
LINK_REL = "nofollow ugc noopener"
# A code block keeps its lines and scrolls sideways on a narrow screen: it takes keyboard
# focus, so that it can be scrolled without a mouse, and a name said when it gets it (WCAG
# 2.1.1; axe-core's scrollable-region-focusable). Set on every <pre>, whatever it came with.
CODE_BLOCK_ATTRIBUTES = {"tabindex": "0", "role": "group", "aria-label": "Code"}

# A bare web address in running text: up to the next space or angle bracket; trailing
# punctuation belongs to the sentence, a closing bracket only when it closes none in the URL.
_BARE_URL = re.compile(r"\bhttps?://[^\s<>\"]+", re.IGNORECASE)
_SENTENCE_END = ".,;:!?'\"*_"


def _url_end(url: str) -> str:
    while url and (
        url[-1] in _SENTENCE_END or (url[-1] == ")" and url.count(")") > url.count("("))
    ):
        url = url[:-1]
    return url


def _linked(token: Token, md: MarkdownIt) -> list[Token]:
    """A text token split into text and links around the bare web addresses in it."""
    pieces: list[Token] = []
    text, at = token.content, 0
    for found in _BARE_URL.finditer(text):
        url = _url_end(found.group())
        href = md.normalizeLink(url)
        if md.validateLink(href):
            if found.start() > at:
                pieces.append(Token("text", "", 0, content=text[at : found.start()]))
            pieces.append(Token("link_open", "a", 1, attrs={"href": href}))
            pieces.append(Token("text", "", 0, content=url))
            pieces.append(Token("link_close", "a", -1))
            at = found.start() + len(url)
    if not pieces:
        return [token]
    if at < len(text):
        pieces.append(Token("text", "", 0, content=text[at:]))
    return pieces


def _link_bare_urls(state: StateCore) -> None:
    """Turn http(s) addresses written as plain text into links (not inside links or code)."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        inside_link = 0
        for token in block.children:
            inside_link += {"link_open": 1, "link_close": -1}.get(token.type, 0)
            if token.type == "text" and not inside_link and "://" in token.content:
                children.extend(_linked(token, state.md))
            else:
                children.append(token)
        block.children = children


# After text_join, so that an address is one text token.
_markdown.core.ruler.push("bare_urls", _link_bare_urls)


def sanitise_html(html: str) -> str:
    """Keep only plain formatting: no script, no style, no event attributes, no images;
    code blocks reachable by keyboard."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel=LINK_REL,
        set_tag_attribute_values={"pre": CODE_BLOCK_ATTRIBUTES},
        strip_comments=True,
    )


def render_markdown(source: str) -> str:
    return sanitise_html(_markdown.render(source))


def normalise_line_endings(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Embeddings, overrides and isolates: they reorder the text that follows them, so that
# "gpj.exe" can read "exe.jpg", or a name can swallow the words after it.
_REORDERING = re.compile("[\u202a-\u202e\u2066-\u2069]")
# C0 and C1 controls other than tab and line feed; NUL stays, for the field checks to refuse
# by name (PostgreSQL cannot store it).
_CONTROLS = re.compile("[\x01-\x08\x0b-\x1f\x7f-\x9f]")
# Letters that show nothing (Hangul fillers, the blank Braille pattern): a name of them
# looks empty, or like another name with them added.
_BLANK_LETTERS = re.compile("[\u115f\u1160\u3164\uffa0\u2800]")


def neutralise(text: str, *, name: bool = False) -> str:
    """Text that people will read, as it is kept: in NFC, without bidi embeddings, overrides
    and isolates, and without control characters.

    A `name` (display names, usernames of other servers, group names, titles, content
    warnings) is one line and loses every invisible character as well: zero-width spaces and
    joiners, direction marks, soft hyphens, fillers. Running text (posts, bios, descriptions)
    keeps its line breaks, and the joiners and marks some scripts and emoji need.

    Every piece of text that reaches the domain, from a form or from another server, passes
    through here once."""
    text = _CONTROLS.sub("", _REORDERING.sub("", unicodedata.normalize("NFC", text)))
    if not name:
        return text
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(_BLANK_LETTERS.sub("", visible).split())
