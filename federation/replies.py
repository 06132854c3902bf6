"""The inbox worker's fast path: plain replies of a claimed batch, processed together.

Most of what a public group's inbox receives is one kind of item: a Create{Note} (or Article)
that replies to a post of the group, its object embedded by the author's own server, from an
author already known here, addressed publicly to the group. A run of such items in a claimed
batch is processed set-based: one query each for the posts they reply to (with their thread
and group, and any of the replies already stored), the authors, and the ids deleted before
they arrived; then
`posts.reply_many`, which applies every rule of `posts.reply` to each reply and inserts the
accepted ones with one statement; then the outbox stores the group's Announces with one
statement and their deliveries with another; the items are marked done with one statement.

Only outcomes that the per-item path (Processor.process) would certainly reach are settled
here: stored, already here, or deleted before it arrived. Everything else (an item of another
shape, an unknown or stale author, a parent not here, a reply that a rule refuses) is handed
back, in its place in the batch, to the per-item path, which then decides it exactly as it
always does: the same outcome and the same reason. Should the run's statements fail at the
database, its items are handed back too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from federation.jsonld import PUBLIC_ALIASES
from federation.origins import origin_of
from federation.processing import Processor
from federation.vocab import Activity, PostDoc, VocabError, parse_activity, parse_post, same_origin
from node import ids, posts, remote
from node.events import PENDING_EVENTS
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import LOCAL, InboxItem
from node.storage.states import INBOX_ITEM, InboxItemState
from node.validation import normalise_handle

log = logging.getLogger(__name__)

REPLY_TYPES = ("Note", "Article")
# How many queued items a batch claims: plain replies cost little each, and the statements
# of a run are shared by all of it. The per-item path still takes its own batch's worth.
CLAIM = 200


@dataclass(frozen=True)
class PlainReply:
    """An item of the fast path's shape, read without the database."""

    item: InboxItem
    activity: Activity
    doc: PostDoc
    group_slugs: tuple[str, ...]  # local groups it is addressed to, in the order looked for
    parent: ids.ThreadRef | ids.PostRef | str  # one of ours, or a remote post's id


