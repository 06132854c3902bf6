"""A member of this node erases their account (or an admin does, for a request made in writing).

The local twin of node/remote/erasure.py: what they wrote becomes tombstones (threads stay
readable, written by "deleted member"), their marks, memberships, sessions, consent, password
and profile go, and federation sends the Deletes. The member row stays, emptied, so that the
username stays reserved (nobody can register it again to pass as them) and the Deletes sent
for them name an actor that other servers can match; the actor's key stays too, to sign those
Deletes on every retry, as Mastodon keeps it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import NotFound
from node.events import LocalAccountErased, PostDeleted, record
from node.membership import remove_membership
from node.modlog import ModAction, log_action
from node.notifications import forget_notifications
from node.polls import forget_votes
from node.posts import tombstone
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    EmailToken,
    Member,
    Membership,
    Post,
    ProfessionalVerification,
    Reaction,
    Report,
    Thread,
    WebSession,
)
from node.thread_reads import forget_member as forget_reads

ERASED_NAME = "deleted member"
# Not a hash any verifier accepts: no password signs in to an erased account.
NO_PASSWORD = "!erased"


class ErasureRequest(StrEnum):
    """Who asked, as the audit log says it: never who they were or why."""

    MEMBER = "account erased at the member's request"
    ADMIN = "account erased by an admin, request in writing"
    DECLINED = "new account declined by an admin"


async def erase_local_account(
    session: AsyncSession,
    member_id: int,
    now: datetime,
    request: ErasureRequest,
    admin_label: str = "",
) -> None:
    """Erase a local account. Erasing one already erased changes nothing."""
    member = await session.get(Member, member_id, with_for_update=True)
    if member is None or member.domain != LOCAL:
        raise NotFound("There is no member with that name.")
    if member.erased_at is not None:
        return
    written = await session.execute(
        select(Post, Thread)
        .join(Thread, Thread.id == Post.thread_id)
        .where(Post.author_id == member_id, Post.deleted_at.is_(None))
        .order_by(Post.created_at, Post.id)
    )
    for post, thread in written.all():
        await tombstone(session, post, thread, now)
        if post.held_at is None:  # a held post was never published: nothing to take back
            record(session, PostDeleted(post.id, member_id))
    await session.execute(delete(Reaction).where(Reaction.member_id == member_id))
    await forget_reads(session, member_id)
    await forget_votes(session, member_id, now)
    memberships = await session.execute(
        select(Membership)
        .where(Membership.member_id == member_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for row in memberships.scalars():
        await remove_membership(session, row)
    await session.execute(delete(WebSession).where(WebSession.member_id == member_id))
    # A professional title is about the person: it goes with the account.
    await session.execute(
        delete(ProfessionalVerification).where(ProfessionalVerification.member_id == member_id)
    )
    # Reports about the account go with it; those they filed stay for the moderators,
    # no longer saying who filed them.
    await session.execute(
        delete(Report).where(Report.member_id == member_id, Report.post_id.is_(None))
    )
    await session.execute(
        update(Report).where(Report.reporter_id == member_id).values(reporter_id=None)
    )
    await session.execute(
        update(ConditionGroup).where(ConditionGroup.owner_id == member_id).values(owner_id=None)
    )
    await forget_email(session, member)
    await forget_notifications(session, member_id)
    member.display_name, member.bio = ERASED_NAME, ""
    member.password_hash = NO_PASSWORD
    member.consent_at, member.consent_policy_version = None, None
    member.erased_at = member.last_active_at = now
    await session.flush()
    await log_action(
        session,
        action=ModAction.ERASE_ACCOUNT,
        reason=request.value,
        now=now,
        actor_label=admin_label or "the member",
        member_id=member_id,
    )
    record(session, LocalAccountErased(member_id))


async def forget_email(session: AsyncSession, member: Member) -> None:
    """The one place a member's email address is erased: the address, the choice of mails,
    and every link (confirmation, recovery) that names it."""
    member.email = None
    member.notification_email = "off"
    await session.execute(delete(EmailToken).where(EmailToken.member_id == member.id))
