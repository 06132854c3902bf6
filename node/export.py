"""A member's data as one zip archive, written as it is read.

The archive never exists whole in memory: rows are read in keyset pages, each JSON file is
written item by item into a zip entry, and the zip's bytes are handed to `send` after every
page (zipfile writes to a sink that cannot seek by putting each entry's sizes in a data
descriptor after it). Both the web download and `healthnode member export` use it.

What it holds, and what it leaves out (docs/POLICY.md, "Export"):
- the member's own rows: profile, consent, memberships, posts and replies (with the title
  of their thread and the name of their group, never another member's text), helpful marks,
  poll votes (their own choices, never anyone else's), reports they filed;
- outbox.json: their posts as the `Create` activities this node federates, shaped by the
  federation side (`ArchiveShapes`), in an OrderedCollection like Mastodon's archive.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Protocol

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from node.privacy import ConsentRecord, consent_record
from node.storage.models import (
    ConditionGroup,
    Member,
    Membership,
    PollOption,
    PollVote,
    Post,
    Reaction,
    Report,
    Thread,
)

# Rows read per query: enough to keep queries few, few enough to keep memory flat.
PAGE_SIZE = 500

FILE_NAMES = (
    "profile.json",
    "consents.json",
    "memberships.json",
    "posts.json",
    "helpful_marks.json",
    "poll_votes.json",
    "reports.json",
    "outbox.json",
)

Send = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class PostRecord:
    """One of the member's posts with what it is read in: its thread, its group, and the
    post it answers with that post's author (whose IRI, never text, is in the archive)."""

    post: Post
    thread: Thread
    group: ConditionGroup
    author: Member
    parent: tuple[Post, Member] | None

    @property
    def published(self) -> bool:
        """Whether the post was ever offered to other servers: a held post was not, yet."""
        return self.post.held_at is None and self.post.deleted_at is None


class ArchiveShapes(Protocol):
    """IRIs and ActivityStreams shapes, from the federation side (federation.convert.Documents):
    the domain mints no AS2 of its own."""

    def object_iri(self, post: Post, thread: Thread) -> str: ...

    def thread_iri(self, thread: Thread) -> str: ...

    def group_iri(self, group: ConditionGroup) -> str: ...

    def member_iri(self, member: Member) -> str: ...

    def archived_outbox(self, member: Member) -> dict[str, Any]:
        """The OrderedCollection's head, without its items and their count."""
        ...

    def archived_create(self, record: PostRecord) -> dict[str, Any]:
        """A post's `Create`, as the node federates it (private groups: to the group only)."""
        ...


class _Pending:
    """The sink zipfile writes to: it keeps bytes until they are sent. It has no `seek` or
    `tell`, so zipfile streams (data descriptors) instead of seeking back to sizes."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _json(value: Any) -> bytes:
    # Compact: `indent` would leave the C encoder for the pure Python one, several times slower.
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class _Archive:
    def __init__(self, send: Send) -> None:
        self._pending = _Pending()
        self._zip = zipfile.ZipFile(self._pending, "w", compression=zipfile.ZIP_DEFLATED)  # type: ignore[arg-type]
        self._send = send

    async def flush(self) -> None:
        data = self._pending.take()
        if data:
            await self._send(data)

    async def whole(self, name: str, value: Any) -> None:
        """A small file, written at once."""
        with self._zip.open(name, "w") as entry:
            entry.write(_json(value) + b"\n")
        await self.flush()

    async def array(self, name: str, pages: AsyncIterator[Iterable[dict[str, Any]]]) -> int:
        """A JSON array written item by item, one page of rows at a time; its length."""
        count = 0
        with self._zip.open(name, "w") as entry:
            entry.write(b"[")
            async for page in pages:
                count = self._items(entry, page, count)
                await self.flush()
            entry.write(b"\n]\n" if count else b"]\n")
        await self.flush()
        return count

    async def collection(
        self, name: str, head: dict[str, Any], pages: AsyncIterator[Iterable[dict[str, Any]]]
    ) -> None:
        """An OrderedCollection whose orderedItems are streamed; totalItems follows them
        (key order means nothing in JSON), so it counts exactly what was written."""
        prefix = _json(head)[: -len(b"}")]
        count = 0
        with self._zip.open(name, "w") as entry:
            entry.write(prefix + b', "orderedItems": [')
            async for page in pages:
                count = self._items(entry, page, count)
                await self.flush()
            entry.write((b"\n]" if count else b"]") + f', "totalItems": {count}}}\n'.encode())
        await self.flush()

    @staticmethod
    def _items(entry: IO[bytes], page: Iterable[dict[str, Any]], count: int) -> int:
        for item in page:
            entry.write(b"," if count else b"")
            entry.write(b"\n" + _json(item))
            count += 1
        return count

    async def close(self) -> None:
        self._zip.close()
        await self.flush()


async def write_archive(
    session: AsyncSession,
    member: Member,
    *,
    shapes: ArchiveShapes,
    exported_at: datetime,
    send: Send,
) -> None:
    """Write `member`'s archive to `send`, a chunk at a time."""
    archive = _Archive(send)
    await archive.whole("profile.json", _profile(member, shapes, exported_at))
    await archive.whole("consents.json", _consents(await consent_record(session, member)))
    await archive.whole("memberships.json", await _memberships(session, member, shapes))
    await archive.array(
        "posts.json", _mapped(_post_pages(session, member), lambda r: _post(r, shapes))
    )
    await archive.array("helpful_marks.json", _helpful_marks(session, member, shapes))
    await archive.array("poll_votes.json", _poll_votes(session, member, shapes))
    await archive.array("reports.json", _reports(session, member, shapes))
    await archive.collection(
        "outbox.json",
        shapes.archived_outbox(member),
        _mapped(_post_pages(session, member, published_only=True), shapes.archived_create),
    )
    await archive.close()


