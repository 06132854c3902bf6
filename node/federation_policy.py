"""Which servers this node federates with: a mode (`open`: everyone but the blocked domains;
`allowlist`: only the allowed ones) and a list of domains, each allowed or blocked with a reason.

A domain is a host name without a port and covers its subdomains. The configuration
(healthnode.toml's [federation] section, or its environment variables) may fix the mode, and may
allow or block domains in addition to the table's: a ConfiguredPolicy. A mode fixed there cannot
be changed by the command line or the admin page, and domains listed there cannot be unlisted.

The policy lives in the database, so a change made by the command line reaches every
running process: each keeps the policy it last read and asks the database's version counter
again at most every `RECHECK` of its clock.

Changing the policy also applies it at once, in the same transaction: remote members of our
groups from a refused server leave them (recorded as any membership's end, and not federated:
the outbox sends nothing when a remote member's membership is removed), and remote members
and groups of refused servers are marked hidden, which the pages and collections honour.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from node.clock import Clock
from node.config import Settings
from node.errors import Invalid
from node.membership import locked_membership, remove_membership
from node.modlog import REASON_MAX, ModAction, log_action
from node.storage.engine import begin_for_reading
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    FederationDomain,
    FederationPolicyRow,
    Member,
    Membership,
)
from node.text import neutralise

RECHECK = timedelta(seconds=2)
POLICY_ROW_ID = 1
# The one answer to a refused server, wherever it is refused (inbox, signed fetch).
REFUSED = "activities from this server are refused"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


class PolicyMode(StrEnum):
    OPEN = "open"
    ALLOWLIST = "allowlist"


class ListKind(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


def parse_policy_domain(text: str) -> str:
    """A policy domain as typed by an admin: a host name (no scheme, port or path), lower case.
    Raises Invalid with a one-line reason."""
    domain = text.strip().lower().rstrip(".")
    if not domain:
        raise Invalid({"domain": "Give a domain, such as example.org."})
    if "://" in domain or "/" in domain:
        raise Invalid({"domain": f"{text!r} is not a domain: give the host name alone."})
    if ":" in domain:
        raise Invalid({"domain": f"{text!r} has a port: give the host name without it."})
    if not _HOST_NAME.fullmatch(domain):
        raise Invalid({"domain": f"{text!r} is not a host name such as example.org."})
    return domain


def host_of(iri_or_domain: str) -> str:
    """The host name an IRI or a `host[:port]` domain names (no port, lower case), or ""."""
    text = iri_or_domain if "://" in iri_or_domain else f"//{iri_or_domain}"
    try:
        return (urlsplit(text).hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


def covers(domains: Iterable[str], host: str) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


@dataclass(frozen=True)
class DomainPolicy:
    mode: PolicyMode
    allowed: frozenset[str]
    blocked: frozenset[str]  # the table's and the environment's
    version: int = 0

    def permits_host(self, host: str) -> bool:
        """Whether we federate with `host` (a host name; a port is ignored)."""
        host = host_of(host)
        if not host or covers(self.blocked, host):
            return False
        return self.mode is PolicyMode.OPEN or covers(self.allowed, host)

    def permits(self, iri: str) -> bool:
        """Whether we federate with the server of `iri` (or of a `host[:port]` domain)."""
        return self.permits_host(iri)


OPEN_POLICY = DomainPolicy(PolicyMode.OPEN, frozenset(), frozenset())


@dataclass(frozen=True)
class ConfiguredPolicy:
    """What the configuration says: a mode that fixes the policy's (None: the database's), and
    domains allowed or blocked in addition to the table's."""

    mode: PolicyMode | None = None
    allowed: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> ConfiguredPolicy:
        mode = PolicyMode(settings.federation_mode) if settings.federation_mode else None
        return cls(mode, settings.allowed_domains, settings.blocked_domains)


NOTHING_CONFIGURED = ConfiguredPolicy()
MODE_CONFIGURED = (
    "The mode is set by the configuration (federation.mode or HEALTHNODE_FEDERATION_MODE): "
    "change it there."
)


@dataclass(frozen=True)
class ListedDomain:
    domain: str
    kind: ListKind
    reason: str
    created_at: datetime


