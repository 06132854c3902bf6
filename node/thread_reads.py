"""What each member has read of each thread, and the threads they watch or mute.

One row per (member, thread), written only when it changes: opening a thread page moves
the member's read marker up to the newest post the page showed (one upsert, never
backwards); "watch" and "mute" are the member's own choice for the thread. A thread's
posts newer than the marker, or, before the member first opens it, newer than their joining
the group, are its unread ones (not their own, nor held or deleted ones).

Muted threads leave the member's feed; notifications (when they come) ask
`thread_subscription` or `subscriptions_of` whom to tell. Personal: never shown to anyone
else, never federated, erased with the account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import and_, case, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Invalid
from node.policy import shown_by_federation_policy
from node.storage.models import Member, Membership, Post, Thread, ThreadRead

Subscription = Literal["watch", "mute"]
WATCH: Subscription = "watch"
MUTE: Subscription = "mute"
SUBSCRIPTIONS: tuple[Subscription, ...] = (WATCH, MUTE)
# What the thread page's form sends to take either back.
NORMAL = "normal"
BAD_CHOICE = "Choose to watch the thread, mute it, or neither."


def _insert(session: AsyncSession) -> Callable[[type[ThreadRead]], Any]:
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE (both spell it alike)."""
    return sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert


async def reader_row(session: AsyncSession, member_id: int, thread_id: str) -> ThreadRead | None:
    """The member's row for the thread, if any (its marker and subscription)."""
    return await session.get(ThreadRead, (member_id, thread_id))


async def mark_read(
    session: AsyncSession, member_id: int, thread_id: str, up_to: datetime, now: datetime
) -> None:
    """The member was shown the thread's posts up to `up_to`: one upsert, and the marker
    only ever moves forward (an older page read later takes nothing back)."""
    insert = _insert(session)
    statement = insert(ThreadRead).values(
        member_id=member_id, thread_id=thread_id, read_up_to=up_to, updated_at=now
    )
    current = ThreadRead.__table__.c.read_up_to
    proposed = statement.excluded.read_up_to
    statement = statement.on_conflict_do_update(
        index_elements=[ThreadRead.member_id, ThreadRead.thread_id],
        set_={
            "read_up_to": case(
                (current.is_(None), proposed), (current < proposed, proposed), else_=current
            ),
            "updated_at": now,
        },
    )
    await session.execute(statement)


def parse_subscription(raw: str) -> Subscription | None:
    """The form's choice: watch, mute, or neither (`normal`); Invalid for anything else."""
    if raw == NORMAL:
        return None
    if raw in SUBSCRIPTIONS:
        return cast(Subscription, raw)
    raise Invalid({"subscription": BAD_CHOICE})


async def set_subscription(
    session: AsyncSession,
    member_id: int,
    thread_id: str,
    subscription: Subscription | None,
    now: datetime,
) -> None:
    """Watch or mute the thread, or neither. The caller has checked that the member may
    read it (the thread page's route loads it as them first)."""
    insert = _insert(session)
    statement = insert(ThreadRead).values(
        member_id=member_id, thread_id=thread_id, subscription=subscription, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[ThreadRead.member_id, ThreadRead.thread_id],
        set_={"subscription": subscription, "updated_at": now},
    )
    await session.execute(statement)


async def thread_subscription(
    session: AsyncSession, member_id: int, thread_id: str
) -> Subscription | None:
    """Whether the member watches or mutes the thread (None: neither)."""
    row = await reader_row(session, member_id, thread_id)
    return None if row is None else cast(Subscription | None, row.subscription)


async def subscriptions_of(
    session: AsyncSession, thread_ids: Iterable[str], member_ids: Iterable[int] | None = None
) -> dict[tuple[int, str], Subscription]:
    """Every watch and mute on the threads, by (member id, thread id), in one query; with
    `member_ids`, only those members' (a notification's candidates). Absent: neither."""
    threads = sorted(set(thread_ids))
    if not threads:
        return {}
    statement = select(ThreadRead.member_id, ThreadRead.thread_id, ThreadRead.subscription).where(
        ThreadRead.thread_id.in_(threads), ThreadRead.subscription.is_not(None)
    )
    if member_ids is not None:
        members = sorted(set(member_ids))
        if not members:
            return {}
        statement = statement.where(ThreadRead.member_id.in_(members))
    rows = await session.execute(statement)
    return {
        (member_id, thread_id): cast(Subscription, subscription)
        for member_id, thread_id, subscription in rows.all()
    }


async def forget_member(session: AsyncSession, member_id: int) -> None:
    """An erased account's markers and choices go with it (which threads one read says
    something about one's health)."""
    await session.execute(delete(ThreadRead).where(ThreadRead.member_id == member_id))


@dataclass(frozen=True)
class Unread:
    """A thread's posts the member has not been shown: how many, and the first of them."""

    count: int
    first_post_id: str
    whole_thread: bool  # the opening post is among them: the thread itself is new


async def unread_in(
    session: AsyncSession, member_id: int, thread_ids: Iterable[str]
) -> dict[str, Unread]:
    """The unread posts of each thread (in groups the member belongs to) in one query:
    published, not deleted, not the member's own, newer than their marker or, in a thread
    they never opened, than their joining its group. Threads with none are absent."""
    threads = sorted(set(thread_ids))
    if not threads:
        return {}
    since = func.coalesce(ThreadRead.read_up_to, Membership.created_at)
    numbered = (
        select(
            Post.thread_id,
            Post.id,
            Post.parent_id,
            func.row_number()
            .over(partition_by=Post.thread_id, order_by=(Post.created_at, Post.id))
            .label("position"),
            func.count().over(partition_by=Post.thread_id).label("unread"),
        )
        .join(Thread, Thread.id == Post.thread_id)
        .join(
            Membership,
            and_(Membership.group_id == Thread.group_id, Membership.member_id == member_id),
        )
        .outerjoin(
            ThreadRead,
            and_(ThreadRead.thread_id == Post.thread_id, ThreadRead.member_id == member_id),
        )
        .join(Member, Member.id == Post.author_id)
        .where(
            Post.thread_id.in_(threads),
            Post.created_at > since,
            Post.author_id != member_id,
            Post.held_at.is_(None),
            Post.deleted_at.is_(None),
            shown_by_federation_policy(Member.federation_hidden),
        )
        .subquery()
    )
    rows = await session.execute(
        select(numbered.c.thread_id, numbered.c.id, numbered.c.parent_id, numbered.c.unread).where(
            numbered.c.position == 1
        )
    )
    return {
        thread_id: Unread(int(count), post_id, parent_id is None)
        for thread_id, post_id, parent_id, count in rows.all()
    }
