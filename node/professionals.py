"""Verified professionals: a title an admin of a node vouches for ("Registered nurse, diabetes
specialist"), shown as a badge beside the member's posts and on their profile.

How a badge is shown (docs/POLICY.md, "Verified professionals"):
- A local member verified by this node's admins: "Verified by <this node>".
- A remote member: only a verification by the actor's own domain counts, and never as ours.
  If an admin trusts that domain's verifications, the badge reads "Verified by <domain>";
  otherwise the title is shown as an unconfirmed claim ("Says: <title>, not confirmed by this
  node"), so a reader is never misled and a partner's clinicians are still recognisable.
- Expired and revoked verifications are not shown at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from node import members
from node.errors import Invalid, NotFound
from node.events import ProfessionalStatusChanged, record
from node.federation_policy import covers, host_of, parse_policy_domain
from node.modlog import ModAction, log_action
from node.storage.models import LOCAL, Member, ProfessionalVerification, TrustedVerifier
from node.text import neutralise

TITLE_MAX = 120


class BadgeKind(StrEnum):
    LOCAL = "local"  # verified by this node's admins
    TRUSTED = "trusted"  # verified by the member's own node, which our admins trust
    CLAIMED = "claimed"  # verified by the member's own node, which our admins do not (yet) trust


@dataclass(frozen=True)
class Badge:
    title: str
    kind: BadgeKind
    verifier_domain: str  # LOCAL for our own verifications
    verified_at: datetime
    expires_at: datetime | None

    @property
    def confirmed(self) -> bool:
        return self.kind is not BadgeKind.CLAIMED


def checked_title(title: str) -> str:
    title = " ".join(neutralise(title).split())
    if not title:
        raise Invalid({"title": "Give the professional title to show, such as “Registered nurse”."})
    if len(title) > TITLE_MAX:
        raise Invalid({"title": f"A title is at most {TITLE_MAX} characters."})
    return title


def is_current(row: ProfessionalVerification, now: datetime) -> bool:
    return row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


async def verify(
    session: AsyncSession,
    member: Member,
    *,
    title: str,
    now: datetime,
    expires_at: datetime | None = None,
    verified_by: Member | None = None,
) -> ProfessionalVerification:
    """Verify a local member (replacing any earlier verification). The caller logs the action
    and federates the actor's Update."""
    if member.domain != LOCAL:
        raise Invalid({"username": "Only members of this node can be verified here."})
    if expires_at is not None and expires_at <= now:
        raise Invalid({"expires": "The expiry must be in the future."})
    title = checked_title(title)  # every check before anything is written
    row = await session.get(ProfessionalVerification, member.id)
    if row is None:
        row = ProfessionalVerification(member_id=member.id)
        session.add(row)
    row.title = title
    row.verifier_domain = LOCAL
    row.verified_by_id = verified_by.id if verified_by is not None else None
    row.verified_at = now
    row.expires_at = expires_at
    row.revoked_at = None
    row.expiry_announced_at = None
    await session.flush()
    return row


async def unverify(session: AsyncSession, member: Member, *, now: datetime) -> bool:
    """Revoke a local member's verification; answers whether there was a current one."""
    row = await session.get(ProfessionalVerification, member.id)
    if row is None or row.verifier_domain != LOCAL or not is_current(row, now):
        return False
    row.revoked_at = now
    await session.flush()
    return True


async def record_remote_claim(
    session: AsyncSession,
    member: Member,
    *,
    title: str | None,
    verifier_domain: str | None,
    verified_at: datetime | None,
    expires_at: datetime | None,
    now: datetime,
) -> None:
    """Keep what a remote actor's document says about its verification (None: it carries
    none, so any earlier claim ends). Only a claim by the actor's own domain is kept."""
    if member.domain == LOCAL:
        return  # ours are made by our admins, never read from a document
    row = await session.get(ProfessionalVerification, member.id)
    own = host_of(member.domain)
    claimed_by = host_of(verifier_domain or "")
    try:
        title = checked_title(title[:TITLE_MAX]) if title else None
    except Invalid:
        title = None  # nothing readable left of it: no claim
    if not title or not claimed_by or claimed_by != own:
        if row is not None:
            await session.delete(row)
            await session.flush()
        return
    if row is None:
        try:
            async with session.begin_nested():  # a concurrent read of the same actor may win
                row = ProfessionalVerification(
                    member_id=member.id, title=title, verifier_domain=claimed_by,
                    verified_at=verified_at or now,
                )  # fmt: skip
                session.add(row)
        except IntegrityError:
            row = await session.get(ProfessionalVerification, member.id, populate_existing=True)
            if row is None:
                return
    row.title = title
    row.verifier_domain = claimed_by
    row.verified_by_id = None
    row.verified_at = verified_at or now
    row.expires_at = expires_at
    row.revoked_at = None
    await session.flush()