async def listed_domains(session: AsyncSession) -> list[ListedDomain]:
    rows = await session.execute(select(FederationDomain).order_by(FederationDomain.domain))
    return [
        ListedDomain(row.domain, ListKind(row.kind), row.reason, row.created_at)
        for row in rows.scalars()
    ]


async def _locked_policy_row(session: AsyncSession) -> FederationPolicyRow:
    statement = (
        select(FederationPolicyRow).where(FederationPolicyRow.id == POLICY_ROW_ID).with_for_update()
    )
    row = (await session.execute(statement)).scalar_one_or_none()
    if row is None:  # the migration inserts it; a wiped table is re-created in open mode
        row = FederationPolicyRow(id=POLICY_ROW_ID, mode=PolicyMode.OPEN.value, version=0)
        session.add(row)
        await session.flush()
    return row


async def current_version(session: AsyncSession) -> int:
    found = await session.execute(
        select(FederationPolicyRow.version).where(FederationPolicyRow.id == POLICY_ROW_ID)
    )
    return found.scalar_one_or_none() or 0


async def load_policy(
    session: AsyncSession, configured: ConfiguredPolicy = NOTHING_CONFIGURED
) -> DomainPolicy:
    found = await session.execute(
        select(FederationPolicyRow.mode, FederationPolicyRow.version).where(
            FederationPolicyRow.id == POLICY_ROW_ID
        )
    )
    mode, version = found.one_or_none() or (PolicyMode.OPEN.value, 0)
    listed = await listed_domains(session)
    return DomainPolicy(
        mode=configured.mode or PolicyMode(mode),
        allowed=frozenset(item.domain for item in listed if item.kind is ListKind.ALLOW)
        | _hosts(configured.allowed),
        blocked=frozenset(item.domain for item in listed if item.kind is ListKind.BLOCK)
        | _hosts(configured.blocked),
        version=version,
    )


def _hosts(domains: Iterable[str]) -> frozenset[str]:
    return frozenset(host_of(domain) for domain in domains if host_of(domain))


# ---------------------------------------------------------------- changing the policy


@dataclass(frozen=True)
class Changed:
    summary: str  # one line: what changed, for the command line and the page
    ended_memberships: int


def _reason(reason: str) -> str:
    reason = neutralise(reason).strip()
    if len(reason) > REASON_MAX:
        raise Invalid({"reason": f"A reason is at most {REASON_MAX} characters."})
    return reason


async def _changed(
    session: AsyncSession,
    summary: str,
    reason: str,
    now: datetime,
    actor_label: str,
    actor_id: int | None,
    configured: ConfiguredPolicy,
) -> Changed:
    row = await _locked_policy_row(session)
    row.version += 1
    row.updated_at = now
    await session.flush()
    await log_action(
        session,
        action=ModAction.FEDERATION_POLICY,
        reason=f"{summary}: {reason}" if reason else summary,
        now=now,
        actor_label=actor_label,
        actor_id=actor_id,
        group_id=None,
    )
    ended = await apply_policy(session, await load_policy(session, configured))
    return Changed(summary, ended)


async def set_mode(
    session: AsyncSession,
    mode: PolicyMode,
    *,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
    configured: ConfiguredPolicy = NOTHING_CONFIGURED,
    reason: str = "",
) -> Changed:
    if configured.mode is not None:
        raise Invalid({"mode": MODE_CONFIGURED})
    row = await _locked_policy_row(session)
    row.mode = mode.value
    return await _changed(
        session, f"mode {mode.value}", _reason(reason), now, actor_label, actor_id, configured
    )


async def list_domain(
    session: AsyncSession,
    domain: str,
    kind: ListKind,
    *,
    reason: str,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
    configured: ConfiguredPolicy = NOTHING_CONFIGURED,
) -> Changed:
    """Allow or block `domain` (replacing its earlier entry, if any)."""
    domain = parse_policy_domain(domain)
    reason = _reason(reason)
    row = await session.get(FederationDomain, domain, with_for_update=True)
    if row is None:
        session.add(FederationDomain(domain=domain, kind=kind.value, reason=reason, created_at=now))
    else:
        row.kind, row.reason, row.created_at = kind.value, reason, now
    await session.flush()
    return await _changed(
        session, f"{kind.value} {domain}", reason, now, actor_label, actor_id, configured
    )


