"""Keeping the search documents (node/search.py reads them) in step with what they index.

The domain functions that write indexed text call these in their own transaction: groups.py
(creation, settings), remote/actors.py (a remote group's name and summary), posts.py (a new
thread or reply, a batch of replies, an edit, and `tombstone`, which every deletion, rejection
and erasure goes through). The database's index follows the rows (migration 0030_search).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.storage.models import ConditionGroup, GroupCondition, Post, SearchDocument, Thread

# Private-use characters around a match in a snippet: taken out of every indexed text, so
# the only ones in a snippet are the index's own, and become <mark> after escaping.
START, STOP = "\ue000", "\ue001"
_MARKERS = {ord(START): None, ord(STOP): None}


def cleaned(text_: str) -> str:
    return text_.translate(_MARKERS)


def _document(group_id: int, post_id: str | None, title: str, body: str) -> dict[str, object]:
    return {"group_id": group_id, "post_id": post_id, "title": cleaned(title),
            "body": cleaned(body)}  # fmt: skip


async def index_group(session: AsyncSession, group: ConditionGroup) -> None:
    """(Re)index a group's name, description and tags, as they stand in the session."""
    tags = (
        await session.execute(
            select(GroupCondition.tag)
            .where(GroupCondition.group_id == group.id)
            .order_by(GroupCondition.tag)
        )
    ).scalars()
    await session.execute(
        delete(SearchDocument).where(
            SearchDocument.group_id == group.id, SearchDocument.post_id.is_(None)
        )
    )
    body = "\n".join([group.description, " ".join(tags)])
    await session.execute(insert(SearchDocument), [_document(group.id, None, group.name, body)])


async def index_posts(session: AsyncSession, post_ids: Collection[str]) -> None:
    """(Re)index posts as they stand in the database (flushed): their text, and the title of
    the thread a post opens; a deleted post is only taken out. Set-based, for batches."""
    if not post_ids:
        return
    wanted = sorted(post_ids)
    rows = (
        await session.execute(
            select(Post.id, Post.parent_id, Post.source, Thread.group_id, Thread.title)
            .join(Thread, Thread.id == Post.thread_id)
            .where(Post.id.in_(wanted), Post.deleted_at.is_(None))
        )
    ).all()
    await unindex_posts(session, wanted)
    if rows:
        await session.execute(
            insert(SearchDocument),
            [
                _document(group_id, post_id, title if parent_id is None else "", source)
                for post_id, parent_id, source, group_id, title in rows
            ],
        )


async def unindex_posts(session: AsyncSession, post_ids: Collection[str]) -> None:
    """Take posts out of the index (their text is erased: nothing of it may be found)."""
    await session.execute(delete(SearchDocument).where(SearchDocument.post_id.in_(post_ids)))