async def trusted_verifiers(session: AsyncSession) -> list[str]:
    return list(
        await session.scalars(select(TrustedVerifier.domain).order_by(TrustedVerifier.domain))
    )


async def trust_verifier(session: AsyncSession, domain: str, *, now: datetime) -> str:
    domain = parse_policy_domain(domain)
    if await session.get(TrustedVerifier, domain) is None:
        session.add(TrustedVerifier(domain=domain, created_at=now))
        await session.flush()
    return domain


async def distrust_verifier(session: AsyncSession, domain: str) -> bool:
    domain = parse_policy_domain(domain)
    result = await session.execute(delete(TrustedVerifier).where(TrustedVerifier.domain == domain))
    return bool(result.rowcount)


async def badges_for(
    session: AsyncSession, member_ids: Iterable[int], now: datetime
) -> dict[int, Badge]:
    """The badge to show beside each of these members, in two queries whatever their number
    (thread pages ask for every author at once)."""
    ids = set(member_ids)
    if not ids:
        return {}
    rows = (
        await session.execute(
            select(ProfessionalVerification, Member.domain)
            .join(Member, Member.id == ProfessionalVerification.member_id)
            .where(ProfessionalVerification.member_id.in_(ids))
        )
    ).all()
    return await badges_of_rows(session, [(row, domain) for row, domain in rows], now)


async def badges_of_rows(
    session: AsyncSession, rows: Iterable[tuple[ProfessionalVerification, str]], now: datetime
) -> dict[int, Badge]:
    """`badges_for`, from verification rows (with their member's domain) a page already read
    (the thread page reads them with its posts); one more query only for remote members."""
    current = [(row, domain) for row, domain in rows if is_current(row, now)]
    trusted: list[str] = []
    if any(domain != LOCAL for _, domain in current):
        trusted = await trusted_verifiers(session)
    badges: dict[int, Badge] = {}
    for row, domain in current:
        if domain == LOCAL:
            kind = BadgeKind.LOCAL
        elif row.verifier_domain == host_of(domain):
            kind = BadgeKind.TRUSTED if covers(trusted, row.verifier_domain) else BadgeKind.CLAIMED
        else:
            continue  # a claim by another domain than the actor's own is never shown
        badges[row.member_id] = Badge(
            title=row.title,
            kind=kind,
            verifier_domain=row.verifier_domain,
            verified_at=row.verified_at,
            expires_at=row.expires_at,
        )
    return badges


async def own_verification(
    session: AsyncSession, member: Member, now: datetime
) -> ProfessionalVerification | None:
    """A local member's current verification by this node, as their actor document says."""
    if member.domain != LOCAL:
        return None
    row = await session.get(ProfessionalVerification, member.id)
    return (
        row if row is not None and row.verifier_domain == LOCAL and is_current(row, now) else None
    )


async def badge_of(session: AsyncSession, member_id: int, now: datetime) -> Badge | None:
    return (await badges_for(session, [member_id], now)).get(member_id)


async def is_verified(session: AsyncSession, member_id: int, now: datetime) -> bool:
    """A confirmed professional: verified here, or by a trusted partner of their own domain."""
    badge = await badge_of(session, member_id, now)
    return badge is not None and badge.confirmed


async def expired_since(session: AsyncSession, since: datetime, now: datetime) -> list[int]:
    """Local members whose verification expired in (since, now]: their actors need an Update."""
    return list(
        await session.scalars(
            select(ProfessionalVerification.member_id)
            .join(Member, Member.id == ProfessionalVerification.member_id)
            .where(
                Member.domain == LOCAL,
                ProfessionalVerification.revoked_at.is_(None),
                ProfessionalVerification.expires_at > since,
                ProfessionalVerification.expires_at <= now,
            )
        )
    )


# ------------------------------------------------------------ what admins do (page, command)


