"""What pages show about the signed-in member, copied out of the database session.

Error pages are drawn after the request's transaction has been rolled back, when the ORM
object can no longer load anything; templates therefore read this snapshot instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.storage.models import Member


@dataclass(frozen=True)
class SignedIn:
    id: int
    username: str
    display_name: str
    role: str
    awaiting_approval: bool = False
    time_zone: str = ""
    # Unread notifications, for the header; counted only for pages (GET and HEAD).
    unread_notifications: int = 0

    @classmethod
    def of(cls, member: Member, unread_notifications: int = 0) -> SignedIn:
        return cls(
            member.id,
            member.username,
            member.display_name,
            member.role,
            member.awaiting_approval_since is not None,
            member.time_zone,
            unread_notifications,
        )
