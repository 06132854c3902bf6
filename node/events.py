"""What changed, as frozen facts the domain records in the unit of work.

Services record events on the session; whoever owns the transaction hands them to the node's
event sinks just before commit, in the same transaction (federation turns them into
activities and deliveries there, so a rolled-back change never sends anything).
`origin` is the remote activity that caused a change, exactly as received, when there was one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

PENDING_EVENTS = "healthnode.pending_events"


@dataclass(frozen=True)
class Origin:
    """The remote activity behind a change, by its id: the domain never reads the activity
    itself (federation keeps it, to announce it verbatim)."""

    activity_id: str


@dataclass(frozen=True)
class MemberCreated:
    member_id: int


@dataclass(frozen=True)
class MemberUpdated:
    """A member's public profile (name, bio) changed."""

    member_id: int


@dataclass(frozen=True)
class ProfessionalStatusChanged:
    """A local member was verified as a professional, or their verification was revoked or
    expired (node/professionals.py): their actor changed, for more readers than a profile
    edit reaches (who received their public posts too)."""

    member_id: int


@dataclass(frozen=True)
class GroupCreated:
    group_id: int


@dataclass(frozen=True)
class ThreadStarted:
    thread_id: str
    post_id: str
    origin: Origin | None = None


@dataclass(frozen=True)
class PostReplied:
    post_id: str
    origin: Origin | None = None


@dataclass(frozen=True)
class PostEdited:
    post_id: str
    origin: Origin | None = None


@dataclass(frozen=True)
class PostDeleted:
    post_id: str
    by_member_id: int
    origin: Origin | None = None
    # A moderator's removal says why (federated as the Delete's `summary`, as Lemmy does).
    reason: str | None = None


@dataclass(frozen=True)
class ThreadLockChanged:
    """A moderator locked a thread to replies, or unlocked it."""

    thread_id: str
    locked: bool
    by_member_id: int
    origin: Origin | None = None


@dataclass(frozen=True)
class ThreadPinChanged:
    """A moderator pinned a thread to the top of its group (featured), or unpinned it."""

    thread_id: str
    pinned: bool
    by_member_id: int
    origin: Origin | None = None


@dataclass(frozen=True)
class GroupUpdated:
    """A group's public description (name, description, rules, tags, join policy, posting
    restriction) changed."""

    group_id: int
    origin: Origin | None = None


@dataclass(frozen=True)
class HelpfulChanged:
    post_id: str
    member_id: int
    helpful: bool
    origin: Origin | None = None
    # The Like behind a mark that is being taken back, so its Undo can name it.
    like_activity_id: str | None = None


@dataclass(frozen=True)
class MembershipChanged:
    """A membership row changed state; `state` None means it was removed."""

    group_id: int
    member_id: int
    state: str | None
    previous_state: str | None
    origin: Origin | None = None
    # The Follow a local member sent to a remote group, so that leaving can undo it.
    follow_activity_id: str | None = None


@dataclass(frozen=True)
class AccountErased:
    """A remote person deleted their account: their posts here became tombstones and they left
    every group. `group_ids` are the groups they wrote in (never those they only belonged
    to: announcing there would publish who belonged)."""

    member_id: int
    post_ids: tuple[str, ...]
    group_ids: tuple[int, ...]
    origin: Origin


@dataclass(frozen=True)
class LocalAccountErased:
    """A member of this node erased their account: federation tells every server that received
    something from them (Delete of the actor, signed with their key, which is kept for this)."""

    member_id: int


@dataclass(frozen=True)
class ReportFiled:
    """A report was filed; federation sends a `Flag` when its target lives on another server
    (from the instance actor: the reporter is never named) and it did not come from one."""

    report_id: int


@dataclass(frozen=True)
class PollVoted:
    """A member voted in a thread's poll (or changed their vote): `option_ids` are the options
    chosen now. Who voted what never leaves the node, except as a local member's own vote sent
    to a remote poll's owner (as Mastodon votes)."""

    thread_id: str
    member_id: int
    option_ids: tuple[int, ...]
    origin: Origin | None = None


@dataclass(frozen=True)
class NotificationsGiven:
    """Members of this node were given notifications (node/notifications.py): email, when
    they chose it at once, tells them (node/email_addresses.py)."""

    recipient_ids: tuple[int, ...]


Event = (
    MemberCreated
    | MemberUpdated
    | ProfessionalStatusChanged
    | GroupCreated
    | ThreadStarted
    | PostReplied
    | PostEdited
    | PostDeleted
    | HelpfulChanged
    | MembershipChanged
    | AccountErased
    | LocalAccountErased
    | ReportFiled
    | ThreadLockChanged
    | ThreadPinChanged
    | GroupUpdated
    | PollVoted
    | NotificationsGiven
)


class EventSink(Protocol):
    async def publish(self, session: AsyncSession, events: list[Event]) -> None: ...


def record(session: AsyncSession, event: Event) -> None:
    session.info.setdefault(PENDING_EVENTS, []).append(event)


def take_pending(session: AsyncSession) -> list[Event]:
    events: list[Event] = session.info.pop(PENDING_EVENTS, [])
    return events
