"""A member's own account security: changing the password, one-time reset links an admin
makes (recovery without email), and the list of signed-in browsers with their sign-out.

Reset tokens and session tokens are stored only as SHA-256 hashes: a copy of the database
gives no working link and no working cookie.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node import auth
from node.errors import DomainError, NotFound
from node.members import find_member
from node.modlog import ModAction, log_action
from node.passwords import Passwords
from node.storage.models import Member, PasswordReset, WebSession

RESET_LINK_LIFETIME = timedelta(hours=1)
# What secrets.token_urlsafe(32) makes: 256 bits in 43 URL-safe characters.
RESET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
UNUSABLE_RESET_LINK = (
    "This password reset link cannot be used: each link works once, within an hour of being "
    "made. Ask an admin of this node for a new one."
)


class WrongPassword(DomainError):
    """The current password given to change it is not the member's."""


class UnusableResetLink(DomainError):
    """Unknown, used or expired: all three say the same, so a guess learns nothing."""

    def __init__(self) -> None:
        super().__init__(UNUSABLE_RESET_LINK)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- changing the password


async def change_password(
    session: AsyncSession,
    passwords: Passwords,
    attempt: auth.SignInAttempt,
    member: Member,
    *,
    current: str,
    new: str,
    keep_token: str,
) -> int:
    """Check `current` for an attempt already counted against the sign-in throttle (the
    caller committed the count), then set `new` and end every other session of the member.
    Answers how many sessions ended. Both slow hashes run before any write: no lock is held
    meanwhile."""
    new_hash = await passwords.hash(new)
    try:
        await auth.finish_sign_in(session, passwords, attempt, current)
    except auth.LoginRefused:
        raise WrongPassword("Your current password is not right, so nothing changed.") from None
    member.password_hash = new_hash
    return await end_sessions(session, member.id, keep_token=keep_token)


# ---------------------------------------------------------------- sessions


@dataclass(frozen=True)
class SessionSummary:
    """One signed-in browser as its member sees it. `key` names it in forms; it is derived
    from the stored hash, so it can neither sign in nor be turned back into the cookie."""

    key: str
    device: str
    created_at: datetime
    last_seen_at: datetime
    current: bool


def session_key(token_hash: str) -> str:
    return _sha256("session-key:" + token_hash)[:32]


async def active_sessions(
    session: AsyncSession, member_id: int, current_token: str | None, now: datetime
) -> list[SessionSummary]:
    current_hash = auth.token_hash(current_token) if current_token else None
    rows = (
        await session.execute(
            select(WebSession).where(WebSession.member_id == member_id, WebSession.expires_at > now)
        )
    ).scalars()
    summaries = [
        SessionSummary(
            key=session_key(row.token_hash),
            device=row.device or "Unknown device",
            created_at=row.created_at,
            last_seen_at=row.last_seen_at or row.created_at,
            current=row.token_hash == current_hash,
        )
        for row in rows
    ]
    return sorted(summaries, key=lambda item: (not item.current, -item.last_seen_at.timestamp()))


async def end_sessions(session: AsyncSession, member_id: int, keep_token: str | None = None) -> int:
    """End every session of the member but the one whose token is `keep_token`, if given."""
    statement = delete(WebSession).where(WebSession.member_id == member_id)
    if keep_token is not None:
        statement = statement.where(WebSession.token_hash != auth.token_hash(keep_token))
    ended: int = (await session.execute(statement)).rowcount  # type: ignore[attr-defined]
    return ended


async def end_session(session: AsyncSession, member_id: int, key: str) -> bool:
    """End the member's session named `key`; False if they have none by that name."""
    hashes = (
        await session.execute(
            select(WebSession.token_hash).where(WebSession.member_id == member_id)
        )
    ).scalars()
    for token_hash in hashes:
        if secrets.compare_digest(session_key(token_hash), key):
            await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))
            return True
    return False


# ---------------------------------------------------------------- reset links


async def make_reset_token(
    session: AsyncSession, username: str, now: datetime, *, actor_label: str, actor_id: int | None
) -> str:
    """A new one-time token for a local member, to be put in a link. Earlier unused links of
    the member stop working: only the newest one handed over is live. The admins' audit log
    records who made it, never the token."""
    member = await find_member(session, username)
    if member is None:
        raise NotFound(f"There is no member called {username!r} on this node.")
    await session.execute(
        delete(PasswordReset).where(
            PasswordReset.member_id == member.id, PasswordReset.used_at.is_(None)
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(PasswordReset(token_hash=_sha256(token), member_id=member.id, created_at=now))
    await log_action(
        session,
        action=ModAction.PASSWORD_RESET_LINK,
        reason=f"made a password reset link for {member.username}",
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        member_id=member.id,
    )
    await session.flush()
    return token


def _usable(token: str, now: datetime) -> list[object]:
    """The conditions of a live reset row for `token`."""
    return [
        PasswordReset.token_hash == _sha256(token),
        PasswordReset.used_at.is_(None),
        PasswordReset.created_at > now - RESET_LINK_LIFETIME,
    ]


async def check_reset_token(session: AsyncSession, token: str, now: datetime) -> None:
    """Raise UnusableResetLink unless the token is live."""
    if not RESET_TOKEN_PATTERN.fullmatch(token):
        raise UnusableResetLink()
    found = (
        await session.execute(select(PasswordReset.member_id).where(*_usable(token, now)))
    ).scalar_one_or_none()
    if found is None:
        raise UnusableResetLink()


async def use_reset_token(
    session: AsyncSession, token: str, password_hash: str, now: datetime
) -> Member:
    """Spend a live token: set the member's new password (already hashed, before the write
    transaction) and end all their sessions. The token is spent by one conditional update,
    so two submissions of one link cannot both succeed."""
    if not RESET_TOKEN_PATTERN.fullmatch(token):
        raise UnusableResetLink()
    member_id = (
        await session.execute(
            update(PasswordReset)
            .where(*_usable(token, now))
            .values(used_at=now)
            .returning(PasswordReset.member_id)
        )
    ).scalar_one_or_none()
    member = await session.get(Member, member_id) if member_id is not None else None
    if member is None:
        raise UnusableResetLink()
    member.password_hash = password_hash
    await end_sessions(session, member.id)
    await session.flush()
    return member


# ---------------------------------------------------------------- devices

_BROWSERS = (  # the first that matches names the browser: Edge and Opera also say Chrome
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("FxiOS/", "Firefox"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("CriOS/", "Chrome"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Macintosh", "macOS"),
    ("Linux", "Linux"),
)


def device_label(user_agent: str) -> str:
    """A coarse label for a session's browser ("Firefox on Android"): enough for a member to
    recognise their own devices, too little to fingerprint them. Only this is stored."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"
