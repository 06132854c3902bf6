"""Members' optional email addresses: confirming one, recovering a password by email, and the
reply notifications a member chose (docs/POLICY.md, "Email (optional)").

An address is stored only once its link has been followed, is read only by its member's own
account page and by the mails sent to it, and never reaches a log, another page or a
federated document. Links carry a random token of which only the SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from node import events, ids, notifications, throttles
from node.clock import Clock
from node.config import EMAIL_ADDRESS, EMAIL_ADDRESS_MAX, Limits, Rate, Settings
from node.errors import Invalid, NotFound
from node.mail import Mail, Mailer
from node.members import find_member, password_problem
from node.passwords import Passwords
from node.storage.engine import after_commit
from node.storage.models import LOCAL, EmailToken, Member, WebSession

CONFIRM_VALID = timedelta(hours=24)
RECOVER_VALID = timedelta(hours=1)
# Recovery mails one account receives, whoever asks: more are silently not sent, so that
# nobody can flood a member's inbox, and the answer stays the same.
RECOVERY_MAILS_PER_MEMBER = Rate(3, timedelta(hours=1))
LINK_UNUSABLE = "This link has expired or has already been used. You can ask for a new one."


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(text: str) -> str:
    return text.strip().lower()


def check_email(text: str) -> str:
    address = normalise_email(text)
    if len(address) > EMAIL_ADDRESS_MAX or not EMAIL_ADDRESS.fullmatch(address):
        raise Invalid({"email": "Please give an email address such as name@example.org."})
    return address


def mailer_of(mailer: Mailer | None) -> Mailer:
    if mailer is None:
        raise NotFound("This node does not send email.")
    return mailer


async def _new_token(
    session: AsyncSession, member: Member, purpose: str, address: str, now: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        EmailToken(
            token_hash=_token_hash(token),
            member_id=member.id,
            purpose=purpose,
            email=address,
            created_at=now,
        )
    )
    await session.flush()
    return token


async def request_confirmation(
    session: AsyncSession,
    settings: Settings,
    mailer: Mailer | None,
    member: Member,
    text: str,
    now: datetime,
) -> None:
    """Send a confirmation link to a new address; the address is kept only once confirmed."""
    mailer = mailer_of(mailer)
    address = check_email(text)
    token = await _new_token(session, member, "confirm", address, now)
    link = settings.base_url + ids.email_confirm_page(token)
    body = (
        f"Someone, hopefully you, asked to use this address for the account {member.username}"
        f" on healthnode ({settings.domain}).\n\nTo confirm it, open this link within 24 hours:"
        f"\n{link}\n\nIf it was not you, ignore this message: nothing changes."
    )
    subject = f"Confirm your email address on healthnode ({settings.domain})"
    after_commit(session, partial(mailer.send_later, Mail(address, subject, body, "confirmation")))


async def _usable_token(
    session: AsyncSession, token: str, purpose: str, valid: timedelta, now: datetime
) -> EmailToken:
    row = await session.get(EmailToken, _token_hash(token))
    if row is None or row.purpose != purpose or row.used_at is not None:
        raise NotFound(LINK_UNUSABLE)
    if now - row.created_at >= valid:
        raise NotFound(LINK_UNUSABLE)
    return row


async def _use(session: AsyncSession, row: EmailToken, now: datetime) -> None:
    """Mark a link used, once even under concurrent requests."""
    used = await session.execute(
        update(EmailToken)
        .where(EmailToken.token_hash == row.token_hash, EmailToken.used_at.is_(None))
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(LINK_UNUSABLE)


async def confirmation_is_usable(session: AsyncSession, token: str, now: datetime) -> None:
    await _usable_token(session, token, "confirm", CONFIRM_VALID, now)


async def confirm(session: AsyncSession, token: str, now: datetime) -> Member:
    """Follow a confirmation link: its address becomes the member's."""
    row = await _usable_token(session, token, "confirm", CONFIRM_VALID, now)
    await _use(session, row, now)
    member = await session.get(Member, row.member_id)
    if member is None:
        raise NotFound(LINK_UNUSABLE)
    member.email = row.email
    await _forget_links(session, member.id, "confirm")
    await session.flush()
    return member


async def remove_email(session: AsyncSession, member: Member) -> None:
    member.email = None
    member.notification_email = "off"
    await _forget_links(session, member.id, "confirm")
    await _forget_links(session, member.id, "recover")
    await session.flush()


async def choose_email_notifications(session: AsyncSession, member: Member, mode: str) -> None:
    """Notifications by email too: "off", "immediate" or "daily" (a digest)."""
    if mode not in EMAIL_MODES:
        raise Invalid({"notification_email": "Choose one of the options."})
    if mode != "off" and member.email is None:
        raise Invalid({"notification_email": "Add and confirm an email address first."})
    member.notification_email = mode
    await session.flush()


