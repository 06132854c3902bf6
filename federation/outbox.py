"""Domain events -> activities and delivery rows, in the transaction that made the change.

FEP-1b12: a local public group announces every accepted activity to its remote followers,
wrapping what it received verbatim; a local member acting in a remote group sends the
activity to that group, which announces it. Private groups never produce anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from federation.actors import group_key_owner, member_key_owner
from federation.convert import Documents
from federation.jsonld import PUBLIC
from federation.origins import activity_of
from node import events, mentions, polls, professionals, remote
from node.actor_keys import INSTANCE_ACTOR, public_pem_of
from node.clock import Clock
from node.federation_policy import PolicyCache
from node.ids import ActivityRef, new_object_id
from node.partners import partners_of, reach_of, shares_with
from node.policy import federates, shared_with_partners
from node.qa_windows import QaWindow, windows_of
from node.storage.engine import after_commit
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Delivery,
    Member,
    OutboxActivity,
    PollOption,
    PollVote,
    Post,
    Reaction,
    Report,
    Thread,
)
from node.storage.states import DELIVERY, DeliveryState

# Why the unsent deliveries of something whose post was deleted are abandoned.
POST_DELETED = "the post was deleted"
REFUSED_BY_POLICY = "the federation policy refuses this server"

PostWritten = events.ThreadStarted | events.PostReplied | events.PostEdited
# A post, its thread and group; its author; the post it replies to, with that one's author.
PostContext = tuple[remote.PostRef, Member, tuple[Post, Member] | None]


@dataclass
class Planned:
    """An activity to publish: its outbox row, its document, and the inboxes it goes to."""

    row: dict[str, Any]
    document: dict[str, Any]
    inboxes: list[str] = field(default_factory=list)
    # A partner group's activity: delivered only to inboxes on its partner domains.
    partner_group_id: int | None = None


class Outbox:
    """The event sink that federation registers with the node."""

    def __init__(
        self,
        documents: Documents,
        clock: Clock,
        wake_deliveries: Callable[[], None],
        policy: PolicyCache | None = None,
    ) -> None:
        self.documents = documents
        self.clock = clock
        self.wake_deliveries = wake_deliveries
        # The federation policy: no delivery is created for a server it refuses.
        self.policy = policy
        # Wakes the poll worker (federation/polls.py), which publishes changed counts.
        self.wake_polls: Callable[[], None] = lambda: None

    async def publish(self, session: AsyncSession, batch: list[events.Event]) -> None:
        written: list[PostWritten] = []
        for event in batch:
            if isinstance(event, PostWritten):
                written.append(event)  # a run of these is handled together
                continue
            if written:
                await self._posts_written(session, written)
                written = []
            match event:
                case events.PostDeleted():
                    await self._post_deleted(session, event)
                case events.HelpfulChanged():
                    await self._helpful_changed(session, event)
                case events.MembershipChanged():
                    await self._membership_changed(session, event)
                case events.AccountErased():
                    await self._account_erased(session, event)
                case events.LocalAccountErased():
                    await self._local_account_erased(session, event)
                case events.MemberUpdated():
                    member = await session.get(Member, event.member_id)
                    if member is not None and member.domain == LOCAL:
                        await self.member_updated(session, member)
                case events.ProfessionalStatusChanged():
                    member = await session.get(Member, event.member_id)
                    if member is not None and member.domain == LOCAL:
                        readers = await remote.readers_of_member(session, member.id)
                        await self.member_updated(session, member, also=readers)
                case events.ReportFiled():
                    await self._report_filed(session, event)
                case events.ThreadLockChanged() | events.ThreadPinChanged():
                    await self._thread_moderated(session, event)
                case events.PollVoted():
                    await self._poll_voted(session, event)
                case events.GroupUpdated():
                    group = await session.get(ConditionGroup, event.group_id)
                    if group is not None and group.domain == LOCAL and federates(group.visibility):
                        await self.group_updated(session, group)
        if written:
            await self._posts_written(session, written)

    # ------------------------------------------------------------ storing and queueing

    def _plan(
        self,
        kind: str,
        actor_iri: str,
        signer: str,
        obj: Any,
        *,
        to: list[str],
        cc: list[str] | None = None,
        audience: str | None = None,
        **extra: Any,
    ) -> Planned:
        """An activity to publish, built but not stored yet."""
        activity_id = new_object_id()
        document = self.documents.activity(
            activity_id, kind, actor_iri, obj, to=to, cc=cc, audience=audience, **extra
        )
        row = {
            "id": activity_id,
            "actor_iri": actor_iri,
            "signer": signer,
            "type": kind,
            "object_type": _type_of(obj),
            "body": json.dumps(document, separators=(",", ":")),
            "created_at": self.clock.now(),
        }
        return Planned(row, document)

    async def _insert(self, session: AsyncSession, planned: list[Planned]) -> None:
        """Store planned activities and queue their deliveries: one statement for all the
        activities and one for all their deliveries, however many there are."""
        if not planned:
            return
        partners: dict[int, list[str]] = {}
        for item in planned:
            if item.partner_group_id is not None:
                if item.partner_group_id not in partners:
                    partners[item.partner_group_id] = await partners_of(
                        session, item.partner_group_id
                    )
                item.inboxes = reach_of(partners[item.partner_group_id], item.inboxes)
        await session.execute(insert(OutboxActivity), [item.row for item in planned])
        now = self.clock.now()
        await self._insert_deliveries(
            session,
            [row for item in planned for row in _deliveries(item.row["id"], item.inboxes, now)],
        )

    async def _insert_deliveries(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        if rows and self.policy is not None:
            policy = await self.policy.current()
            rows = [row for row in rows if policy.permits(row["inbox_url"])]
        if rows:
            # One executemany for a fan-out of any size, not one INSERT per follower's inbox.
            await session.execute(insert(Delivery), rows)
            after_commit(session, self.wake_deliveries)

    async def _store(
        self,
        session: AsyncSession,
        kind: str,
        actor_iri: str,
        signer: str,
        obj: Any,
        *,
        to: list[str],
        cc: list[str] | None = None,
        audience: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        planned = self._plan(kind, actor_iri, signer, obj, to=to, cc=cc, audience=audience, **extra)
        await self._insert(session, [planned])
        return planned.document

    async def _queue(
        self, session: AsyncSession, document: dict[str, Any], inboxes: list[str]
    ) -> None:
        """Deliveries of an activity already stored."""
        ref = self.documents.iris.parse_local(document["id"])
        assert isinstance(ref, ActivityRef), "only activities this node stored are queued"
        rows = _deliveries(ref.activity_id, inboxes, self.clock.now())
        await self._insert_deliveries(session, rows)

    async def _announce(
        self, session: AsyncSession, group: ConditionGroup, inner: Any, extra_inboxes: list[str]
    ) -> None:
        """The group announces `inner` to every remote follower (shared inboxes collapsed)."""
        followers = await remote.remote_followers_inboxes(session, group.id)
        await self._insert(session, [self._plan_announce(group, inner, followers + extra_inboxes)])

    def _plan_announce(self, group: ConditionGroup, inner: Any, inboxes: list[str]) -> Planned:
        group_iri = self.documents.group_iri(group)
        followers = self.documents.iris.group_followers(group.slug)
        partners_only = shared_with_partners(group.visibility)
        planned = self._plan(
            "Announce",
            group_iri,
            group_key_owner(group.id),
            inner,
            # A partner group's: to its followers only, never Public (docs/FEDERATION.md).
            to=[followers] if partners_only else [PUBLIC],
            cc=[] if partners_only else [followers],
            audience=group_iri,
        )
        planned.inboxes = inboxes
        if partners_only:
            planned.partner_group_id = group.id
        return planned

    @staticmethod
    def _group_inbox(group: ConditionGroup) -> list[str]:
        inbox = remote.delivery_inbox(group.shared_inbox_url, group.inbox_url)
        return [inbox] if inbox else []

    @staticmethod
    def _inbox_of(member: Member | None) -> list[str]:
        if member is None or member.domain == LOCAL:
            return []
        inbox = remote.delivery_inbox(member.shared_inbox_url, member.inbox_url)
        return [inbox] if inbox else []

    # ------------------------------------------------------------ posts

    async def _post_contexts(
        self, session: AsyncSession, post_ids: list[str]
    ) -> dict[str, PostContext]:
        """Posts of public groups with their thread, group, author and parent (with its
        author), by id: one query, however many posts."""
        if not post_ids:
            return {}
        parent, parent_author = aliased(Post), aliased(Member)
        rows = await session.execute(
            select(Post, Thread, ConditionGroup, Member, parent, parent_author)
            .join(Thread, Thread.id == Post.thread_id)
            .join(ConditionGroup, ConditionGroup.id == Thread.group_id)
            .join(Member, Member.id == Post.author_id)
            .outerjoin(parent, parent.id == Post.parent_id)
            .outerjoin(parent_author, parent_author.id == parent.author_id)
            .where(Post.id.in_(sorted(set(post_ids))))
        )
        contexts = {}
        for post, thread, group, author, replied_to, replied_to_author in rows.all():
            # A partner group's posts: ours go to its partners, our members' in another node's
            # partner group go to that group alone.
            shared = shared_with_partners(group.visibility)
            if not (federates(group.visibility) or shared) or post.held_at is not None:
                continue  # a held post is published by its approval, and nothing before it
            above = None
            if post.parent_id is not None:
                assert replied_to is not None and replied_to_author is not None
                above = (replied_to, replied_to_author)
            contexts[post.id] = (remote.PostRef(post, thread, group), author, above)
        return contexts

    async def _post_context(self, session: AsyncSession, post_id: str) -> PostContext | None:
        return (await self._post_contexts(session, [post_id])).get(post_id)

    async def _posts_written(self, session: AsyncSession, batch: list[PostWritten]) -> None:
        """Posts started, replied or edited: their contexts read at once, and everything
        they publish stored with one statement (and their deliveries with another)."""
        contexts = await self._post_contexts(session, [event.post_id for event in batch])
        mentioned = await mentions.mentioned_members(session, list(contexts))
        windows = await windows_of(
            session,
            [ref.thread.id for ref, _, _ in contexts.values() if ref.post.parent_id is None],
        )
        followers: dict[int, list[str]] = {}
        planned: list[Planned] = []
        for event in batch:
            found = contexts.get(event.post_id)
            if found is not None:
                window = (
                    windows.get(found[0].thread.id) if found[0].post.parent_id is None else None
                )
                planned += await self._post_written(
                    session, event, found, followers, window, mentioned.get(event.post_id, [])
                )
        await self._insert(session, planned)

    async def _post_written(
        self,
        session: AsyncSession,
        event: PostWritten,
        found: PostContext,
        followers: dict[int, list[str]],
        qa: QaWindow | None = None,
        mentioned: Sequence[Member] = (),
    ) -> list[Planned]:
        """What one written post publishes, planned (`followers` caches a group's inboxes;
        `qa`, the window of the expert Q&A whose Page this is; `mentioned`, whom it
        mentions: in a public group, people on other servers get it in their inbox too)."""
        ref, author, parent = found
        kind = "Update" if isinstance(event, events.PostEdited) else "Create"
        parent_inbox = self._inbox_of(parent[1]) if parent else []
        if federates(ref.group.visibility):
            for person in mentioned:
                parent_inbox += [i for i in self._inbox_of(person) if i not in parent_inbox]
        poll = None
        if ref.post.parent_id is None and ref.thread.ap_id is None:
            poll = await polls.published_poll(session, ref.thread, ref.group, self.clock.now())

        def page_or_note() -> dict[str, Any]:
            return self.documents.post_object(
                ref.post,
                ref.thread,
                ref.group,
                author,
                parent,
                qa,
                self.clock.now(),
                poll,
                mentioned,
            )

        planned: list[Planned] = []
        if ref.group.domain == LOCAL:
            if ref.group.id not in followers:
                followers[ref.group.id] = await remote.remote_followers_inboxes(
                    session, ref.group.id
                )
            inboxes = followers[ref.group.id]
            if event.origin is not None:
                inner: Any = activity_of(session, event.origin)
            elif author.domain != LOCAL:
                # A remote member's post held for review, approved here later: its Create was
                # read in another transaction, so the group announces the post itself.
                planned.append(self._plan_announce(ref.group, page_or_note(), inboxes))
                return planned
            else:
                created = self._local_activity(kind, author, ref.group, page_or_note())
                planned.append(created)
                inner = created.document
            planned.append(self._plan_announce(ref.group, inner, inboxes + parent_inbox))
            if isinstance(event, events.ThreadStarted):
                # Mastodon shows a boost of the Page; it cannot unwrap Announce{Create}.
                embedded = inner.get("object") if isinstance(inner, dict) else None
                planned.append(self._plan_announce(ref.group, embedded or page_or_note(), inboxes))
        elif event.origin is None and author.domain == LOCAL:
            activity = self._local_activity(kind, author, ref.group, page_or_note())
            activity.inboxes = self._group_inbox(ref.group) + parent_inbox
            planned.append(activity)
        return planned

    def _local_activity(
        self,
        kind: str,
        author: Member,
        group: ConditionGroup,
        obj: dict[str, Any],
    ) -> Planned:
        group_iri = self.documents.group_iri(group)
        return self._plan(
            kind,
            self.documents.member_iri(author),
            member_key_owner(author.id),
            obj,
            to=obj.get("to", [PUBLIC]),
            cc=obj.get("cc", [group_iri]),
            audience=group_iri,
        )

    async def _post_deleted(self, session: AsyncSession, event: events.PostDeleted) -> None:
        found = await self._post_context(session, event.post_id)
        if found is None:
            return
        ref, _author, parent = found
        deleter = await session.get(Member, event.by_member_id)
        if deleter is None:
            return
        parent_inbox = self._inbox_of(parent[1]) if parent else []
        object_iri = self.documents.object_iri(ref.post, ref.thread)
        group_iri = self.documents.group_iri(ref.group)
        await self._forget_content(session, object_iri)
        if ref.group.domain == LOCAL:
            inner: Any = activity_of(session, event.origin) if event.origin else None
            if inner is None and event.reason is not None and deleter.id != ref.post.author_id:
                # A moderator's removal, as Lemmy sends one: the post's IRI, the reason in
                # `summary`; the group announces it, and every follower removes the post.
                inner = await self._store(
                    session, "Delete", self.documents.member_iri(deleter),
                    member_key_owner(deleter.id), object_iri,
                    to=[PUBLIC], cc=[group_iri], audience=group_iri, summary=event.reason,
                )  # fmt: skip
            if inner is None:
                inner = await self._store(
                    session, "Delete", self.documents.member_iri(deleter),
                    member_key_owner(deleter.id),
                    {"id": object_iri, "type": "Tombstone"},
                    to=[PUBLIC], cc=[group_iri], audience=group_iri,
                )  # fmt: skip
            await self._announce(session, ref.group, inner, parent_inbox)
        elif event.origin is None and deleter.domain == LOCAL:
            delete = await self._store(
                session, "Delete", self.documents.member_iri(deleter),
                member_key_owner(deleter.id), {"id": object_iri, "type": "Tombstone"},
                to=[PUBLIC], cc=[group_iri], audience=group_iri,
            )  # fmt: skip
            await self._queue(session, delete, self._group_inbox(ref.group) + parent_inbox)

    # ------------------------------------------------------------ moderation

    async def _thread_moderated(
        self, session: AsyncSession, event: events.ThreadLockChanged | events.ThreadPinChanged
    ) -> None:
        """A moderator here locked or pinned a thread of our public group: the moderator's
        `Lock` / `Undo{Lock}`, or `Add` / `Remove` of the Page to the group's featured
        collection, as Lemmy sends them, announced by the group. A remote group's own
        (event.origin set) is that group's to announce."""
        if event.origin is not None:
            return
        thread = await session.get(Thread, event.thread_id)
        moderator = await session.get(Member, event.by_member_id)
        if thread is None or moderator is None or moderator.domain != LOCAL:
            return
        opening = await self._opening_post(session, thread.id)
        found = await self._post_context(session, opening.id) if opening else None
        if found is None or found[0].group.domain != LOCAL:
            return
        group = found[0].group
        page_iri = self.documents.object_iri(found[0].post, thread)
        group_iri = self.documents.group_iri(group)
        moderator_iri = self.documents.member_iri(moderator)
        signer = member_key_owner(moderator.id)
        addressing: dict[str, Any] = {"to": [PUBLIC], "cc": [group_iri], "audience": group_iri}
        inner: dict[str, Any]
        if isinstance(event, events.ThreadPinChanged):
            kind = "Add" if event.pinned else "Remove"
            featured = self.documents.iris.group_featured(group.slug)
            inner = await self._store(
                session, kind, moderator_iri, signer, page_iri, target=featured, **addressing
            )
        elif event.locked:
            inner = await self._store(
                session, "Lock", moderator_iri, signer, page_iri, **addressing
            )
        else:
            # Lemmy's unlock: an Undo embedding a Lock of the Page (with an id of its own).
            lock = {
                "id": self.documents.iris.activity(new_object_id()),
                "type": "Lock",
                "actor": moderator_iri,
                "object": page_iri,
                **addressing,
            }
            inner = await self._store(session, "Undo", moderator_iri, signer, lock, **addressing)
        await self._announce(session, group, inner, [])

    @staticmethod
    async def _opening_post(session: AsyncSession, thread_id: str) -> Post | None:
        return (
            await session.execute(
                select(Post).where(Post.thread_id == thread_id, Post.parent_id.is_(None))
            )
        ).scalar_one_or_none()

    async def _report_filed(self, session: AsyncSession, event: events.ReportFiled) -> None:
        """A report made here about content or a person of another server goes, as Mastodon
        sends it, to the remote group the post is in and to the author's (or reported
        person's) server: a `Flag` from our instance actor, never naming the reporter, whose
        object is the person and the post. A report that came as a Flag goes nowhere."""
        report = await session.get(Report, event.report_id)
        if report is None or report.origin_domain != LOCAL:
            return
        named: list[str] = []
        inboxes: list[str] = []
        to: list[str] = []
        if report.post_id is not None:
            found = await self._post_context(session, report.post_id)
            if found is not None:
                ref, author, _parent = found
                author_iri = self.documents.member_iri(author)
                named += [author_iri, self.documents.object_iri(ref.post, ref.thread)]
                if ref.group.domain != LOCAL:
                    inboxes += self._group_inbox(ref.group)
                    to.append(self.documents.group_iri(ref.group))
                if author.domain != LOCAL:
                    inboxes += self._inbox_of(author)
                    to.append(author_iri)
        if report.member_id is not None:
            member = await session.get(Member, report.member_id)
            if member is not None and member.domain != LOCAL:
                member_iri = self.documents.member_iri(member)
                named.insert(0, member_iri)
                inboxes += self._inbox_of(member)
                to.append(member_iri)
        if not inboxes:
            return
        instance = self.documents.iris.instance_actor()
        flag = await self._store(
            session, "Flag", instance, INSTANCE_ACTOR, list(dict.fromkeys(named)),
            to=list(dict.fromkeys(to)), content=report.comment, summary=report.comment,
        )  # fmt: skip
        await self._queue(session, flag, _one_per_host(inboxes))

    async def _forget_content(self, session: AsyncSession, object_iri: str) -> None:
        """A deleted post's text must not live on in what we published about it: earlier
        activities carrying it become tombstones, and their unsent deliveries are dropped."""
        candidates = await session.execute(
            select(OutboxActivity).where(
                OutboxActivity.type.in_(("Create", "Update", "Announce")),
                OutboxActivity.body.contains(object_iri, autoescape=True),
            )
        )
        for row in candidates.scalars():
            if _carries(json.loads(row.body), object_iri):
                row.body = json.dumps(
                    {"id": self.documents.iris.activity(row.id), "type": "Tombstone"}
                )
                row.type = "Tombstone"
                await session.execute(
                    DELIVERY.update(
                        Delivery,
                        [DeliveryState.QUEUED],
                        DeliveryState.ABANDONED,
                        last_error=POST_DELETED,
                    ).where(Delivery.activity_id == row.id)
                )
        await session.flush()

    async def _helpful_changed(self, session: AsyncSession, event: events.HelpfulChanged) -> None:
        found = await self._post_context(session, event.post_id)
        member = await session.get(Member, event.member_id)
        if found is None or member is None:
            return
        ref, _author, _parent = found
        object_iri = self.documents.object_iri(ref.post, ref.thread)
        group_iri = self.documents.group_iri(ref.group)
        inner: Any
        if event.origin is not None:
            inner = activity_of(session, event.origin)
        elif member.domain != LOCAL:
            return
        else:
            like: dict[str, Any]
            if event.helpful:
                like = await self._store(
                    session, "Like", self.documents.member_iri(member),
                    member_key_owner(member.id), object_iri,
                    to=[group_iri], audience=group_iri,
                )  # fmt: skip
                reaction = await session.get(Reaction, (ref.post.id, member.id, "helpful"))
                if reaction is not None:
                    reaction.activity_id = like["id"]
                inner = like
            else:
                like = {
                    "id": event.like_activity_id
                    or self.documents.iris.stand_in_activity(member.username, "like"),
                    "type": "Like",
                    "actor": self.documents.member_iri(member),
                    "object": object_iri,
                }
                inner = await self._store(
                    session, "Undo", self.documents.member_iri(member),
                    member_key_owner(member.id), like, to=[group_iri], audience=group_iri,
                )  # fmt: skip
            if ref.group.domain != LOCAL:
                await self._queue(session, inner, self._group_inbox(ref.group))
                return
        if ref.group.domain == LOCAL:
            await self._announce(session, ref.group, inner, [])

    # ------------------------------------------------------------ polls

    async def _poll_voted(self, session: AsyncSession, event: events.PollVoted) -> None:
        """A vote in a poll of ours wakes the poll worker, which publishes the new counts
        (all the votes since its last run in one `Update`). A local member's vote in another
        server's poll goes to the poll's owner as Mastodon sends votes: one `Create{Note}`
        per option, its `name` the option, `inReplyTo` the Question, no content."""
        thread = await session.get(Thread, event.thread_id)
        member = await session.get(Member, event.member_id)
        if thread is None or member is None:
            return
        group = await session.get(ConditionGroup, thread.group_id)
        if group is None or not federates(group.visibility):
            return
        if thread.ap_id is None:
            after_commit(session, self.wake_polls)
            return
        if event.origin is not None or member.domain != LOCAL:
            return
        owner = await session.get(Member, thread.author_id)
        inboxes = self._inbox_of(owner)
        if owner is None or not inboxes:
            return
        owner_iri = self.documents.member_iri(owner)
        member_iri = self.documents.member_iri(member)
        rows = await session.execute(
            select(PollOption, PollVote)
            .join(PollVote, PollVote.option_id == PollOption.id)
            .where(PollVote.thread_id == thread.id, PollVote.voter_id == member.id)
            .order_by(PollOption.position)
        )
        for option, vote in rows.all():
            if option.id not in event.option_ids or vote.ap_id is not None:
                continue
            note = {
                "id": self.documents.iris.poll_vote(member.username, new_object_id()),
                "type": "Note",
                "attributedTo": member_iri,
                "name": option.name,
                "inReplyTo": thread.ap_id,
                "to": [owner_iri],
            }
            vote.ap_id = note["id"]
            create = await self._store(
                session, "Create", member_iri, member_key_owner(member.id), note, to=[owner_iri]
            )
            await self._queue(session, create, inboxes)

    async def poll_counts_changed(self, session: AsyncSession, thread: Thread) -> None:
        """A poll of ours publishes its counts (and its closing): the author's
        `Update{Question}`, which the group announces to its followers, as an edit is."""
        found = await self._post_context(session, (await self._opening_id(session, thread)))
        if found is None or found[0].post.deleted_at is not None:
            return
        ref, author, _parent = found
        if ref.group.domain != LOCAL or author.domain != LOCAL:
            return
        poll = await polls.published_poll(session, ref.thread, ref.group, self.clock.now())
        question = self.documents.post_object(
            ref.post, ref.thread, ref.group, author, None, poll=poll
        )
        update = self._local_activity("Update", author, ref.group, question)
        inboxes = await remote.remote_followers_inboxes(session, ref.group.id)
        await self._insert(
            session, [update, self._plan_announce(ref.group, update.document, inboxes)]
        )

    async def _opening_id(self, session: AsyncSession, thread: Thread) -> str:
        opening = await self._opening_post(session, thread.id)
        return opening.id if opening is not None else ""

    # ------------------------------------------------------------ membership

    async def _account_erased(self, session: AsyncSession, event: events.AccountErased) -> None:
        """What we published of the person's posts becomes tombstones; each public group of
        ours they wrote in announces their Delete, verbatim, once."""
        for post_id in event.post_ids:
            ref = await remote.post_ref(session, post_id)
            if ref is not None:
                await self._forget_content(session, self.documents.object_iri(ref.post, ref.thread))
        for group_id in event.group_ids:
            group = await session.get(ConditionGroup, group_id)
            if group is not None and group.domain == LOCAL and federates(group.visibility):
                await self._announce(session, group, activity_of(session, event.origin), [])

    async def _local_account_erased(
        self, session: AsyncSession, event: events.LocalAccountErased
    ) -> None:
        """Delete{Person}, signed by the member's own key, to every inbox anything of theirs
        was delivered to (their posts' Deletes, queued just before, go the same ways), one
        per server's shared inbox. Other servers' groups pass it on to their followers."""
        member = await session.get(Member, event.member_id)
        if member is None or member.domain != LOCAL:
            return
        member_iri = self.documents.member_iri(member)
        delivered = await session.execute(
            select(Delivery.inbox_url)
            .join(OutboxActivity, OutboxActivity.id == Delivery.activity_id)
            .where(OutboxActivity.actor_iri == member_iri)
            .distinct()
        )
        inboxes = await remote.shared_inboxes_of(session, sorted(delivered.scalars()))
        if not inboxes:
            return  # nothing of theirs ever left this node
        delete = await self._store(
            session, "Delete", member_iri, member_key_owner(member.id), member_iri, to=[PUBLIC]
        )
        await self._queue(session, delete, inboxes)

    async def _membership_changed(
        self, session: AsyncSession, event: events.MembershipChanged
    ) -> None:
        group = await session.get(ConditionGroup, event.group_id)
        member = await session.get(Member, event.member_id)
        if group is None or member is None:
            return
        theirs = group.domain != LOCAL and shared_with_partners(group.visibility)
        if (
            not federates(group.visibility)
            and not theirs
            and not (member.domain != LOCAL and await shares_with(session, group, member.domain))
        ):
            # A partner group of ours answers only its partner domains' people; our members
            # follow another node's partner group as any remote group.
            return
        group_iri = self.documents.group_iri(group)
        member_iri = self.documents.member_iri(member)
        if group.domain == LOCAL and member.domain != LOCAL:
            if event.state == "active" and event.origin is not None:
                accept = await self._store(
                    session, "Accept", group_iri, group_key_owner(group.id),
                    activity_of(session, event.origin), to=[member_iri],
                )  # fmt: skip
                await self._queue(session, accept, [member.inbox_url] if member.inbox_url else [])
            elif event.state == "banned":
                block = await self._store(
                    session, "Block", group_iri, group_key_owner(group.id), member_iri,
                    to=[PUBLIC], cc=[group_iri], audience=group_iri, target=group_iri,
                )  # fmt: skip
                await self._queue(session, block, [member.inbox_url] if member.inbox_url else [])
                await self._announce(session, group, block, [])
        elif group.domain != LOCAL and member.domain == LOCAL and event.origin is None:
            if event.state == "pending":
                follow = await self._store(
                    session, "Follow", member_iri, member_key_owner(member.id), group_iri,
                    to=[group_iri],
                )  # fmt: skip
                await remote.set_follow_activity(session, group.id, member.id, follow["id"])
                await self._queue(session, follow, [group.inbox_url] if group.inbox_url else [])
            elif event.state is None and event.previous_state in ("active", "pending"):
                follow = {
                    "id": event.follow_activity_id
                    or self.documents.iris.stand_in_activity(member.username, "follow"),
                    "type": "Follow",
                    "actor": member_iri,
                    "object": group_iri,
                }
                undo = await self._store(
                    session, "Undo", member_iri, member_key_owner(member.id), follow,
                    to=[group_iri],
                )  # fmt: skip
                await self._queue(session, undo, [group.inbox_url] if group.inbox_url else [])

    # ------------------------------------------------------------ actors

    async def member_updated(
        self, session: AsyncSession, member: Member, also: list[str] | None = None
    ) -> None:
        """Update{Person} to the remote groups the member belongs to (new key, new name),
        and to `also` (for a verification: the servers that received their posts)."""
        pem = await public_pem_of(session, member_key_owner(member.id))
        if pem is None:
            return  # never federated: nobody elsewhere knows this member
        verification = await professionals.own_verification(session, member, self.clock.now())
        person = self.documents.person(member, pem, verification)
        inboxes = await remote.remote_group_inboxes_of(session, member.id)
        inboxes = sorted(set(inboxes) | set(also or ()))
        update = await self._store(
            session, "Update", person["id"], member_key_owner(member.id), person, to=[PUBLIC]
        )
        await self._queue(session, update, inboxes)

    async def group_updated(self, session: AsyncSession, group: ConditionGroup) -> None:
        """Update{Group}, sent by the group itself as Mastodon requires, to its followers."""
        pem = await public_pem_of(session, group_key_owner(group.id))
        assert pem is not None
        document = self.documents.group(group, pem)
        update = await self._store(
            session, "Update", document["id"], group_key_owner(group.id), document,
            to=[PUBLIC], cc=[self.documents.iris.group_followers(group.slug)],
        )  # fmt: skip
        await self._queue(session, update, await remote.remote_followers_inboxes(session, group.id))

    async def reject_follow(
        self, session: AsyncSession, follow: dict[str, Any], follower: Member
    ) -> None:
        """Refuse a Follow of a private or unknown group. The instance actor answers, so that
        nothing about a private group, not even a key, ever leaves this node."""
        instance = self.documents.iris.instance_actor()
        reject = await self._store(
            session, "Reject", instance, INSTANCE_ACTOR, follow,
            to=[self.documents.member_iri(follower)],
        )  # fmt: skip
        await self._queue(session, reject, [follower.inbox_url] if follower.inbox_url else [])


