"""Notifications: what a member of this node is told of, from local and remote activity alike.

One writer, `notify`, drops what must not be said (one's own action, a kind the member turned
off, anything the policy would not show them) and inserts the rest with one statement. Most
notifications come from the domain's events (`Notifier`, an event sink run in the same
transaction, so a batch of replies from another server is one INSERT); moderators' actions
come from the moderation log (`notify_moderation`), warnings included: what used to be the
separate "notices" page is the "moderation" kind here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, replace
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from node import events
from node.clock import Clock
from node.policy import (
    KNOWING_STATES,
    NO_STANDING,
    OPEN_VISIBILITIES,
    Action,
    Standing,
    Viewer,
    is_admin,
    knows_of,
    may,
)
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Member,
    Membership,
    ModerationLogEntry,
    Notification,
    NotificationOptOut,
    Post,
    PostMention,
    Thread,
)
from node.thread_reads import subscriptions_of


class Kind(StrEnum):
    REPLY = "reply"
    THREAD_REPLY = "thread_reply"
    MENTION = "mention"
    HELPFUL = "helpful"
    JOIN_REQUEST = "join_request"
    JOIN_DECISION = "join_decision"
    INVITATION = "invitation"
    MODERATION = "moderation"


# What the settings page calls each kind, in its order.
KIND_LABELS = {
    Kind.REPLY: "Replies to my posts",
    Kind.THREAD_REPLY: "Replies in threads I started or watch",
    Kind.MENTION: "Mentions of me (@name)",
    Kind.HELPFUL: "Helpful marks on my posts",
    Kind.JOIN_REQUEST: "Requests to join groups I moderate",
    Kind.JOIN_DECISION: "Answers to my requests to join",
    Kind.INVITATION: "Invitations to groups",
    Kind.MODERATION: "Moderators' actions on what I wrote, and their warnings",
}
# Kinds about a group the recipient asked to join or was invited to: what they may know of
# it (its name) is enough. Every other kind needs them to be able to read the group.
_ABOUT_STANDING = (Kind.JOIN_DECISION, Kind.INVITATION)
PAGE_SIZE = 30
# Kinds of which one post gives a person one notification, the first wanted: a reply to my
# post, in my thread, that mentions me is "a reply", once.
_ABOUT_A_POST = (Kind.REPLY, Kind.THREAD_REPLY, Kind.MENTION)
# What a thread's mute silences: everything about its posts, but not a moderator's action.
_MUTED_WITH_THE_THREAD = (*_ABOUT_A_POST, Kind.HELPFUL)


@dataclass(frozen=True)
class Wanted:
    """A notification to give, if `notify` finds it may."""

    recipient_id: int
    kind: Kind
    actor_id: int | None
    group_id: int | None = None
    thread_id: str | None = None
    post_id: str | None = None
    modlog_id: int | None = None
    approved: bool | None = None


async def notify(session: AsyncSession, wanted: Sequence[Wanted], now: datetime) -> int:
    """Give the wanted notifications that may be given, with one INSERT; returns how many.

    Never to anyone but a member of this node, never of their own action, never a kind they
    turned off, never about a group they may not see (node/policy.py), and never from a
    person hidden by the federation policy, and nothing about a post in a thread they muted
    (node/thread_reads.py) but a moderator's action."""
    wanted = [w for w in wanted if w.recipient_id != w.actor_id]
    if not wanted:
        return 0
    people_ids = {w.recipient_id for w in wanted} | {w.actor_id for w in wanted if w.actor_id}
    people = {
        member.id: member
        for member in (
            await session.execute(select(Member).where(Member.id.in_(sorted(people_ids))))
        ).scalars()
    }
    group_ids = {w.group_id for w in wanted if w.group_id is not None}
    groups = {
        group.id: group
        for group in (
            await session.execute(
                select(ConditionGroup).where(ConditionGroup.id.in_(sorted(group_ids)))
            )
        ).scalars()
    }
    standings = await standings_of(
        session, [(w.group_id, w.recipient_id) for w in wanted if w.group_id is not None]
    )
    opt_outs = await session.execute(
        select(NotificationOptOut.member_id, NotificationOptOut.kind).where(
            NotificationOptOut.member_id.in_(sorted({w.recipient_id for w in wanted}))
        )
    )
    opted_out = {(member_id, kind) for member_id, kind in opt_outs}
    subscriptions = await subscriptions_of(
        session, {w.thread_id for w in wanted if w.thread_id}, {w.recipient_id for w in wanted}
    )
    muted = {pair for pair, subscription in subscriptions.items() if subscription == "mute"}
    rows: list[dict[str, object]] = []
    given: set[tuple[object, ...]] = set()
    for w in wanted:
        recipient = people.get(w.recipient_id)
        if recipient is None or (w.recipient_id, w.kind.value) in opted_out:
            continue
        if w.kind in _MUTED_WITH_THE_THREAD and (w.recipient_id, w.thread_id) in muted:
            continue
        actor = people.get(w.actor_id) if w.actor_id is not None else None
        group = groups.get(w.group_id) if w.group_id is not None else None
        standing = standings.get((w.group_id or 0, w.recipient_id), NO_STANDING)
        if w.kind is Kind.JOIN_DECISION and w.approved is False and group is not None:
            if not knows_of(Viewer(w.recipient_id), group.visibility, standing):
                # A declined request to a private group: it no longer exists for them, so
                # they are told that a request was declined, without the group's name.
                w = replace(w, group_id=None)
        if not _allowed(w, recipient, actor, group, standing):
            continue
        about_post = w.kind in _ABOUT_A_POST
        key = (w.recipient_id, w.post_id) if about_post else (w.recipient_id, *astuple(w)[1:])
        if key in given:
            continue
        given.add(key)
        rows.append(
            {
                "recipient_id": w.recipient_id,
                "kind": w.kind.value,
                "actor_id": w.actor_id,
                "group_id": w.group_id,
                "thread_id": w.thread_id,
                "post_id": w.post_id,
                "modlog_id": w.modlog_id,
                "approved": w.approved,
                "created_at": now,
                "read_at": None,
            }
        )
    if rows:
        await session.execute(insert(Notification), rows)
        recipients = tuple(sorted({int(str(row["recipient_id"])) for row in rows}))
        events.record(session, events.NotificationsGiven(recipients))
    return len(rows)