async def unlist_domain(
    session: AsyncSession,
    domain: str,
    *,
    now: datetime,
    actor_label: str,
    actor_id: int | None = None,
    configured: ConfiguredPolicy = NOTHING_CONFIGURED,
) -> Changed:
    domain = parse_policy_domain(domain)
    removed = await session.execute(
        delete(FederationDomain).where(FederationDomain.domain == domain)
    )
    if not removed.rowcount:
        raise Invalid({"domain": f"{domain} is neither allowed nor blocked."})
    return await _changed(session, f"unlist {domain}", "", now, actor_label, actor_id, configured)


async def apply_policy(session: AsyncSession, policy: DomainPolicy) -> int:
    """Bring the stored rows in line with `policy`: hide (or show again) remote members and
    groups by whether their server is permitted, and end the memberships in our groups of
    remote members whose server is not. Returns how many memberships ended."""
    refused_people: set[str] = set()
    for model in (Member, ConditionGroup):
        rows = (
            await session.execute(
                select(model.domain, model.federation_hidden)
                .where(model.domain != LOCAL)
                .distinct()
            )
        ).all()
        refused = {domain for domain, _ in rows if not policy.permits(domain)}
        if model is Member:
            refused_people = refused
        hide = {domain for domain, hidden in rows if domain in refused and not hidden}
        show = {domain for domain, hidden in rows if domain not in refused and hidden}
        for domains, hidden in ((hide, True), (show, False)):
            if domains:
                await session.execute(
                    update(model)
                    .where(model.domain.in_(sorted(domains)))
                    .values(federation_hidden=hidden)
                )
    if not refused_people:
        return 0
    memberships = await session.execute(
        select(Membership.group_id, Membership.member_id)
        .join(Member, Member.id == Membership.member_id)
        .join(ConditionGroup, ConditionGroup.id == Membership.group_id)
        .where(
            Member.domain.in_(sorted(refused_people)),
            ConditionGroup.domain == LOCAL,
            Membership.state != "banned",  # a ban stays: it is ours to lift
        )
    )
    ended = 0
    for group_id, member_id in memberships.all():
        row = await locked_membership(session, group_id, member_id)
        if row is not None and row.state != "banned":
            await remove_membership(session, row)
            ended += 1
    await session.flush()
    return ended


# ---------------------------------------------------------------- the policy a process holds


class PolicyCache:
    """The policy as this process last read it, read again when the version counter moved;
    the counter itself is asked at most every RECHECK of the node's clock."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        configured: ConfiguredPolicy = NOTHING_CONFIGURED,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._configured = configured
        self._policy = DomainPolicy(
            configured.mode or PolicyMode.OPEN,
            _hosts(configured.allowed),
            _hosts(configured.blocked),
            version=-1,
        )
        self._checked_at: datetime | None = None
        # One read at a time: a claimed batch asks from 64 deliveries at once, and without
        # it each of them would read the policy when the check falls due.
        self._reading = asyncio.Lock()

    @property
    def configured(self) -> ConfiguredPolicy:
        return self._configured

    @property
    def latest(self) -> DomainPolicy:
        """Without asking the database: for code that cannot wait (a sync check)."""
        return self._policy

    def invalidate(self) -> None:
        """This process changed the policy: the next `current()` reads it again."""
        self._checked_at = None

    async def current(self) -> DomainPolicy:
        if self._fresh(self._clock.now()):
            return self._policy
        async with self._reading:
            now = self._clock.now()
            if self._fresh(now):  # another caller read it while this one waited
                return self._policy
            async with self._sessions() as session, session.begin():
                await begin_for_reading(session)
                version = await current_version(session)
                if version != self._policy.version:
                    self._policy = await load_policy(session, self._configured)
            self._checked_at = now
        return self._policy

    def _fresh(self, now: datetime) -> bool:
        return self._checked_at is not None and now - self._checked_at < RECHECK
