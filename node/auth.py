"""Signing in: credentials, rate limits on failures, and server-side browser sessions."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import Settings
from node.errors import DomainError
from node.members import find_member
from node.passwords import Passwords
from node.storage.models import LoginFailure, Member, WebSession
from node.validation import normalise_handle

LAST_ACTIVE_GRANULARITY = timedelta(minutes=5)


class LoginRefused(DomainError):
    """Wrong credentials, or too many recent failures; the message says which."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def authenticate(
    session: AsyncSession,
    passwords: Passwords,
    settings: Settings,
    *,
    username: str,
    password: str,
    address: str,
    now: datetime,
) -> Member:
    """Check a password, refusing early when this account or address failed too often.

    The caller must commit even when this raises, so that the failure is counted.
    """
    account = normalise_handle(username)[:30].replace("\x00", "")
    since = now - timedelta(minutes=settings.login_window_minutes)
    per_account, per_address = (
        await session.execute(
            select(
                func.count().filter(LoginFailure.account == account),
                func.count().filter(LoginFailure.address == address),
            ).where(
                LoginFailure.at >= since,
                or_(LoginFailure.account == account, LoginFailure.address == address),
            )
        )
    ).one()
    if (
        per_account >= settings.login_failures_per_account
        or per_address >= settings.login_failures_per_address
    ):
        raise LoginRefused(
            "Too many failed sign-in attempts. Wait "
            f"{settings.login_window_minutes} minutes and try again."
        )
    member = await find_member(session, account)
    if not passwords.verify(member.password_hash if member else None, password) or not member:
        session.add(LoginFailure(account=account, address=address[:64], at=now))
        await session.flush()
        raise LoginRefused("That username and password do not match.")
    return member


async def open_session(
    session: AsyncSession, member: Member, settings: Settings, now: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=_token_hash(token),
            member_id=member.id,
            created_at=now,
            expires_at=now + timedelta(days=settings.session_days),
        )
    )
    member.last_active_at = now
    await session.execute(delete(LoginFailure).where(LoginFailure.at < now - timedelta(days=1)))
    await session.flush()
    return token


async def member_for_session(
    session: AsyncSession, token: str, now: datetime, note_activity: bool = True
) -> Member | None:
    """The signed-in member; `note_activity` (for requests that write anyway) refreshes
    their last-active time, at most every few minutes."""
    row = await session.get(WebSession, _token_hash(token))
    if row is None or row.expires_at <= now:
        return None
    member = await session.get(Member, row.member_id)
    if (
        note_activity
        and member is not None
        and now - member.last_active_at > LAST_ACTIVE_GRANULARITY
    ):
        member.last_active_at = now
        await session.flush()
    return member


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == _token_hash(token)))