def _allowed(
    w: Wanted,
    recipient: Member,
    actor: Member | None,
    group: ConditionGroup | None,
    standing: Standing,
) -> bool:
    if recipient.domain != LOCAL or recipient.suspended_at or recipient.erased_at:
        return False
    if actor is not None and actor.federation_hidden:
        return False
    if w.group_id is None:
        return True
    if group is None or group.federation_hidden:
        return False
    return _sees(w.kind, Viewer(recipient.id, is_admin(recipient.role)), group, standing)


async def standings_of(
    session: AsyncSession, pairs: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], Standing]:
    """node.groups.standings_of without loading rows into the session (and without importing
    node.groups, which the moderation log, and so this module, sits beneath)."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = await session.execute(
        select(Membership.group_id, Membership.member_id, Membership.state, Membership.role).where(
            Membership.group_id.in_(sorted({group_id for group_id, _ in wanted})),
            Membership.member_id.in_(sorted({member_id for _, member_id in wanted})),
        )
    )
    return {
        (group_id, member_id): Standing(state, role)
        for group_id, member_id, state, role in rows
        if (group_id, member_id) in wanted
    }


# ------------------------------------------------------------------------- from events


class Notifier:
    """The event sink that turns replies, new threads (their mentions), helpful marks and
    membership changes into notifications: one query per kind of event and one INSERT per
    batch of events, whichever path (a web form, another server's batch) recorded them."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def publish(self, session: AsyncSession, batch: list[events.Event]) -> None:
        wanted: list[Wanted] = []
        posts = [
            e.post_id for e in batch if isinstance(e, events.PostReplied | events.ThreadStarted)
        ]
        wanted += await _of_posts(session, posts)
        marks = [e for e in batch if isinstance(e, events.HelpfulChanged) and e.helpful]
        wanted += await _of_marks(session, marks)
        changes = [e for e in batch if isinstance(e, events.MembershipChanged)]
        wanted += await _of_memberships(session, changes)
        await _forget_unreadable(session, changes)
        for erased in (e for e in batch if isinstance(e, events.AccountErased)):
            # A remote person deleted their account: nothing here names them any longer.
            await session.execute(
                delete(Notification).where(Notification.actor_id == erased.member_id)
            )
        if wanted:
            await notify(session, wanted, self.clock.now())


async def _of_posts(session: AsyncSession, post_ids: Sequence[str]) -> list[Wanted]:
    """Replies (to the parent's author, to the thread's starter and to those who watch the
    thread) and mentions."""
    if not post_ids:
        return []
    parent = aliased(Post)
    rows = await session.execute(
        select(
            Post.id,
            Post.author_id,
            Post.thread_id,
            Post.parent_id,
            Post.anonymous,
            Thread.group_id,
            Thread.author_id,
            parent.author_id,
        )
        .join(Thread, Thread.id == Post.thread_id)
        .outerjoin(parent, parent.id == Post.parent_id)
        .where(Post.id.in_(sorted(set(post_ids))), Post.held_at.is_(None))
    )
    found = rows.all()
    mentioned: dict[str, list[int]] = {}
    for post_id, member_id in await session.execute(
        select(PostMention.post_id, PostMention.member_id).where(
            PostMention.post_id.in_([row[0] for row in found])
        )
    ):
        mentioned.setdefault(post_id, []).append(member_id)
    watchers: dict[str, list[int]] = {}
    replied_in = {row[2] for row in found if row[3] is not None}
    for (member_id, thread_id), subscription in (
        await subscriptions_of(session, replied_in)
    ).items():
        if subscription == "watch":
            watchers.setdefault(thread_id, []).append(member_id)
    wanted: list[Wanted] = []
    for post_id, author_id, thread_id, parent_id, _anonymous, group_id, starter, answered in found:
        where = {"group_id": group_id, "thread_id": thread_id, "post_id": post_id}
        if parent_id is not None and answered is not None:
            wanted.append(Wanted(answered, Kind.REPLY, author_id, **where))
        if parent_id is not None:
            wanted.append(Wanted(starter, Kind.THREAD_REPLY, author_id, **where))
            for watcher in watchers.get(thread_id, ()):
                wanted.append(Wanted(watcher, Kind.THREAD_REPLY, author_id, **where))
        for member_id in mentioned.get(post_id, ()):
            wanted.append(Wanted(member_id, Kind.MENTION, author_id, **where))
    return wanted


async def _of_marks(session: AsyncSession, marks: Sequence[events.HelpfulChanged]) -> list[Wanted]:
    if not marks:
        return []
    rows = await session.execute(
        select(Post.id, Post.author_id, Post.thread_id, Thread.group_id)
        .join(Thread, Thread.id == Post.thread_id)
        .where(Post.id.in_(sorted({mark.post_id for mark in marks})))
    )
    posts = {row[0]: row for row in rows}
    wanted = []
    for mark in marks:
        if mark.post_id in posts:
            _, author_id, thread_id, group_id = posts[mark.post_id]
            wanted.append(
                Wanted(author_id, Kind.HELPFUL, mark.member_id, group_id, thread_id, mark.post_id)
            )
    return wanted


async def _of_memberships(
    session: AsyncSession, changes: Sequence[events.MembershipChanged]
) -> list[Wanted]:
    """A request to join one of our groups (to its moderators), an invitation, and an
    approval (of a request here, or of a Follow by another server's group). A declined
    request is told by `notify_declined`, as only its caller knows it was not withdrawn."""
    if not changes:
        return []
    groups = {
        group.id: group
        for group in (
            await session.execute(
                select(ConditionGroup).where(
                    ConditionGroup.id.in_(sorted({c.group_id for c in changes}))
                )
            )
        ).scalars()
    }
    wanted: list[Wanted] = []
    asked: list[events.MembershipChanged] = []
    for change in changes:
        group = groups.get(change.group_id)
        if group is None:
            continue
        if change.state == "pending" and group.domain == LOCAL:
            asked.append(change)
        elif change.state == "invited":
            wanted.append(Wanted(change.member_id, Kind.INVITATION, None, group.id))
        elif change.state == "active" and change.previous_state == "pending":
            wanted.append(
                Wanted(change.member_id, Kind.JOIN_DECISION, None, group.id, approved=True)
            )
        elif change.state is None and change.previous_state == "pending" and change.origin:
            # Another server's group said no to a member of ours (its Reject).
            wanted.append(
                Wanted(change.member_id, Kind.JOIN_DECISION, None, group.id, approved=False)
            )
    if asked:
        moderators = await session.execute(
            select(Membership.group_id, Membership.member_id).where(
                Membership.group_id.in_(sorted({c.group_id for c in asked})),
                Membership.state == "active",
                Membership.role.in_(("moderator", "owner")),
            )
        )
        by_group: dict[int, list[int]] = {}
        for group_id, member_id in moderators:
            by_group.setdefault(group_id, []).append(member_id)
        for change in asked:
            for moderator in by_group.get(change.group_id, ()):
                wanted.append(
                    Wanted(moderator, Kind.JOIN_REQUEST, change.member_id, change.group_id)
                )
    return wanted


async def notify_declined(
    session: AsyncSession, group_id: int, member_id: int, by: int | None, now: datetime
) -> None:
    """A moderator here declined a member's request to join."""
    declined = Wanted(member_id, Kind.JOIN_DECISION, by, group_id, approved=False)
    await notify(session, [declined], now)


async def _forget_unreadable(
    session: AsyncSession, changes: Sequence[events.MembershipChanged]
) -> None:
    """A member who left a group that is not public (or was removed, banned, or had their
    invitation withdrawn) keeps no notification about it: the group no longer exists for
    them, the page would not show them, and the count in the header would still say so."""
    gone = [
        (c.group_id, c.member_id)
        for c in changes
        if c.previous_state in KNOWING_STATES and c.state not in KNOWING_STATES
    ]
    if not gone:
        return
    private = set(
        (
            await session.execute(
                select(ConditionGroup.id).where(
                    ConditionGroup.id.in_(sorted({g for g, _ in gone})),
                    ConditionGroup.visibility.not_in(OPEN_VISIBILITIES),
                )
            )
        ).scalars()
    )
    pairs = [pair for pair in gone if pair[0] in private]
    if pairs:
        await session.execute(
            delete(Notification).where(
                or_(
                    *(
                        and_(Notification.group_id == g, Notification.recipient_id == m)
                        for g, m in pairs
                    )
                )
            )
        )


# ------------------------------------------------------------------------- moderation

# The moderators' actions that the member whose content (or self) they concern is told of.
# Not a dismissed report (nobody learns they were reported), a revealed author, a withdrawn
# invitation (the person no longer knows of a private group), nor an admin's audit entries.
NOTIFIED_ACTIONS = (
    "remove_post",
    "lock_thread",
    "unlock_thread",
    "warn_member",
    "ban",
    "unban",
    "approve_post",
    "reject_post",
)


async def notify_moderation(session: AsyncSession, entry: ModerationLogEntry) -> None:
    """Tell the member a moderation log entry concerns, when its action is one they are told
    of: the reason is theirs to read, the moderator is not named (as the old notices)."""
    if entry.action not in NOTIFIED_ACTIONS:
        return
    recipient = entry.member_id
    if recipient is None and entry.thread_id is not None:
        recipient = await session.scalar(
            select(Thread.author_id).where(Thread.id == entry.thread_id)
        )
    if recipient is None:
        return
    post_id = entry.post_id if entry.action != "reject_post" else None
    wanted = Wanted(
        recipient,
        Kind.MODERATION,
        None if entry.actor_id != recipient else recipient,
        entry.group_id,
        entry.thread_id,
        post_id,
        entry.id,
    )
    await notify(session, [wanted], entry.created_at)


# ------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Item:
    """One notification as its recipient reads it; `group` etc. are None when gone."""

    id: int
    kind: Kind
    created_at: datetime
    read: bool
    actor: Member | None
    group: ConditionGroup | None
    thread: Thread | None
    post: Post | None
    reason: str | None
    action: str | None
    approved: bool | None


async def unread_count(session: AsyncSession, member_id: int) -> int:
    """For the header: one indexed count."""
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.recipient_id == member_id, Notification.read_at.is_(None))
    )
    return int(count or 0)