def parse_expiry(text: str, now: datetime) -> datetime | None:
    """An expiry as an admin types it, YYYY-MM-DD (or nothing): the verification holds
    through that day (UTC) and ends at the midnight after it. A past day is refused."""
    text = text.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Invalid(
            {"expires": f"{text[:40]!r} is not a date: write it as YYYY-MM-DD."}
        ) from None
    if len(text) != 10:
        raise Invalid({"expires": f"{text[:40]!r} is not a date: write it as YYYY-MM-DD."})
    if day < now.astimezone(UTC).date():
        raise Invalid({"expires": f"{text} has passed: give a day from today on."})
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


async def _local_member(session: AsyncSession, username: str) -> Member:
    member = await members.find_member(session, username.strip().removeprefix("@"))
    if member is None or member.erased_at is not None:
        raise NotFound(f"There is no member {username.strip()[:60]!r} on this node.")
    return member


async def verify_member(
    session: AsyncSession,
    username: str,
    *,
    title: str,
    expires_at: datetime | None,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
) -> ProfessionalVerification:
    """An admin verifies a local member: logged in the admins' audit log, and the member's
    actor Update is queued (in this transaction) for the servers that know them."""
    member = await _local_member(session, username)
    row = await verify(
        session,
        member,
        title=title,
        now=now,
        expires_at=expires_at,
        verified_by=await session.get(Member, actor_id) if actor_id is not None else None,
    )
    until = f", until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    await log_action(
        session, action=ModAction.VERIFY_PROFESSIONAL, reason=f"{row.title}{until}",
        now=now, actor_label=actor_label, actor_id=actor_id, member_id=member.id,
    )  # fmt: skip
    record(session, ProfessionalStatusChanged(member.id))
    return row


async def unverify_member(
    session: AsyncSession,
    username: str,
    *,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
) -> bool:
    """Revoke a local member's verification; answers whether there was a current one (if
    not, nothing is logged or sent)."""
    member = await _local_member(session, username)
    row = await session.get(ProfessionalVerification, member.id)
    if not await unverify(session, member, now=now):
        return False
    assert row is not None
    await log_action(
        session, action=ModAction.UNVERIFY_PROFESSIONAL, reason=f"revoked: {row.title}",
        now=now, actor_label=actor_label, actor_id=actor_id, member_id=member.id,
    )  # fmt: skip
    record(session, ProfessionalStatusChanged(member.id))
    return True


async def trust_verifier_logged(
    session: AsyncSession, domain: str, *, now: datetime, actor_label: str, actor_id: int | None
) -> str:
    domain = await trust_verifier(session, domain, now=now)
    await log_action(
        session, action=ModAction.TRUST_VERIFIER, reason=domain, now=now,
        actor_label=actor_label, actor_id=actor_id,
    )  # fmt: skip
    return domain


async def distrust_verifier_logged(
    session: AsyncSession, domain: str, *, now: datetime, actor_label: str, actor_id: int | None
) -> bool:
    removed = await distrust_verifier(session, domain)
    if removed:
        await log_action(
            session, action=ModAction.DISTRUST_VERIFIER, reason=parse_policy_domain(domain),
            now=now, actor_label=actor_label, actor_id=actor_id,
        )  # fmt: skip
    return removed


@dataclass(frozen=True)
class CurrentVerification:
    member: Member
    verification: ProfessionalVerification


async def current_local_verifications(
    session: AsyncSession, now: datetime
) -> list[CurrentVerification]:
    """This node's current verifications, for the admins' page, by username."""
    rows = (
        await session.execute(
            select(ProfessionalVerification, Member)
            .join(Member, Member.id == ProfessionalVerification.member_id)
            .where(Member.domain == LOCAL, ProfessionalVerification.revoked_at.is_(None))
            .order_by(Member.username)
        )
    ).all()
    return [CurrentVerification(member, row) for row, member in rows if is_current(row, now)]


async def announce_expired(session: AsyncSession, now: datetime) -> int:
    """Queue an actor Update for every local verification that has expired and was not yet
    announced (the housekeeping worker calls this); answers how many."""
    rows = list(
        await session.scalars(
            select(ProfessionalVerification)
            .join(Member, Member.id == ProfessionalVerification.member_id)
            .where(
                Member.domain == LOCAL,
                ProfessionalVerification.revoked_at.is_(None),
                ProfessionalVerification.expires_at <= now,
                ProfessionalVerification.expiry_announced_at.is_(None),
            )
            .order_by(ProfessionalVerification.member_id)
            .limit(200)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.expiry_announced_at = now
        record(session, ProfessionalStatusChanged(row.member_id))
    await session.flush()
    return len(rows)