async def pending_address(session: AsyncSession, member: Member, now: datetime) -> str | None:
    """The latest address waiting for its confirmation link, for the member's own page."""
    row = (
        await session.execute(
            select(EmailToken.email)
            .where(
                EmailToken.member_id == member.id,
                EmailToken.purpose == "confirm",
                EmailToken.used_at.is_(None),
                EmailToken.created_at > now - CONFIRM_VALID,
            )
            .order_by(EmailToken.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return row


async def _forget_links(session: AsyncSession, member_id: int, purpose: str) -> None:
    await session.execute(
        delete(EmailToken).where(
            EmailToken.member_id == member_id,
            EmailToken.purpose == purpose,
            EmailToken.used_at.is_(None),
        )
    )


def recovery_address_key(address: str) -> str:
    return f"recover:{address[:64]}"


async def count_recovery(
    session: AsyncSession, settings: Settings, address: str, now: datetime
) -> None:
    """Count a recovery request from this client address, or raise throttles.Throttled."""
    await throttles.count_attempt(
        session, recovery_address_key(address), settings.limits.rates.recoveries_per_address, now
    )


async def request_recovery(
    session: AsyncSession, settings: Settings, mailer: Mailer | None, who: str, now: datetime
) -> None:
    """Send a recovery link to the confirmed address of the account named by username or by
    address, if there is one. Nothing tells the caller whether there was."""
    mailer = mailer_of(mailer)
    who = who.strip()
    if "@" in who:
        address = normalise_email(who)
        found = (
            (
                await session.execute(
                    select(Member).where(
                        func.lower(Member.email) == address, Member.domain == LOCAL
                    )
                )
            )
            .scalars()
            .all()
            if len(address) <= EMAIL_ADDRESS_MAX
            else []
        )
    else:
        member = await find_member(session, who[:100])
        found = [member] if member is not None else []
    for member in found:
        if member.email is None or member.suspended_at is not None:
            continue
        try:
            await throttles.count_in_window(
                session, f"recover-mail:{member.id}", RECOVERY_MAILS_PER_MEMBER, now, ""
            )
        except throttles.Throttled:
            continue
        token = await _new_token(session, member, "recover", member.email, now)
        link = settings.base_url + ids.recover_page(token)
        body = (
            f"Someone, hopefully you, asked to choose a new password for the account"
            f" {member.username} on healthnode ({settings.domain}).\n\nTo choose one, open this"
            f" link within one hour (it works once):\n{link}\n\nIf it was not you, ignore this"
            " message: your password does not change."
        )
        subject = f"Choose a new password on healthnode ({settings.domain})"
        mail = Mail(member.email, subject, body, "recovery")
        after_commit(session, partial(mailer.send_later, mail))


async def recovery_is_usable(session: AsyncSession, token: str, now: datetime) -> None:
    await _usable_token(session, token, "recover", RECOVER_VALID, now)


async def recover(
    session: AsyncSession,
    passwords: Passwords,
    limits: Limits,
    token: str,
    password: str,
    now: datetime,
) -> Member:
    """Set a new password through a recovery link (once), and sign out every session."""
    await _usable_token(session, token, "recover", RECOVER_VALID, now)
    problem = password_problem(password, limits)
    if problem:
        raise Invalid({"password": problem})
    password_hash = await passwords.hash(password)  # before any write: no lock held meanwhile
    row = await _usable_token(session, token, "recover", RECOVER_VALID, now)
    await _use(session, row, now)
    member = await session.get(Member, row.member_id)
    if member is None:
        raise NotFound(LINK_UNUSABLE)
    member.password_hash = password_hash
    await _forget_links(session, member.id, "recover")
    await session.execute(delete(WebSession).where(WebSession.member_id == member.id))
    await session.flush()
    return member


EMAIL_MODES = ("off", "immediate", "daily")


class NotificationMails:
    """An event sink: members given notifications who chose email "immediate" get one
    message per transaction, with counts and a link (`notifications.unsent_summaries`:
    never a post's text, nor anything of a private group but that it is one)."""

    def __init__(self, settings: Settings, mailer: Mailer, clock: Clock) -> None:
        self.settings = settings
        self.mailer = mailer
        self.clock = clock

    async def publish(self, session: AsyncSession, batch: list[events.Event]) -> None:
        given = {
            member_id
            for event in batch
            if isinstance(event, events.NotificationsGiven)
            for member_id in event.recipient_ids
        }
        if given:
            now = self.clock.now()
            await _mail_summaries(session, self.settings, self.mailer, given, "immediate", now)


async def send_digests(
    session: AsyncSession, settings: Settings, mailer: Mailer, now: datetime
) -> int:
    """The daily digest: one message to each member who chose it and has unread
    notifications not emailed yet; how many were queued. Run once a day
    (`healthnode notifications digest`)."""
    wanted = await session.execute(
        select(Member.id).where(
            Member.notification_email == "daily",
            Member.email.is_not(None),
            Member.domain == LOCAL,
        )
    )
    return await _mail_summaries(session, settings, mailer, set(wanted.scalars()), "daily", now)


async def _mail_summaries(
    session: AsyncSession,
    settings: Settings,
    mailer: Mailer,
    member_ids: set[int],
    mode: str,
    now: datetime,
) -> int:
    rows = await session.execute(
        select(Member.id, Member.email).where(
            Member.id.in_(sorted(member_ids)),
            Member.notification_email == mode,
            Member.email.is_not(None),
            Member.suspended_at.is_(None),
            Member.erased_at.is_(None),
        )
    )
    addresses = {member_id: email for member_id, email in rows}
    summaries = await notifications.unsent_summaries(session, list(addresses), now)
    link = settings.base_url + ids.NOTIFICATIONS_PAGE
    for member_id, lines in summaries.items():
        subject = f"New on healthnode ({settings.domain})"
        listed = "\n".join(f"- {line}" for line in lines)
        body = (
            f"You have news on healthnode ({settings.domain}):\n\n{listed}\n\n"
            f"Sign in to read it:\n{link}\n\n"
            f"You chose to receive these messages; to stop, change it at "
            f"{settings.base_url}{ids.ACCOUNT_EMAIL_PAGE}"
        )
        mail = Mail(addresses[member_id], subject, body, "notifications")
        after_commit(session, partial(mailer.send_later, mail))
    return len(summaries)