async def page_of(session: AsyncSession, viewer: Viewer, page: int = 1) -> tuple[list[Item], bool]:
    """A page of the member's notifications, newest first, and whether there are older ones.
    Each is checked against the policy again as it stands now (a group left since, a post
    held or deleted): what may no longer be shown is not."""
    assert viewer.member_id is not None
    actor = aliased(Member)
    rows = (
        await session.execute(
            select(Notification, actor, ConditionGroup, Thread, Post, ModerationLogEntry)
            .outerjoin(actor, actor.id == Notification.actor_id)
            .outerjoin(ConditionGroup, ConditionGroup.id == Notification.group_id)
            .outerjoin(Thread, Thread.id == Notification.thread_id)
            .outerjoin(Post, Post.id == Notification.post_id)
            .outerjoin(ModerationLogEntry, ModerationLogEntry.id == Notification.modlog_id)
            .where(Notification.recipient_id == viewer.member_id)
            .order_by(Notification.id.desc())
            .offset((max(page, 1) - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE + 1)
        )
    ).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    standings = await standings_of(
        session, [(row[0].group_id, viewer.member_id) for row in rows if row[0].group_id]
    )
    items = []
    for note, who, group, thread, post, entry in rows:
        kind = Kind(note.kind)
        if group is not None:
            standing = standings.get((group.id, viewer.member_id), NO_STANDING)
            if group.federation_hidden or not _sees(kind, viewer, group, standing):
                continue
        if post is not None and post.anonymous:
            who = None  # an anonymous post names nobody, here too
        if post is not None and (post.held_at is not None and kind is not Kind.MODERATION):
            continue
        items.append(
            Item(
                note.id,
                kind,
                note.created_at,
                note.read_at is not None,
                who,
                group,
                thread,
                post,
                entry.reason if entry is not None else None,
                entry.action if entry is not None else None,
                note.approved,
            )
        )
    return items, more


def _sees(kind: Kind, viewer: Viewer, group: ConditionGroup, standing: Standing) -> bool:
    """Whether the policy lets the recipient see what a notification of `kind` is about."""
    if kind in _ABOUT_STANDING:
        return knows_of(viewer, group.visibility, standing)
    if kind is Kind.JOIN_REQUEST:
        return may(Action.MODERATE, viewer, group.visibility, standing)
    return may(Action.READ, viewer, group.visibility, standing)


async def mark_read(
    session: AsyncSession, member_id: int, now: datetime, notification_id: int | None = None
) -> None:
    """Mark one of the member's notifications read, or all of them (`notification_id` None);
    someone else's is left alone, and marking twice changes nothing."""
    statement = update(Notification).where(
        Notification.recipient_id == member_id, Notification.read_at.is_(None)
    )
    if notification_id is not None:
        statement = statement.where(Notification.id == notification_id)
    await session.execute(statement.values(read_at=now))


# ------------------------------------------------------------------------- preferences


async def kinds_off(session: AsyncSession, member_id: int) -> set[Kind]:
    rows = await session.execute(
        select(NotificationOptOut.kind).where(NotificationOptOut.member_id == member_id)
    )
    return {Kind(kind) for kind in rows.scalars()}


async def choose_kinds(session: AsyncSession, member_id: int, wanted: Iterable[Kind]) -> None:
    """Keep exactly the kinds in `wanted` on; the others off."""
    off = [kind for kind in Kind if kind not in set(wanted)]
    await session.execute(
        delete(NotificationOptOut).where(NotificationOptOut.member_id == member_id)
    )
    if off:
        await session.execute(
            insert(NotificationOptOut), [{"member_id": member_id, "kind": k.value} for k in off]
        )


async def forget_notifications(session: AsyncSession, member_id: int) -> None:
    """An erased account keeps no notifications, no choices about them, and leaves none
    that name it (others' notifications of what it did, whom posts mentioned)."""
    await session.execute(
        delete(Notification).where(
            or_(Notification.recipient_id == member_id, Notification.actor_id == member_id)
        )
    )
    await session.execute(delete(PostMention).where(PostMention.member_id == member_id))
    await session.execute(
        delete(NotificationOptOut).where(NotificationOptOut.member_id == member_id)
    )


# ------------------------------------------------------------------------- email

# How an email counts each kind: (one, many).
_COUNTED = {
    Kind.REPLY: ("reply to your posts", "replies to your posts"),
    Kind.THREAD_REPLY: (
        "reply in threads you started or watch",
        "replies in threads you started or watch",
    ),
    Kind.MENTION: ("mention of you", "mentions of you"),
    Kind.HELPFUL: ("helpful mark", "helpful marks"),
    Kind.JOIN_REQUEST: ("request to join", "requests to join"),
    Kind.JOIN_DECISION: ("answer to your request to join", "answers to your requests to join"),
    Kind.INVITATION: ("invitation", "invitations"),
    Kind.MODERATION: ("note from the moderators", "notes from the moderators"),
}


async def unsent_summaries(
    session: AsyncSession, recipient_ids: Sequence[int], now: datetime
) -> dict[int, list[str]]:
    """For each recipient, what their unread notifications not yet emailed say, as counts
    ("3 new replies to your posts", "1 new reply to your posts in a private group"), and
    mark them emailed. Never a post's text, a title, a person's or a group's name."""
    if not recipient_ids:
        return {}
    rows = await session.execute(
        select(Notification.id, Notification.recipient_id, Notification.kind, ConditionGroup)
        .outerjoin(ConditionGroup, ConditionGroup.id == Notification.group_id)
        .where(
            Notification.recipient_id.in_(sorted(set(recipient_ids))),
            Notification.read_at.is_(None),
            Notification.emailed_at.is_(None),
        )
        .order_by(Notification.id)
    )
    counts: dict[int, dict[tuple[Kind, str], int]] = {}
    emailed = []
    for note_id, recipient_id, kind, group in rows:
        emailed.append(note_id)
        # No group is named, not even a public one: an email may be read by others, and
        # belonging to a health group discloses a condition.
        private = group is not None and group.visibility not in OPEN_VISIBILITIES
        where = " in a private group" if private else ""
        key = (Kind(kind), where)
        by_kind = counts.setdefault(recipient_id, {})
        by_kind[key] = by_kind.get(key, 0) + 1
    if emailed:
        await session.execute(
            update(Notification).where(Notification.id.in_(emailed)).values(emailed_at=now)
        )
    return {
        recipient_id: [
            f"{count} new {_COUNTED[kind][count != 1]}{where}"
            for (kind, where), count in by_kind.items()
        ]
        for recipient_id, by_kind in counts.items()
    }
