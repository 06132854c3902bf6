"""Signing in: credentials, throttled guessing, and server-side browser sessions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from node import throttles
from node.config import Settings
from node.errors import DomainError
from node.members import find_member
from node.passwords import Passwords
from node.storage.models import Member, WebSession
from node.validation import normalise_handle

LAST_ACTIVE_GRANULARITY = timedelta(minutes=5)


class LoginRefused(DomainError):
    """The username and password do not match."""


def token_hash(token: str) -> str:
    """What is stored of a session's cookie token."""
    return hashlib.sha256(token.encode()).hexdigest()


SIGN_IN_KEY = "sign-in:"
REGISTRATION_KEY = "register:"
HOME_FOLLOW_KEY = "home-follow:"  # node/rate_limits.py
# Every throttle key that names a client's address starts with one of these (node/addresses.py).
ADDRESS_KEY_PREFIXES = (SIGN_IN_KEY, REGISTRATION_KEY, HOME_FOLLOW_KEY)


def account_address_key(account: str, address: str) -> str:
    return f"{SIGN_IN_KEY}{account}|{address}"


def address_key(address: str) -> str:
    return f"{SIGN_IN_KEY}{address}"


def registration_key(address: str) -> str:
    return f"{REGISTRATION_KEY}{address}"


@dataclass(frozen=True)
class SignInAttempt:
    """An attempt already counted against its throttles, whose password is yet to be checked."""

    account: str
    address: str
    member_id: int | None
    password_hash: str | None


async def begin_sign_in(
    session: AsyncSession, settings: Settings, *, username: str, address: str, now: datetime
) -> SignInAttempt:
    """Count the attempt against this account from this address, and against the address,
    or raise throttles.Throttled. The caller commits before checking the password, so that
    the count holds in every process while the (slow) check runs, and no lock is held then.

    Nothing is counted against the account alone: from an address that has not failed, the
    owner's right password is never refused."""
    account = normalise_handle(username)[:30].replace("\x00", "")
    address = address[:64]
    await throttles.count_attempt(
        session,
        account_address_key(account, address),
        settings.limits.rates.sign_in_per_account_address,
        now,
    )
    await throttles.count_attempt(
        session, address_key(address), settings.limits.rates.sign_in_per_address, now
    )
    member = await find_member(session, account)
    return SignInAttempt(
        account=account,
        address=address,
        member_id=member.id if member else None,
        password_hash=member.password_hash if member else None,
    )


async def finish_sign_in(
    session: AsyncSession, passwords: Passwords, attempt: SignInAttempt, password: str
) -> Member:
    """Check the password of a counted attempt. A wrong one stays counted (LoginRefused);
    a right one clears this account's count from this address and refunds the address's."""
    right = await passwords.verify(attempt.password_hash, password)
    member = await session.get(Member, attempt.member_id) if attempt.member_id else None
    if not right or member is None:
        raise LoginRefused("That username and password do not match.")
    if member.suspended_at is not None:
        # Said only to whoever knows the password: it tells a guesser nothing.
        raise LoginRefused("This account is suspended by the node's admins.")
    await throttles.forget(session, account_address_key(attempt.account, attempt.address))
    await throttles.refund_attempt(session, address_key(attempt.address))
    return member


async def count_registration(
    session: AsyncSession, settings: Settings, address: str, now: datetime
) -> None:
    """Count a registration from this address before the account is made, or raise
    throttles.Throttled."""
    await throttles.count_attempt(
        session,
        registration_key(address[:64]),
        settings.limits.rates.registrations_per_address,
        now,
    )


async def open_session(
    session: AsyncSession, member: Member, settings: Settings, now: datetime, device: str = ""
) -> str:
    """A new session; `device` is the coarse label its member will see it by
    (node.accounts.device_label)."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=token_hash(token),
            member_id=member.id,
            created_at=now,
            expires_at=now + timedelta(days=settings.session_days),
            device=device[:60],
            last_seen_at=now,
        )
    )
    member.last_active_at = now
    await throttles.forget_quiet_keys(session, now, settings.limits.rates.counters_forget_after)
    await session.flush()
    return token


async def member_for_session(
    session: AsyncSession, token: str, now: datetime, note_activity: bool = True
) -> Member | None:
    """The signed-in member; `note_activity` (for requests that write anyway) refreshes
    their last-active time and the session's last-seen time, at most every few minutes."""
    row = await session.get(WebSession, token_hash(token))
    if row is None or row.expires_at <= now:
        return None
    member = await session.get(Member, row.member_id)
    if member is None or member.suspended_at is not None:
        return None  # a suspension ends every session at once, whatever is left of it
    if (
        note_activity
        and member is not None
        and now - member.last_active_at > LAST_ACTIVE_GRANULARITY
    ):
        member.last_active_at = now
        await session.flush()
    if note_activity and now - (row.last_seen_at or row.created_at) > LAST_ACTIVE_GRANULARITY:
        row.last_seen_at = now
        await session.flush()
    return member


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))