def archive_name(member: Member, exported_at: datetime) -> str:
    return f"healthnode-{member.username}-{exported_at.strftime('%Y%m%d')}.zip"


# ------------------------------------------------------------ the small files


def _profile(member: Member, iris: ArchiveShapes, exported_at: datetime) -> dict[str, Any]:
    return {
        "username": member.username,
        "actor": iris.member_iri(member),
        "display_name": member.display_name,
        "about": member.bio,
        "role": member.role,
        "created_at": _time(member.created_at),
        "last_active_at": _time(member.last_active_at),
        "suspended_at": _time(member.suspended_at),
        "exported_at": _time(exported_at),
    }


def _consents(record: ConsentRecord) -> list[dict[str, Any]]:
    if record.at is None:
        return []
    return [
        {
            "what": "storing what you share about health on this node",
            "policy_version": record.version,
            "given_at": _time(record.at),
            "text": record.text,  # the privacy text as it read then (None if not kept)
        }
    ]


def _group(group: ConditionGroup, iris: ArchiveShapes) -> dict[str, Any]:
    return {
        "slug": group.slug,
        "server": group.domain or None,
        "name": group.name,
        "visibility": group.visibility,
        "id": iris.group_iri(group),
    }


async def _memberships(
    session: AsyncSession, member: Member, iris: ArchiveShapes
) -> list[dict[str, Any]]:
    # One row per group the member is in, asked to join or was banned from: few enough.
    rows = await session.execute(
        select(Membership, ConditionGroup)
        .join(ConditionGroup, ConditionGroup.id == Membership.group_id)
        .where(Membership.member_id == member.id)
        .order_by(Membership.created_at, ConditionGroup.id)
    )
    return [
        {
            "group": _group(group, iris),
            "state": membership.state,
            "role": membership.role,
            "since": _time(membership.created_at),
            "updated_at": _time(membership.updated_at),
            "banned_until": _time(membership.banned_until),
        }
        for membership, group in rows.all()
    ]


# ------------------------------------------------------------ the paged files


async def _keyset_pages(
    session: AsyncSession,
    statement: Select[Any],
    key: tuple[Any, ...],
    key_of: Callable[[Any], tuple[Any, ...]],
) -> AsyncIterator[list[Any]]:
    """Rows of `statement` in pages ordered by the `key` columns, each page starting after
    the last key of the one before (no OFFSET: every page costs the same)."""
    ordered = statement.order_by(*key).limit(PAGE_SIZE)
    after: tuple[Any, ...] | None = None
    while True:
        paged = ordered if after is None else ordered.where(tuple_(*key) > tuple_(*after))
        rows = list((await session.execute(paged)).all())
        if rows:
            yield rows
        if len(rows) < PAGE_SIZE:
            return
        after = key_of(rows[-1])


async def _mapped(
    pages: AsyncIterator[list[Any]], shape: Callable[[Any], dict[str, Any]]
) -> AsyncIterator[list[dict[str, Any]]]:
    async for page in pages:
        yield [shape(row) for row in page]