def _one_per_host(inboxes: list[str]) -> list[str]:
    """One inbox per server: a Flag about a group's post by an author of the same server
    is one report there, not two."""
    chosen: dict[str, str] = {}
    for inbox in inboxes:
        chosen.setdefault(urlsplit(inbox).netloc.lower(), inbox)
    return list(chosen.values())


def _carries(activity: dict[str, Any], object_iri: str) -> bool:
    """Whether an activity embeds the object's content (itself, or inside what it announces)."""
    obj = activity.get("object")
    if isinstance(obj, dict):
        if obj.get("id") == object_iri and obj.get("type") not in ("Tombstone",):
            return obj.get("type") in ("Page", "Note", "Article", "Question")
        if obj.get("type") in ("Create", "Update"):
            return _carries(obj, object_iri)
    return False


def _type_of(obj: Any) -> str:
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind[:40] if isinstance(kind, str) else ""


def _deliveries(activity_id: str, inboxes: list[str], now: datetime) -> list[dict[str, Any]]:
    """Delivery rows of an activity: each inbox once, interleaved by host."""
    return [
        {
            "activity_id": activity_id,
            "inbox_url": inbox,
            "state": DeliveryState.QUEUED.value,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
            "last_error": "",
        }
        for inbox in _interleaved_by_host(list(dict.fromkeys(inboxes)))
    ]


def _interleaved_by_host(inboxes: list[str]) -> list[str]:
    """Round-robin over hosts, so that workers claiming in order keep many hosts busy at once
    instead of queueing behind one host's concurrency limit."""
    by_host: dict[str, list[str]] = {}
    for inbox in inboxes:
        by_host.setdefault(urlsplit(inbox).netloc.lower(), []).append(inbox)
    queues = list(by_host.values())
    ordered: list[str] = []
    while queues:
        ordered.extend(queue.pop(0) for queue in queues)
        queues = [queue for queue in queues if queue]
    return ordered