class BatchedReplies:
    def __init__(self, node: NodeContext, processor: Processor) -> None:
        self.node = node
        self.settled = 0  # items settled together so far, counted by the inbox queue's metrics
        self.processor = processor
        self.iris = processor.documents.iris

    async def left_over(
        self, session: AsyncSession, items: list[InboxItem], now: datetime, most: int
    ) -> AsyncIterator[InboxItem]:
        """The claimed items in order, but for those settled here: each run of plain replies
        is processed together when the run ends, and those of it not settled are yielded
        then, in their order, before the item that ended the run. The caller processes each
        yielded item before asking for the next one. At most `most` items are yielded (the
        per-item path's batch); the items after the last one yielded are left as they were,
        queued, for the next batch."""
        run: list[PlainReply] = []
        yielded = 0
        for item in items:
            plain = self.plain_reply(item)
            if plain is not None:
                run.append(plain)
                continue
            for left in [*await self._process(session, run, now), item]:
                if yielded == most:
                    return
                yielded += 1
                yield left
            run = []
        for left in await self._process(session, run, now):
            if yielded == most:
                return
            yielded += 1
            yield left

    def plain_reply(self, item: InboxItem) -> PlainReply | None:
        """The item as a plain reply, or None when it has another shape."""
        try:
            activity = parse_activity(json.loads(item.body))
            obj = activity.object
            if activity.type != "Create" or not isinstance(obj, dict):
                return None
            # Embedded by the author's own server: the per-item path would not fetch it.
            if not isinstance(obj.get("id"), str) or not same_origin(obj["id"], activity.actor):
                return None
            doc = parse_post(obj)
        except (ValueError, VocabError):
            return None
        if doc.type not in REPLY_TYPES or not doc.in_reply_to:
            return None
        if doc.attributed_to != activity.actor:
            return None
        if self.iris.is_local(activity.actor) or self.processor.blocked(activity.actor):
            return None
        if not any(address in PUBLIC_ALIASES for address in doc.to + doc.cc):
            return None
        addresses = doc.audience + activity.audience + doc.to + doc.cc + activity.to + activity.cc
        slugs = []
        for address in dict.fromkeys(addresses):
            match self.iris.parse_local(address):
                case ids.GroupRef(slug):
                    slugs.append(slug)
        if not slugs:
            return None
        parent: ids.ThreadRef | ids.PostRef | str
        match self.iris.parse_local(doc.in_reply_to):
            case ids.ThreadRef() | ids.PostRef() as ours:
                parent = ours
            case None if not self.iris.is_local(doc.in_reply_to):
                parent = doc.in_reply_to
            case _:
                return None
        return PlainReply(item, activity, doc, tuple(slugs), parent)

    async def _process(
        self, session: AsyncSession, run: list[PlainReply], now: datetime
    ) -> list[InboxItem]:
        """Settle what can be settled of a run in a savepoint; answers the items left over."""
        if not run:
            return []
        events_before = list(session.info.get(PENDING_EVENTS, []))
        try:
            async with session.begin_nested():
                done, left = await self._apply(session, run, now)
                await self.node.publish_pending(session)
                if done:
                    await session.execute(
                        INBOX_ITEM.update(
                            InboxItem,
                            [InboxItemState.QUEUED],
                            InboxItemState.DONE,
                            processed_at=now,
                        )
                        .where(InboxItem.id.in_(done))
                        .execution_options(synchronize_session=False)
                    )
        except DBAPIError:
            log.warning("processing %d replies together failed; one by one", len(run))
            session.info[PENDING_EVENTS] = events_before
            return [plain.item for plain in run]
        self.settled += len(done)
        return left

    async def _apply(
        self, session: AsyncSession, run: list[PlainReply], now: datetime
    ) -> tuple[list[int], list[InboxItem]]:
        """(ids of the items settled, items left over)."""
        remote_parents = [plain.parent for plain in run if isinstance(plain.parent, str)]
        found = await remote.post_refs(
            session,
            ap_ids=[plain.doc.id for plain in run] + remote_parents,
            post_ids=[p.parent.post_id for p in run if isinstance(p.parent, ids.PostRef)],
            opening_of=[p.parent.thread_id for p in run if isinstance(p.parent, ids.ThreadRef)],
        )
        authors = await self.processor.directory.known_members(
            session, {plain.activity.actor for plain in run}, now
        )
        deleters = await remote.deleters_among(session, [plain.doc.id for plain in run])

        done: list[int] = []
        left: set[int] = set()
        replies: list[tuple[PlainReply, posts.NewReply]] = []
        seen: set[str] = set()
        for plain in run:
            first = plain.doc.id not in seen
            seen.add(plain.doc.id)
            if not first:
                left.add(plain.item.id)  # decided after the first, by the per-item path
                continue
            if plain.doc.id in found.by_ap_id:
                done.append(plain.item.id)  # already here
                continue
            match plain.parent:
                case ids.ThreadRef(thread_id):
                    parent = found.opening_of.get(thread_id)
                case ids.PostRef(post_id):
                    parent = found.by_id.get(post_id)
                case str(ap_id):
                    parent = found.by_ap_id.get(ap_id)
            # The per-item path takes the first addressed group that exists here: when that
            # is the parent's own group, it is known without a query of its own.
            group = parent.group if parent is not None else None
            if group is None or group.domain != LOCAL:
                left.add(plain.item.id)
                continue
            if group.slug != normalise_handle(plain.group_slugs[0]):
                left.add(plain.item.id)
                continue
            author = authors.get(plain.activity.actor)
            if author is None:
                left.add(plain.item.id)
                continue
            if plain.doc.id in deleters:
                if plain.activity.actor in deleters[plain.doc.id]:
                    done.append(plain.item.id)  # its author deleted it before it got here
                else:
                    left.add(plain.item.id)  # someone else's Delete: the per-item path decides
                continue
            draft = self.processor._draft(plain.doc)  # the per-item path's own conversion
            replies.append(
                (
                    plain,
                    posts.NewReply(
                        Viewer(author.id),
                        thread_id=parent.thread.id,
                        parent_id=parent.post.id,
                        draft=draft,
                        origin=origin_of(session, plain.activity),
                    ),
                )
            )
        results = await posts.reply_many(
            session, self.processor.limits, [new for _, new in replies], now
        )
        for (plain, _), result in zip(replies, results, strict=True):
            if isinstance(result, str):
                done.append(plain.item.id)
            else:
                left.add(plain.item.id)  # refused: the per-item path says why
        return done, [plain.item for plain in run if plain.item.id in left]