async def _post_pages(
    session: AsyncSession, member: Member, published_only: bool = False
) -> AsyncIterator[list[PostRecord]]:
    parent, parent_author = aliased(Post), aliased(Member)
    statement = (
        select(Post, Thread, ConditionGroup, parent, parent_author)
        .join(Thread, Thread.id == Post.thread_id)
        .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
        .outerjoin(parent, parent.id == Post.parent_id)
        .outerjoin(parent_author, parent_author.id == parent.author_id)
        .where(Post.author_id == member.id)
    )
    if published_only:
        statement = statement.where(Post.held_at.is_(None), Post.deleted_at.is_(None))
    async for page in _keyset_pages(session, statement, (Post.id,), lambda row: (row[0].id,)):
        yield [
            PostRecord(post, thread, group, member, _parent(above, above_author))
            for post, thread, group, above, above_author in page
        ]


def _parent(post: Post | None, author: Member | None) -> tuple[Post, Member] | None:
    return (post, author) if post is not None and author is not None else None


def _post(record: PostRecord, iris: ArchiveShapes) -> dict[str, Any]:
    post, thread = record.post, record.thread
    return {
        "id": iris.object_iri(post, thread),
        "group": _group(record.group, iris),
        # The thread's title gives the post its context; other members' posts stay out.
        "thread": {"id": iris.thread_iri(thread), "title": thread.title},
        "opens_thread": post.parent_id is None,
        "in_reply_to": (
            iris.object_iri(record.parent[0], thread) if record.parent is not None else None
        ),
        "content_warning": post.content_warning,
        "text": post.source,
        "html": post.content_html,
        "created_at": _time(post.created_at),
        "edited_at": _time(post.edited_at),
        "deleted_at": _time(post.deleted_at),
        "awaiting_moderator_approval": post.held_at is not None,
    }


async def _helpful_marks(
    session: AsyncSession, member: Member, iris: ArchiveShapes
) -> AsyncIterator[list[dict[str, Any]]]:
    statement = (
        select(Reaction, Post, Thread)
        .join(Post, Post.id == Reaction.post_id)
        .join(Thread, Thread.id == Post.thread_id)
        .where(Reaction.member_id == member.id)
    )
    key = (Reaction.post_id, Reaction.kind)
    async for page in _keyset_pages(
        session, statement, key, lambda row: (row[0].post_id, row[0].kind)
    ):
        yield [
            {
                "post": iris.object_iri(post, thread),
                "thread": {"id": iris.thread_iri(thread), "title": thread.title},
                "kind": reaction.kind,
                "marked_at": _time(reaction.created_at),
            }
            for reaction, post, thread in page
        ]


async def _poll_votes(
    session: AsyncSession, member: Member, iris: ArchiveShapes
) -> AsyncIterator[list[dict[str, Any]]]:
    statement = (
        select(PollVote, PollOption, Thread)
        .join(PollOption, PollOption.id == PollVote.option_id)
        .join(Thread, Thread.id == PollVote.thread_id)
        .where(PollVote.voter_id == member.id)
    )
    async for page in _keyset_pages(session, statement, (PollVote.id,), lambda row: (row[0].id,)):
        yield [
            {
                "thread": {"id": iris.thread_iri(thread), "title": thread.title},
                "option": option.name,
                "voted_at": _time(vote.created_at),
            }
            for vote, option, thread in page
        ]


async def _reports(
    session: AsyncSession, member: Member, iris: ArchiveShapes
) -> AsyncIterator[list[dict[str, Any]]]:
    reported, post, thread = aliased(Member), aliased(Post), aliased(Thread)
    statement = (
        select(Report, reported, post, thread)
        .outerjoin(reported, reported.id == Report.member_id)
        .outerjoin(post, post.id == Report.post_id)
        .outerjoin(thread, thread.id == post.thread_id)
        .where(Report.reporter_id == member.id)
    )
    async for page in _keyset_pages(session, statement, (Report.id,), lambda row: (row[0].id,)):
        yield [
            {
                "category": report.category,
                "comment": report.comment,
                "post": iris.object_iri(about, in_thread) if about and in_thread else None,
                "member": iris.member_iri(person) if person is not None else None,
                "state": report.state,
                "outcome": report.outcome,
                "filed_at": _time(report.created_at),
                "resolved_at": _time(report.resolved_at),
            }
            for report, person, about, in_thread in page
        ]
