"""Full-text search over groups, threads and posts, as the viewer may read them.

What is searched is `SearchDocument` rows, kept in step by node/search_index.py. The database's
own index does the matching: SQLite's FTS5 (porter stemming, ranked by bm25) or
PostgreSQL's `tsvector` ('english', ranked by ts_rank_cd), with a highlighted snippet.

Who may read what is decided by node.policy in the query itself (`visible_groups`), on the
live rows: a private group's posts are found by its active members (and the node's admins,
who may read every group), by nobody else. A private match answers an outsider with the page
no match gives; it is not the same work (the index finds the rows the query then leaves out),
so unlike a group look-up its time is not made equal: docs/POLICY.md, "Search".
Held, deleted and erased posts, and what the federation policy hides, are never found.

A query is never handed to the index as typed: it is cut into plain words (letters and
digits), each searched as a word and as the start of a longer one ("hypo" finds "hypos" and
"hypoglycaemia"), all of them required. No search syntax survives, so no input is an error.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from node.groups import visible_groups
from node.policy import Action, Viewer
from node.search_index import START, STOP, cleaned
from node.storage.models import ConditionGroup, Member, Post, SearchDocument, Thread

PAGE_SIZE = 20
MAX_PAGE = 25  # a bound on the offset: nobody reads past 500 results, and each costs work
QUERY_MAX = 200  # characters of a query looked at; the box allows as many
MAX_TERMS = 8
TERM_MAX = 40
PREFIX_MIN = 3  # shorter words are matched whole: "a*" would match nearly everything
SNIPPET_WORDS = 24
_WORD = re.compile(r"[^\W_]+")
FTS_TABLE = table("search_index")  # SQLite's FTS5 table (migration 0030_search); not mapped


class Kind(StrEnum):
    GROUP = "groups"
    THREAD = "threads"
    POST = "posts"


KINDS = tuple(Kind)


def terms_of(query: str) -> list[str]:
    """The plain words of a query, lower-cased, at most MAX_TERMS of at most TERM_MAX
    characters each, without repeats; no character of search syntax survives."""
    words = _WORD.findall(unicodedata.normalize("NFKC", query[:QUERY_MAX]).lower())
    terms: list[str] = []
    for word in words:
        term = word[:TERM_MAX]
        if term not in terms:
            terms.append(term)
    return terms[:MAX_TERMS]


def fts5_query(terms: list[str]) -> str:
    """An FTS5 query requiring every term, each quoted (so a word such as NEAR or OR is a
    word) and, from PREFIX_MIN characters, also matched as a prefix."""
    parts = [f'"{term}"*' if len(term) >= PREFIX_MIN else f'"{term}"' for term in terms]
    return " AND ".join(parts)


def tsquery(terms: list[str]) -> str:
    """The same for PostgreSQL's to_tsquery: quoted lexemes, prefixes marked `:*`."""
    parts = [
        f"'{term}'" + (":*" if len(term) >= PREFIX_MIN else "")
        for term in (term.replace("'", "") for term in terms)
    ]
    return " & ".join(parts)


def highlighted(snippet: str) -> str:
    """A snippet as HTML: every character escaped, then only the index's own markers made
    <mark> elements, so nothing in a post's text can become markup."""
    escaped = html.escape(snippet, quote=True)
    if escaped.count(START) != escaped.count(STOP):
        return cleaned(escaped)
    return escaped.replace(START, "<mark>").replace(STOP, "</mark>")


@dataclass(frozen=True)
class Hit:
    kind: Kind
    group: ConditionGroup
    # For threads and posts: where it is, and the thread's title (plain text).
    thread_id: str | None
    post_id: str | None
    thread_title: str
    # HTML, escaped by `highlighted`; a post behind a content warning shows the warning only.
    snippet_html: str
    content_warning: str


@dataclass(frozen=True)
class Results:
    terms: list[str]
    kind: Kind | None
    page: int
    hits: list[Hit]
    more: bool

    @property
    def searched(self) -> bool:
        return bool(self.terms)


async def search(
    session: AsyncSession,
    viewer: Viewer,
    query: str,
    *,
    kind: Kind | None = None,
    page: int = 1,
) -> Results:
    """One page of results, best first, of what the viewer may read; `page` from 1 to
    MAX_PAGE (callers refuse others)."""
    if not 1 <= page <= MAX_PAGE:
        raise ValueError("page out of range")
    terms = terms_of(query)
    if not terms:
        return Results(terms, kind, page, [], False)
    sqlite = session.bind.dialect.name == "sqlite"
    statement = _matching(viewer, terms, sqlite, kind)
    rows = (
        await session.execute(statement.limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE))
    ).all()
    shown = rows[:PAGE_SIZE]
    snippets = await _snippets(session, terms, sqlite, [row.document_id for row in shown])
    hits = [_hit(row, snippets) for row in shown]
    return Results(terms, kind, page, hits, len(rows) > PAGE_SIZE)


