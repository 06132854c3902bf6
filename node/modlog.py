"""The moderation log: who did what, when and why. Append-only by construction: this module
is the only writer and it has no function that updates or deletes an entry."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Invalid
from node.notifications import notify_moderation
from node.storage.models import ModerationLogEntry
from node.text import neutralise

REASON_MAX = 1000


class ModAction(StrEnum):
    DISMISS_REPORT = "dismiss_report"
    REMOVE_POST = "remove_post"
    LOCK_THREAD = "lock_thread"
    UNLOCK_THREAD = "unlock_thread"
    PIN_THREAD = "pin_thread"
    UNPIN_THREAD = "unpin_thread"
    REOPEN_THREAD = "reopen_thread"
    WARN_MEMBER = "warn_member"
    BAN = "ban"
    UNBAN = "unban"
    SUSPEND_ACCOUNT = "suspend_account"
    UNSUSPEND_ACCOUNT = "unsuspend_account"
    APPROVE_POST = "approve_post"
    REJECT_POST = "reject_post"
    WITHDRAW_INVITE = "withdraw_invite"
    EDIT_GROUP = "edit_group"
    FEDERATION_POLICY = "federation_policy"
    CRISIS_SETTINGS = "crisis_settings"
    PASSWORD_RESET_LINK = "password_reset_link"
    REVEAL_AUTHOR = "reveal_author"
    PRIVACY_NOTICE = "privacy_notice"
    SEARCH_ENGINES = "search_engines"
    EXPORT_DATA = "export_data"  # an admin exported a member's data (node/export.py)
    ERASE_ACCOUNT = "erase_account"
    PROMOTE_ADMIN = "promote_admin"
    DEMOTE_ADMIN = "demote_admin"
    # The node's identity and registration (node/identity.py), new accounts' approval.
    NODE_SETTINGS = "node_settings"
    APPROVE_ACCOUNT = "approve_account"
    DECLINE_ACCOUNT = "decline_account"
    # Verified professionals (node/professionals.py), node-wide: the admins' audit log.
    VERIFY_PROFESSIONAL = "verify_professional"
    UNVERIFY_PROFESSIONAL = "unverify_professional"
    TRUST_VERIFIER = "trust_verifier"
    DISTRUST_VERIFIER = "distrust_verifier"


def required_reason(reason: str) -> str:
    """A moderation action's reason, which every action requires."""
    reason = neutralise(reason).strip()
    if not reason:
        raise Invalid({"reason": "Give a reason: it goes in the moderation log."})
    if len(reason) > REASON_MAX:
        raise Invalid({"reason": f"A reason is at most {REASON_MAX} characters."})
    return reason


async def log_action(
    session: AsyncSession,
    *,
    action: ModAction,
    reason: str,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
    group_id: int | None = None,
    post_id: str | None = None,
    thread_id: str | None = None,
    member_id: int | None = None,
    report_id: int | None = None,
) -> ModerationLogEntry:
    """Append one entry. `group_id` None makes it node-wide (the admins' audit log). The
    member it concerns is notified when it is an action they are told of."""
    entry = ModerationLogEntry(
        group_id=group_id,
        actor_id=actor_id,
        actor_label=actor_label,
        action=action.value,
        post_id=post_id,
        thread_id=thread_id,
        member_id=member_id,
        report_id=report_id,
        reason=reason,
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    await notify_moderation(session, entry)
    return entry
