"""Applying a stored incoming activity to the domain, in one transaction.

Dispatch is on (activity type, object type), through the tables at the end of this module
(DISPATCH, and ANNOUNCED for what a remote group announces); the inbox accepts exactly the
types they name. Processing never waits on the network: what it needs from another server
it asks for with NeedsFetch (federation/prefetch.py), and the inbox worker fetches that
between transactions. Everything reaches node/ through its services;
a remote person acts as a Viewer like anyone else, so the same policy decides. An Announce
is accepted only from the group it is about, and only for what a group announces; objects
embedded from another origin are fetched from their own server instead of being trusted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from html import escape
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.actors import KEY_FRESHNESS, ActorDirectory
from federation.client import FetchError
from federation.convert import Documents
from federation.jsonld import PUBLIC_ALIASES, InvalidDocument
from federation.origins import inbox_body, origin_of
from federation.outbox import Outbox
from federation.prefetch import Fetched, FetchKind, NeedsFetch, Wanted
from federation.vocab import (
    Activity,
    PollDoc,
    PostDoc,
    VocabError,
    iri_list,
    origin,
    parse_activity,
    parse_post,
    same_origin,
)
from node import groups, ids, modlog, polls, posts, qa, remote, reports
from node.config import Limits
from node.errors import Conflict, DomainError, Forbidden, NotFound
from node.html_text import html_to_text
from node.members import find_member
from node.partners import shares_with
from node.policy import Viewer, federates, shared_with_partners
from node.storage.models import LOCAL, ConditionGroup, Member, Report, Thread
from node.validation import normalise_handle

log = logging.getLogger(__name__)


# How many missing posts above an announced reply are fetched, along the whole chain: more,
# or a chain that comes back on itself, fails the item for good.
MAX_ANCESTOR_FETCHES = 5
# How many of the things a Flag names are looked at (Mastodon names a person and posts).
MAX_FLAGGED = 20
POST_TYPES = ("Page", "Note", "Article", "Question")


class Marker(Enum):
    """Object types no document can give (a document's types are strings)."""

    ANY = "any object type, or none"
    UNKNOWN = "an activity named by id and never received here"
    UNTYPED = "an embedded object without a type"


ANY, UNKNOWN, UNTYPED = Marker.ANY, Marker.UNKNOWN, Marker.UNTYPED
ObjectType = str | Marker
FETCHED_AFTER = "healthnode.fetched_after"
ADDRESSED_GROUP = "healthnode.addressed_group"
SENSITIVE_WITHOUT_WARNING = "Marked sensitive by its author"


class Retry(Exception):
    """Not now: something it depends on is missing or unreachable; try again later."""


class Rejected(Exception):
    """The activity is refused for good (wrong author, forbidden); recorded, not retried."""


@dataclass
class Processor:
    documents: Documents
    directory: ActorDirectory
    outbox: Outbox
    limits: Limits
    blocked: Callable[[str], bool] = lambda iri: False
    fetched: Fetched = field(default_factory=Fetched)

    # ------------------------------------------------------------ entry

    async def process(
        self,
        session: AsyncSession,
        raw: dict[str, Any],
        now: datetime,
        fetched_after: int | None = None,
        addressed_group_id: int | None = None,
    ) -> None:
        """Apply one activity. What was fetched for it counts only if fetched after
        generation `fetched_after` (the default: nothing fetched so far).
        `addressed_group_id` is the group whose inbox it came to, found by the inbox edge:
        looked for first among the groups the activity names."""
        session.info[FETCHED_AFTER] = (
            self.fetched.generation if fetched_after is None else fetched_after
        )
        session.info[ADDRESSED_GROUP] = addressed_group_id
        activity = parse_activity(raw)
        handler = route(DISPATCH, activity.type, await self._object_type(session, activity))
        if handler is None:
            return
        try:
            await handler(self, session, activity, now)
        except FetchError as error:
            if error.kind in ("unavailable",):
                raise Retry(str(error)) from None
            raise Rejected(str(error)) from None
        except (VocabError, InvalidDocument) as error:
            raise Rejected(str(error)) from None
        except DomainError as error:
            raise Rejected(f"{type(error).__name__}: {error}") from None

    # ------------------------------------------------------------ helpers

    async def _object_type(self, session: AsyncSession, activity: Activity) -> ObjectType:
        """The type of what the activity acts on: its embedded object's, or, for an Undo that
        names what it undoes by id, that activity's as received here (UNKNOWN if never)."""
        embedded = activity.embedded_object
        if embedded is not None:
            kind = embedded.get("type")
            return kind if isinstance(kind, str) else UNTYPED
        if activity.type == "Undo" and activity.object_id:
            undone = await self._received(session, activity.object_id)
            kind = undone.get("type") if undone else UNKNOWN
            return kind if isinstance(kind, str) else UNTYPED
        return ANY

    async def _person(self, session: AsyncSession, iri: str, now: datetime) -> Member:
        """A remote person, as known here; one not known yet is fetched between transactions
        (NeedsFetch), one known for long is read again after the batch. Never one of ours:
        no other server may speak for a member of this node."""
        if self.documents.iris.is_local(iri):
            raise Rejected("another server may not act as a member of this node")
        if self.blocked(iri):
            raise Rejected("this server is blocked")
        member = await remote.member_by_iri(session, iri)
        if member is None or member.fetched_at is None:
            raise NeedsFetch(Wanted(FetchKind.PERSON, iri))
        if now - member.fetched_at > KEY_FRESHNESS:
            self.fetched.stale_actors.add(iri)
        return member

    def _local_group_slug(self, iri: str) -> str | None:
        match self.documents.iris.parse_local(iri):
            case ids.GroupRef(slug):
                return slug
        return None

    async def _local_group_among(
        self, session: AsyncSession, iris: list[str]
    ) -> ConditionGroup | None:
        """The first local group the activity names; the group whose inbox it came to, if
        it names that one, without looking it up by address again."""
        addressed_id = session.info.get(ADDRESSED_GROUP)
        if addressed_id is not None:
            addressed = await session.get(ConditionGroup, addressed_id)
            if addressed is not None and self.documents.group_iri(addressed) in iris:
                return addressed
        slugs = [slug for iri in dict.fromkeys(iris) if (slug := self._local_group_slug(iri))]
        found = await remote.local_groups_by_slug(session, slugs)
        return next((found[key] for key in map(normalise_handle, slugs) if key in found), None)

    async def _post_for(self, session: AsyncSession, iri: str) -> remote.PostRef | None:
        """A post by its object IRI: ours (a thread's Page, or a reply) or a copy."""
        match self.documents.iris.parse_local(iri):
            case ids.ThreadRef(thread_id):
                thread = await session.get(Thread, thread_id)
                if thread is None:
                    return None
                first = await posts.first_post(session, thread.id)
                return await remote.post_ref(session, first.id)
            case ids.PostRef(post_id):
                return await remote.post_ref(session, post_id)
        if self.documents.iris.is_local(iri):
            return None
        return await remote.post_by_ap_id(session, iri)

    async def _object(
        self, session: AsyncSession, value: Any, trusted_origin: str, now: datetime
    ) -> dict[str, Any]:
        """The object itself: embedded when it comes from the sender's own server, else
        fetched from its own origin by id."""
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            if same_origin(value["id"], trusted_origin):
                return value
            value = value["id"]
        if not isinstance(value, str):
            raise VocabError("the activity has no object")
        if self.documents.iris.is_local(value):
            raise VocabError("our own objects are not taken from others")
        if self.blocked(value):
            raise Rejected("this server is blocked")
        fetched = self.fetched.object(value, session.info[FETCHED_AFTER])
        if fetched is None:
            raise NeedsFetch(Wanted(FetchKind.OBJECT, value))
        return fetched

    async def _post(
        self, session: AsyncSession, value: Any, trusted_origin: str, now: datetime
    ) -> tuple[dict[str, Any], PostDoc]:
        """A post as its author's server gives it. A post lives on its author's origin; an
        embedded copy is taken only when the sender is on that origin too (a group on
        another server may announce it, never vouch for it): otherwise it is fetched from its
        own id, and what that fetch says decides."""
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            if same_origin(value["id"], trusted_origin):
                embedded = parse_post(value)
                if not same_origin(embedded.attributed_to, trusted_origin):
                    value = value["id"]
        obj = await self._object(session, value, trusted_origin, now)
        doc = parse_post(obj)
        if not same_origin(doc.id, doc.attributed_to):
            raise Rejected("a post is taken only from its author's server")
        return obj, doc

    def _draft(self, doc: PostDoc) -> posts.Draft:
        html = doc.content_html
        body = doc.source_markdown if doc.source_markdown is not None else html_to_text(html)
        if not body.strip():
            # A link post, or a title alone (Lemmy, Mbin, PieFed): its text is what it has.
            body = doc.link or doc.name
            html = f"<p>{escape(body)}</p>" if not doc.link else (
                f'<p><a href="{escape(doc.link)}">{escape(doc.link)}</a></p>'
            )  # fmt: skip
        # Warnings are shown as text; a post marked sensitive without one still gets one.
        warning = html_to_text(doc.summary) if doc.summary else ""
        if doc.sensitive and not warning.strip():
            warning = SENSITIVE_WITHOUT_WARNING
        mentioned = tuple(
            ref.username
            for href in doc.mentions
            if isinstance(ref := self.documents.iris.parse_local(href), ids.MemberRef)
        )
        return posts.Draft(
            body, warning[: self.limits.content_warning_max], html, doc.id, mentioned
        )

    # ------------------------------------------------------------ follows

    async def _on_follow(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        follower = await self._person(session, activity.actor, now)
        target = activity.object_id or ""
        slug = self._local_group_slug(target)
        try:
            if slug is None:
                raise NotFound("not a group here")
            group = await remote.local_group_by_iri_path(session, slug, follower.domain)
            await remote.accept_remote_follow(
                session, group, follower, origin_of(session, activity), now
            )
        except (NotFound, Forbidden):
            await self.outbox.reject_follow(session, activity.raw, follower)

    async def _undone(self, session: AsyncSession, activity: Activity) -> dict[str, Any] | None:
        """What an Undo undoes: embedded, or as received here by its id."""
        if activity.embedded_object is not None:
            return activity.embedded_object
        return await self._received(session, activity.object_id) if activity.object_id else None

    async def _undo_follow(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        inner = await self._undone(session, activity) or {}
        if inner.get("actor") not in (None, activity.actor):
            raise Rejected("one cannot undo another's follow")
        slug = self._local_group_slug(_id_of(inner.get("object")) or "")
        group = await groups.find_group(session, slug) if slug else None
        member = await remote.member_by_iri(session, activity.actor)
        if group is not None and member is not None:
            await remote.end_remote_follow(session, group, member, origin_of(session, activity))

    async def _undo_block(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        await self._block_lifted(session, activity, await self._undone(session, activity) or {})

    async def _undo_a_like(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        await self._undo_like(session, activity, await self._undone(session, activity), now)

    async def _received(self, session: AsyncSession, activity_id: str) -> dict[str, Any] | None:
        """An activity this node received earlier, by its id (an Undo may name it only)."""
        body = await inbox_body(session, activity_id)
        return json.loads(body) if body else None

    async def _undo_like(
        self,
        session: AsyncSession,
        activity: Activity,
        like: dict[str, Any] | None,
        now: datetime,
        announced_by: ConditionGroup | None = None,
    ) -> None:
        like_id = activity.object_id
        reaction = await remote.reaction_by_activity(session, like_id) if like_id else None
        if reaction is not None:
            post_id = reaction.post_id
        elif like is not None and isinstance(like.get("object"), str | dict):
            ref = await self._post_for(session, _id_of(like.get("object")) or "")
            if ref is None:
                return
            post_id = ref.post.id
        else:
            return
        member = await remote.member_by_iri(session, activity.actor)
        ref = await remote.post_ref(session, post_id)
        if member is None or ref is None:
            return
        announced = _check_announcer(ref, announced_by)
        await posts.set_helpful(
            session, Viewer(member.id), post_id=post_id, helpful=False, now=now,
            origin=origin_of(session, activity), announced=announced,
        )  # fmt: skip

    async def _on_accept(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        await self._follow_answer(session, activity, True, now)

    async def _on_reject(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        await self._follow_answer(session, activity, False, now)

    async def _follow_answer(
        self, session: AsyncSession, activity: Activity, accepted: bool, now: datetime
    ) -> None:
        inner = activity.embedded_object
        # Only the group answers for itself; no other account of its server may.
        group = await remote.group_by_iri(session, activity.actor)
        if group is None and not accepted and inner is not None:
            # But a healthnode node refuses a Follow of a group it does not show from its
            # instance actor (Outbox.reject_follow), where Mastodon keeps its own: that actor
            # of the group's own server may refuse, never accept, for the group.
            followed = _id_of(inner.get("object"))
            if followed and activity.actor == ids.Iris(origin(followed)).instance_actor():
                group = await remote.group_by_iri(session, followed)
        if group is None:
            return
        follower_iri = _id_of(inner.get("actor")) if inner else None
        member = None
        if follower_iri:
            member = await self._local_member_named(session, follower_iri)
        elif activity.object_id:
            # The Follow named by id only: it is ours, and its id is kept on the membership.
            member = await remote.member_by_follow(session, group.id, activity.object_id)
        if member is None:
            return
        try:
            await remote.follow_answered(
                session, group, member, accepted, origin_of(session, activity), now
            )
        except Conflict:
            pass  # an answer to a follow we no longer wait for

    # ------------------------------------------------------------ posts sent to our groups

    async def _on_create(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        obj, doc = await self._post(session, activity.object, activity.actor, now)
        activity = _with_object(activity, obj)
        if doc.attributed_to != activity.actor:
            raise Rejected("the object's author is not the activity's actor")
        if _is_vote(doc):
            await self._vote(session, doc, activity, now)
            return
        if await remote.post_by_ap_id(session, doc.id) is not None:
            return  # already here
        group = await self._local_group_among(
            session, doc.audience + activity.audience + doc.to + doc.cc + activity.to + activity.cc
        )
        author = await self._person(session, activity.actor, now)
        await self._create_in(session, group, author, doc, activity, now, announced=False)

    async def _create_in(
        self,
        session: AsyncSession,
        group: ConditionGroup | None,
        author: Member,
        doc: PostDoc,
        activity: Activity,
        now: datetime,
        announced: bool,
        fetch_ancestors: bool = True,
    ) -> None:
        if await remote.was_deleted(session, doc.id, doc.attributed_to, group):
            return  # its author (or a moderator of its group) deleted it before it got here
        partner_group = await self._partner_group_of(session, group, doc)
        if partner_group is not None and partner_group.domain != LOCAL:
            # Another node's partner group: its posts are for its followers, and come only
            # announced by it (the announcer is checked by the caller); its copy here shows
            # them to the members here who follow it.
            if not announced:
                raise Rejected("a partner group's posts come from the group")
        elif partner_group is not None:
            # A partner group's posts are followers-only; their authors' servers must be on
            # its partner list (a membership ended with a partner's removal stops them too).
            if announced or not await shares_with(session, partner_group, author.domain):
                raise Rejected("the author's server is not a partner of this group")
        elif not any(address in PUBLIC_ALIASES for address in doc.to + doc.cc):
            # A direct or followers-only message must never become a public thread.
            raise Rejected("only public posts are accepted into a group")
        viewer = Viewer(author.id)
        origin = origin_of(session, activity)
        if doc.in_reply_to and doc.type != "Page":
            parent = await self._post_for(session, doc.in_reply_to)
            if parent is None and announced and group is not None and fetch_ancestors:
                parent = await self._fetch_ancestors(session, group, doc, now)
            if parent is None:
                raise Retry("the post this replies to is not here yet")
            if group is not None and parent.group.id != group.id:
                raise Rejected("the reply names another group than its thread's")
            if not announced and parent.group.domain != LOCAL:
                return  # a copy for the parent's author: its group will announce it
            await posts.reply(
                session, self.limits, viewer, thread_id=parent.thread.id,
                parent_id=parent.post.id, draft=self._draft(doc), now=now, origin=origin,
                announced=announced,
            )  # fmt: skip
            return
        if group is None:
            raise Rejected("the post is addressed to no group here")
        if announced and doc.audience and group.actor_iri not in doc.audience:
            raise Rejected("a group announced a thread that belongs to another group")
        view = await groups.unchecked_view(session, group, viewer)
        thread = await posts.start_thread(
            session, self.limits, view, title=doc.name or html_to_text(doc.content_html)[:80],
            draft=self._draft(doc), now=now, origin=origin, announced=announced,
        )  # fmt: skip
        if announced and doc.type == "Page" and doc.start_time and doc.end_time:
            # A remote group's expert Q&A: shown with its window, refused after it here too.
            await qa.keep_remote_window(
                session, thread, starts_at=doc.start_time, ends_at=doc.end_time, now=now
            )
        if doc.poll is not None:
            await polls.store_remote(session, thread.id, _remote_poll(doc.poll), now)

    async def _partner_group_of(
        self, session: AsyncSession, group: ConditionGroup | None, doc: PostDoc
    ) -> ConditionGroup | None:
        """The partner group (ours, or our copy of another node's) a post goes to: the one
        named, or its parent's."""
        if group is None and doc.in_reply_to:
            parent = await self._post_for(session, doc.in_reply_to)
            group = parent.group if parent is not None else None
        if group is not None and shared_with_partners(group.visibility):
            return group
        return None

    async def _vote(
        self, session: AsyncSession, doc: PostDoc, activity: Activity, now: datetime
    ) -> None:
        """A vote as Mastodon sends one: a Note naming the option, in reply to the poll's
        Question, to its author. It counts once per voter (and option), if the voter may
        vote here; it is never kept as a reply."""
        assert doc.in_reply_to is not None
        ref = await self._post_for(session, doc.in_reply_to)
        if ref is None or ref.post.parent_id is not None:
            raise Rejected("the vote names no poll of this node")
        if not await polls.has_poll(session, ref.thread.id):
            raise Rejected("the vote names a thread without a poll")
        if ref.thread.ap_id is not None:
            raise Rejected("a vote in another server's poll is counted by that server")
        voter = await self._person(session, activity.actor, now)
        option = await polls.option_named(session, ref.thread.id, doc.name)
        await polls.vote(
            session, Viewer(voter.id), thread_id=ref.thread.id, option_ids=[option.id], now=now,
            origin=origin_of(session, activity), adding=True, ap_id=doc.id,
        )  # fmt: skip

    async def _fetch_ancestors(
        self, session: AsyncSession, group: ConditionGroup, reply: PostDoc, now: datetime
    ) -> remote.PostRef | None:
        """A reply announced before what it answers: fetch the missing posts above it from
        their origins, up to one that is here or opens the thread, and keep them from the top
        down, rather than apply the reply out of order. At most MAX_ANCESTOR_FETCHES are
        fetched along the whole chain; a longer chain, or one that comes back on itself, is
        refused for good (retrying would fetch the same chain again)."""
        chain: list[PostDoc] = []
        seen = {reply.id}
        iri = reply.in_reply_to
        while iri is not None:
            if iri in seen:
                raise Rejected("the posts this replies to answer each other in a cycle")
            if len(chain) >= MAX_ANCESTOR_FETCHES:
                raise Rejected(
                    f"more than {MAX_ANCESTOR_FETCHES} posts above this reply are missing"
                )
            if self.documents.iris.is_local(iri):
                return None  # one of ours that is not here: nothing to fetch
            seen.add(iri)
            _, doc = await self._post(session, iri, "", now)
            chain.append(doc)
            if doc.type == "Page" or not doc.in_reply_to:
                break
            if await self._post_for(session, doc.in_reply_to) is not None:
                break
            iri = doc.in_reply_to
        for doc in reversed(chain):
            author = await self._person(session, doc.attributed_to, now)
            placeholder = Activity(
                id=doc.id, type="Create", actor=doc.attributed_to, object=doc.id,
                object_id=doc.id, target=None, to=doc.to, cc=doc.cc, audience=doc.audience,
                raw={},
            )  # fmt: skip
            await self._create_in(
                session, group, author, doc, placeholder, now, announced=True,
                fetch_ancestors=False,
            )  # fmt: skip
            if await self._post_for(session, doc.id) is None:
                raise Rejected("a post above this reply was not kept")
        return await self._post_for(session, reply.in_reply_to or "")

    async def _on_update(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        obj = await self._object(session, activity.object, activity.actor, now)
        if obj.get("type") in ("Person", "Group", "Service", "Application"):
            # The new profile is read from its origin, never taken from the activity. A
            # group's may be sent by one of its moderators (Lemmy): a group known here, on the
            # sender's server, is read again too.
            about = _id_of(obj)
            if about != activity.actor and not (
                obj.get("type") == "Group"
                and about is not None
                and same_origin(about, activity.actor)
                and await remote.group_by_iri(session, about) is not None
            ):
                return
            assert about is not None
            if not self.fetched.actor_read(about, session.info[FETCHED_AFTER]):
                raise NeedsFetch(Wanted(FetchKind.ACTOR, about))
            return
        obj, doc = await self._post(session, obj, activity.actor, now)
        await self._update(session, _with_object(activity, obj), doc, now, announced_by=None)

    async def _update(
        self, session: AsyncSession, activity: Activity, doc: PostDoc, now: datetime,
        announced_by: ConditionGroup | None,
    ) -> None:  # fmt: skip
        if doc.attributed_to != activity.actor:
            raise Rejected("only the author may edit a post")
        ref = await self._post_for(session, doc.id)
        if ref is None:
            raise Retry("the post being edited is not here yet")
        announced = _check_announcer(ref, announced_by)
        author = await remote.member_by_iri(session, activity.actor)
        if author is None:
            raise Rejected("unknown author")
        if doc.poll is not None and ref.post.parent_id is None:
            # The owner's new counts (or its closing): kept, and no edit if the text stayed.
            await polls.store_remote(session, ref.thread.id, _remote_poll(doc.poll), now)
            draft = self._draft(doc).cleaned()
            if (
                draft.body == ref.post.source
                and draft.content_warning == ref.post.content_warning
                and (doc.name or ref.thread.title) == ref.thread.title
            ):
                return
        await posts.edit_post(
            session, self.limits, Viewer(author.id), post_id=ref.post.id,
            draft=self._draft(doc), title=doc.name or None if ref.post.parent_id is None else None,
            now=now, origin=origin_of(session, activity), announced=announced,
        )  # fmt: skip

    async def _on_delete(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        # A remote group's own Delete speaks for that group, as its Announce would.
        await self._delete(
            session, activity, now, announced_by=await self._group_itself(session, activity)
        )

    async def _group_itself(
        self, session: AsyncSession, activity: Activity
    ) -> ConditionGroup | None:
        """The remote group that is the activity's actor, if it is one known here."""
        if self.documents.iris.is_local(activity.actor):
            return None
        return await remote.group_by_iri(session, activity.actor)

    async def _acting_member(
        self, session: AsyncSession, actor: str, group: ConditionGroup | None,
        ref: remote.PostRef, now: datetime,
    ) -> int:  # fmt: skip
        """Who a moderation activity is recorded as done by: its actor, or, when the remote
        group acts itself (it has no member row), the post's author, as the change's owner."""
        if group is not None and actor == group.actor_iri:
            return ref.post.author_id
        member = await remote.member_by_iri(session, actor)
        if member is None:
            member = await self._person(session, actor, now)
        return member.id

    async def _delete(
        self,
        session: AsyncSession,
        activity: Activity,
        now: datetime,
        announced_by: ConditionGroup | None,
    ) -> None:
        target = activity.object_id
        if target is None:
            return
        if target == activity.actor:
            # Only the person themselves may say so: signed with their own key, or, passed on
            # by a group's Announce, confirmed by their own server serving that Delete at its
            # id. A group alone never erases anyone's account.
            if announced_by is not None and not await self._confirmed_at_origin(
                session, activity, now
            ):
                return
            member = await remote.member_by_iri(session, activity.actor)
            if member is not None:
                await remote.erase_remote_account(
                    session, member.id, now, origin_of(session, activity)
                )
            return
        ref = await self._post_for(session, target)
        if ref is None:
            if not self.documents.iris.is_local(target):
                # Deleted before it arrived (its Create may be waiting for a retry): remember
                # who deleted it, so that it never appears afterwards if they could delete it.
                # A group's Announce speaks for the group.
                deleted_by = announced_by.actor_iri if announced_by is not None else None
                await remote.remember_deleted(session, target, deleted_by or activity.actor, now)
            return
        announced = _check_announcer(ref, announced_by)
        member_id = await self._acting_member(session, activity.actor, announced_by, ref, now)
        # A moderator's removal gives its reason in `summary` (Lemmy's shape).
        summary = activity.raw.get("summary")
        reason = None
        by_group = announced_by is not None and activity.actor == announced_by.actor_iri
        by_other = by_group or member_id != ref.post.author_id
        if by_other and isinstance(summary, str) and summary.strip():
            reason = html_to_text(summary)[: modlog.REASON_MAX]
        still_there = ref.post.deleted_at is None
        found = await posts.delete_post(
            session, Viewer(member_id), post_id=ref.post.id, now=now,
            origin=origin_of(session, activity), announced=announced, reason=reason,
        )  # fmt: skip
        if reason and announced_by is not None and still_there:
            # The remote group's removal, kept in its moderation log here (its moderators
            # are named as the group, never as people of this node).
            await modlog.log_action(
                session, action=modlog.ModAction.REMOVE_POST, reason=modlog.required_reason(reason),
                now=now, actor_label=f"moderators of {announced_by.name} ({announced_by.domain})",
                group_id=announced_by.id, post_id=found.post.id, thread_id=found.thread.id,
            )  # fmt: skip

    async def _confirmed_at_origin(
        self, session: AsyncSession, delete: Activity, now: datetime
    ) -> bool:
        """Whether the person's own server serves this Delete of them at its id."""
        if not same_origin(delete.id, delete.actor) or self.documents.iris.is_local(delete.id):
            return False
        served = await self._object(session, delete.id, delete.actor, now)
        return (
            served.get("type") == "Delete"
            and _id_of(served.get("actor")) == delete.actor
            and _id_of(served.get("object")) == delete.actor
        )

    async def _on_like(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        await self._like(session, activity, now, announced_by=None)

    async def _like(
        self,
        session: AsyncSession,
        activity: Activity,
        now: datetime,
        announced_by: ConditionGroup | None,
    ) -> None:
        ref = await self._post_for(session, activity.object_id or "")
        if ref is None:
            return
        announced = _check_announcer(ref, announced_by)
        member = await self._person(session, activity.actor, now)
        try:
            await posts.set_helpful(
                session, Viewer(member.id), post_id=ref.post.id, helpful=True, now=now,
                origin=origin_of(session, activity), announced=announced, activity_id=activity.id,
            )  # fmt: skip
        except Conflict:
            pass  # a mark on a deleted or own post is simply not kept

    # ------------------------------------------------------------ what remote groups announce

    async def _on_announce(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        group = await remote.group_by_iri(session, activity.actor)
        if group is None or not await remote.has_local_members(session, group.id):
            return  # not a group anyone here follows
        inner_raw = activity.object
        if isinstance(inner_raw, str):
            inner_raw = await self._object(session, inner_raw, activity.actor, now)
        if not isinstance(inner_raw, dict):
            raise VocabError("the Announce has no object")
        inner_type = inner_raw.get("type")
        if inner_type in POST_TYPES:
            await self._announced_object(session, group, inner_raw, activity, now)
            return
        inner = parse_activity(inner_raw)
        handler = route(ANNOUNCED, inner.type, await self._object_type(session, inner))
        if handler is not None:
            await handler(self, session, group, inner, activity, now)

    async def _announced_create(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        obj, doc = await self._post(session, inner.object, announce.actor, now)
        if doc.attributed_to != inner.actor:
            raise Rejected("the object's author is not the activity's actor")
        if await self._post_for(session, doc.id) is not None:
            return
        author = await self._person(session, inner.actor, now)
        inner = _with_object(inner, obj)
        await self._create_in(session, group, author, doc, inner, now, announced=True)

    async def _announced_update(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        obj = await self._object(session, inner.object, announce.actor, now)
        if obj.get("type") == "Group" and _id_of(obj) == group.actor_iri:
            # The group's new description (name, rules, postingRestrictedToMods), read from
            # the group itself.
            if not self.fetched.actor_read(group.actor_iri, session.info[FETCHED_AFTER]):
                raise NeedsFetch(Wanted(FetchKind.ACTOR, group.actor_iri))
            return
        if obj.get("type") in POST_TYPES:
            obj, doc = await self._post(session, obj, announce.actor, now)
            await self._update(session, _with_object(inner, obj), doc, now, announced_by=group)

    async def _announced_delete(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._delete(session, inner, now, announced_by=group)

    async def _announced_like(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._like(session, inner, now, announced_by=group)

    async def _announced_unblock(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        # The group vouches for its moderator lifting a ban in it.
        undone = inner.embedded_object or {}
        member = await self._local_member_named(session, undone.get("object"))
        if member is not None:
            await remote.unbanned_by_remote_group(
                session, group.id, member.id, origin_of(session, inner)
            )

    async def _announced_unlike(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._undo_like(session, inner, inner.embedded_object, now, announced_by=group)

    async def _announced_block(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._blocked(session, group, inner, now)

    async def _announced_object(
        self,
        session: AsyncSession,
        group: ConditionGroup,
        raw: dict[str, Any],
        activity: Activity,
        now: datetime,
    ) -> None:
        """A bare Announce{Page} (a boost): the same thread as Announce{Create}, once."""
        object_id = _id_of(raw)
        if not object_id or await self._post_for(session, object_id) is not None:
            return
        _, doc = await self._post(session, raw, activity.actor, now)
        author = await self._person(session, doc.attributed_to, now)
        await self._create_in(session, group, author, doc, activity, now, announced=True)

    async def _blocked(
        self, session: AsyncSession, group: ConditionGroup, block: Activity, now: datetime
    ) -> None:
        member = await self._local_member_named(session, block.object)
        if member is not None:
            await remote.banned_by_remote_group(
                session, group.id, member.id, origin_of(session, block), now
            )

    async def _local_member_named(self, session: AsyncSession, value: Any) -> Member | None:
        match self.documents.iris.parse_local(_id_of(value) or ""):
            case ids.MemberRef(username):
                return await find_member(session, username)
        return None

    async def _block_lifted(
        self, session: AsyncSession, undo: Activity, block: dict[str, Any]
    ) -> None:
        """Undo{Block} from the group that banned one of ours (Lemmy's unban)."""
        if block.get("actor") not in (None, undo.actor):
            raise Rejected("one cannot undo another's block")
        group_iri = _id_of(block.get("target")) or undo.actor
        group = await remote.group_by_iri(session, group_iri)
        if group is None or not same_origin(group_iri, undo.actor):
            return
        member = await self._local_member_named(session, block.get("object"))
        if member is not None:
            await remote.unbanned_by_remote_group(
                session, group.id, member.id, origin_of(session, undo)
            )

    # ------------------------------------------------------------ moderation across servers

    async def _on_flag(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        """Another server's report (Mastodon: from its instance actor, object = [person,
        posts]; Lemmy, Mbin: from the reporter, object = the post) about a post in one of our
        groups or by one of our members, or about one of our members: an open report in our
        queue, with the sender's domain. Nothing is answered and nothing else is read."""
        if self.blocked(activity.actor):
            raise Rejected("this server is blocked")
        existing = await session.execute(
            select(Report.id).where(Report.flag_activity_id == activity.id)
        )
        if existing.first() is not None:
            return
        ref: remote.PostRef | None = None
        member: Member | None = None
        for iri in iri_list(activity.raw.get("object"))[:MAX_FLAGGED]:
            match self.documents.iris.parse_local(iri):
                case ids.MemberRef(username):
                    member = member or await find_member(session, username)
                    continue
            if ref is None:
                found = await self._post_for(session, iri)
                ours = found is not None and (
                    found.group.domain == LOCAL or self.documents.iris.is_local(iri)
                )
                if found is not None and ours and federates(found.group.visibility):
                    ref = found
        if member is not None and member.domain != LOCAL:
            member = None
        if ref is None and member is None:
            return  # nothing of ours: not ours to judge
        text = activity.raw.get("content") or activity.raw.get("summary")
        comment = html_to_text(text)[: reports.COMMENT_MAX] if isinstance(text, str) else ""
        await reports.file_report(
            session,
            category=reports.ReportCategory.OTHER,
            now=now,
            group_id=ref.group.id if ref is not None and ref.group.domain == LOCAL else None,
            post_id=ref.post.id if ref is not None else None,
            member_id=member.id if member is not None else None,
            comment=comment,
            origin_domain=urlsplit(activity.actor).netloc.lower(),
            flag_activity_id=activity.id,
        )

    async def _moderated_thread(
        self, session: AsyncSession, activity: Activity, group: ConditionGroup | None
    ) -> remote.PostRef | None:
        """The thread whose Page a Lock or featured change names, if it is here."""
        ref = await self._post_for(session, activity.object_id or "")
        if ref is None or ref.post.parent_id is not None:
            return None
        _check_announcer(ref, group)
        return ref

    async def _lock(
        self, session: AsyncSession, group: ConditionGroup | None, lock: Activity,
        origin_activity: Activity, locked: bool, now: datetime,
    ) -> None:  # fmt: skip
        """Lemmy's `Lock` of a Page (or its Undo): from the thread's remote group, or one of
        its moderators through the group's Announce. Anyone else may only ask, and is refused
        as any non-moderator is."""
        ref = await self._moderated_thread(session, lock, group)
        if ref is None:
            return
        member_id = await self._acting_member(session, lock.actor, group, ref, now)
        await posts.set_thread_locked(
            session, Viewer(member_id), thread_id=ref.thread.id, locked=locked, now=now,
            origin=origin_of(session, origin_activity), announced=group is not None,
        )  # fmt: skip

    async def _on_lock(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        group = await self._group_itself(session, activity)
        await self._lock(session, group, activity, activity, True, now)

    async def _undo_lock(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        lock = await self._undone(session, activity) or {}
        if _id_of(lock.get("actor")) not in (None, activity.actor) and not same_origin(
            _id_of(lock.get("actor")) or "", activity.actor
        ):
            raise Rejected("one cannot undo another server's lock")
        group = await self._group_itself(session, activity)
        await self._lock(
            session, group, _naming(activity, lock.get("object")), activity, False, now
        )

    async def _announced_lock(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._lock(session, group, inner, inner, True, now)

    async def _announced_unlock(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        lock = inner.embedded_object or {}
        await self._lock(session, group, _naming(inner, lock.get("object")), inner, False, now)

    async def _collection_change(
        self, session: AsyncSession, group: ConditionGroup | None, change: Activity,
        added: bool, now: datetime,
    ) -> None:  # fmt: skip
        """Lemmy's `Add` / `Remove` of a Page to / from its community's `featured`: a pin or
        an unpin. A `Remove` of a post with no collection named is a removal of the post
        (reason in `summary`). Changes of the moderators collection name people: not
        kept here (the group's moderators collection says who they are)."""
        if group is None:
            return  # only the group, or its Announce of a moderator's, speaks for it
        if change.target is not None and not same_origin(change.target, group.actor_iri or ""):
            raise Rejected("a group's collections live on the group's server")
        if not added and change.target is None:
            await self._delete(session, change, now, announced_by=group)
            return
        ref = await self._moderated_thread(session, change, group)
        if ref is None:
            return
        member_id = await self._acting_member(session, change.actor, group, ref, now)
        await posts.set_thread_pinned(
            session, Viewer(member_id), thread_id=ref.thread.id, pinned=added, now=now,
            origin=origin_of(session, change), announced=True,
        )  # fmt: skip

    async def _on_add(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        group = await self._group_itself(session, activity)
        await self._collection_change(session, group, activity, True, now)

    async def _on_remove(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        group = await self._group_itself(session, activity)
        await self._collection_change(session, group, activity, False, now)

    async def _announced_add(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._collection_change(session, group, inner, True, now)

    async def _announced_remove(
        self, session: AsyncSession, group: ConditionGroup, inner: Activity,
        announce: Activity, now: datetime,
    ) -> None:  # fmt: skip
        await self._collection_change(session, group, inner, False, now)

    async def _on_block(self, session: AsyncSession, activity: Activity, now: datetime) -> None:
        group_iri = activity.target or activity.actor
        group = await remote.group_by_iri(session, group_iri)
        if group is None or not same_origin(group_iri, activity.actor):
            return
        await self._blocked(session, group, activity, now)


def _is_vote(doc: PostDoc) -> bool:
    """A poll vote (Mastodon, GoToSocial): a Note with a `name`, in reply to the Question,
    and no text."""
    return (
        doc.type == "Note"
        and bool(doc.name.strip())
        and doc.in_reply_to is not None
        and not html_to_text(doc.content_html).strip()
        and not (doc.source_markdown or "").strip()
    )


def _remote_poll(doc: PollDoc) -> polls.RemotePoll:
    return polls.RemotePoll(doc.choices, doc.multiple, doc.end_time, doc.voters)


def _with_object(activity: Activity, obj: dict[str, Any]) -> Activity:
    """The activity as it will be announced: verbatim when its embedded object was trusted;
    else carrying the object as fetched from its origin, never the untrusted copy."""
    if activity.object is obj:
        return activity
    return replace(activity, object=obj, raw={**activity.raw, "object": obj})


def _naming(activity: Activity, value: Any) -> Activity:
    """The activity taken as acting on `value` (an Undo taken as the Lock it undoes)."""
    return replace(activity, object=value, object_id=_id_of(value))


def _check_announcer(ref: remote.PostRef, announced_by: ConditionGroup | None) -> bool:
    """A group's Announce speaks for that group only: never for posts of another group."""
    if announced_by is None:
        return False
    if ref.group.id != announced_by.id:
        raise Rejected("a group announced something about another group's post")
    return True


def _id_of(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


Handler = Callable[[Processor, AsyncSession, Activity, datetime], Awaitable[None]]
AnnouncedHandler = Callable[
    [Processor, AsyncSession, ConditionGroup, Activity, Activity, datetime], Awaitable[None]
]
H = TypeVar("H")

# What this node does with each incoming (activity type, object type); ANY matches any object.
DISPATCH: Mapping[tuple[str, ObjectType], Handler] = {
    ("Follow", ANY): Processor._on_follow,
    ("Accept", ANY): Processor._on_accept,
    ("Reject", ANY): Processor._on_reject,
    ("Undo", "Follow"): Processor._undo_follow,
    ("Undo", "Block"): Processor._undo_block,
    ("Undo", "Like"): Processor._undo_a_like,
    ("Undo", UNKNOWN): Processor._undo_a_like,  # a Like that reached us only as a group's mark
    ("Create", ANY): Processor._on_create,
    ("Update", ANY): Processor._on_update,
    ("Delete", ANY): Processor._on_delete,
    ("Like", ANY): Processor._on_like,
    ("Announce", ANY): Processor._on_announce,
    ("Block", ANY): Processor._on_block,
    ("Flag", ANY): Processor._on_flag,
    ("Lock", ANY): Processor._on_lock,
    ("Undo", "Lock"): Processor._undo_lock,
    ("Add", ANY): Processor._on_add,
    ("Remove", ANY): Processor._on_remove,
}

# What a followed remote group may announce (a bare post, a boost, is handled before this).
ANNOUNCED: Mapping[tuple[str, ObjectType], AnnouncedHandler] = {
    ("Create", ANY): Processor._announced_create,
    ("Update", ANY): Processor._announced_update,
    ("Delete", ANY): Processor._announced_delete,
    ("Like", ANY): Processor._announced_like,
    ("Undo", "Block"): Processor._announced_unblock,
    ("Undo", "Like"): Processor._announced_unlike,
    ("Undo", UNKNOWN): Processor._announced_unlike,
    ("Undo", UNTYPED): Processor._announced_unlike,
    ("Block", ANY): Processor._announced_block,
    ("Lock", ANY): Processor._announced_lock,
    ("Undo", "Lock"): Processor._announced_unlock,
    ("Add", ANY): Processor._announced_add,
    ("Remove", ANY): Processor._announced_remove,
}

HANDLED_TYPES = frozenset(activity_type for activity_type, _ in DISPATCH)


def route(
    table: Mapping[tuple[str, ObjectType], H], activity_type: str, object_type: ObjectType
) -> H | None:
    return table.get((activity_type, object_type)) or table.get((activity_type, ANY))