async def _snippets(
    session: AsyncSession, terms: list[str], sqlite: bool, document_ids: list[int]
) -> dict[int, str]:
    """The snippets of one page of documents. SQLite computes result columns before it sorts,
    so a snippet in the ranked query would be made for every match, not for the page's:
    they are asked for here, for the page's documents only. PostgreSQL evaluates the costly
    ts_headline after its sort and limit, in the ranked query itself."""
    if not sqlite or not document_ids:
        return {}
    rowid = literal_column("search_index.rowid")
    snippet = func.snippet(literal_column("search_index"), 1, START, STOP, "…", SNIPPET_WORDS)
    rows = await session.execute(
        select(rowid, snippet)
        .select_from(FTS_TABLE)
        .where(_fts_match(terms), rowid.in_(document_ids))
    )
    return {int(document_id): str(text_) for document_id, text_ in rows.all()}


def _fts_match(terms: list[str]) -> ColumnElement[bool]:
    return text("search_index MATCH :fts").bindparams(fts=fts5_query(terms))


def _matching(
    viewer: Viewer, terms: list[str], sqlite: bool, kind: Kind | None
) -> Select[tuple[object, ...]]:
    author = aliased(Member)
    thread_author = aliased(Member)
    opening = aliased(Post)
    if sqlite:
        matches = _fts_match(terms)
        rank = func.bm25(literal_column("search_index"), 10.0, 1.0)  # lower is better
        snippet: ColumnElement[str | None] = null()  # made for the page only (`_snippets`)
        order = [rank, SearchDocument.id]
    else:
        document = literal_column("search_documents.document")
        wanted = func.to_tsquery("english", literal(tsquery(terms)))
        matches = document.op("@@")(wanted)
        rank = func.ts_rank_cd(document, wanted)
        options = f"StartSel={START}, StopSel={STOP}, MaxWords={SNIPPET_WORDS}, MinWords=8"
        snippet = func.ts_headline("english", SearchDocument.body, wanted, options)
        order = [rank.desc(), SearchDocument.id]
    statement = visible_groups(viewer, Action.READ).join(
        SearchDocument, SearchDocument.group_id == ConditionGroup.id
    )
    if sqlite:
        statement = statement.join(
            FTS_TABLE, literal_column("search_index.rowid") == SearchDocument.id
        )
    statement = (
        statement.outerjoin(Post, Post.id == SearchDocument.post_id)
        .outerjoin(Thread, Thread.id == Post.thread_id)
        .outerjoin(author, author.id == Post.author_id)
        .outerjoin(thread_author, thread_author.id == Thread.author_id)
        .outerjoin(opening, and_(opening.thread_id == Thread.id, opening.parent_id.is_(None)))
        .add_columns(
            SearchDocument.id.label("document_id"),
            SearchDocument.post_id,
            Post.parent_id,
            Thread.id,
            Thread.title,
            Post.content_warning,
            snippet.label("snippet"),
        )
        .where(
            matches,
            or_(
                SearchDocument.post_id.is_(None),
                and_(
                    # Published and not erased: a held post is found by nobody, not even
                    # its author or the moderators (they have the queue of held posts).
                    Post.deleted_at.is_(None),
                    Post.held_at.is_(None),
                    opening.held_at.is_(None),
                    author.federation_hidden == false(),
                    thread_author.federation_hidden == false(),
                ),
            ),
        )
        .order_by(*order)
    )
    if kind is Kind.GROUP:
        statement = statement.where(SearchDocument.post_id.is_(None))
    elif kind is Kind.THREAD:
        statement = statement.where(SearchDocument.post_id.is_not(None), Post.parent_id.is_(None))
    elif kind is Kind.POST:
        statement = statement.where(Post.parent_id.is_not(None))
    return statement


def _hit(row: Row[tuple[object, ...]], snippets: dict[int, str]) -> Hit:
    group, _state, _role, document_id, post_id, parent_id, thread_id, title, warning, snippet = row
    snippet = snippets.get(document_id, snippet)  # type: ignore[call-overload]
    if post_id is None:
        kind = Kind.GROUP
    else:
        kind = Kind.THREAD if parent_id is None else Kind.POST
    shown = "" if warning else highlighted(snippet or "")
    return Hit(kind, group, thread_id, post_id, title or "", shown, warning or "")
