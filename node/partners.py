"""A partner group's partner domains: who, besides its own node's members, may see it.

A domain is typed as the federation policy's are (`parse_policy_domain`: a host name without a
port) and covers its subdomains. The list is kept in `group_partners`; questions about a host
are answered in SQL (the host's own name and each of its parent domains), so that a group a
host is not a partner of is never loaded for it.

Removing a partner ends, in the same transaction, the memberships of that domain's people in
the group and abandons the deliveries still queued for that domain's inboxes that carry the
group's activities: it receives nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Invalid
from node.federation_policy import host_of, parse_policy_domain
from node.membership import locked_membership, remove_membership
from node.policy import PARTNERS, federates, shared_with_partners
from node.storage.models import (
    LOCAL,
    ConditionGroup,
    Delivery,
    GroupPartner,
    Member,
    Membership,
    OutboxActivity,
)
from node.storage.states import DELIVERY, DeliveryState

PARTNERS_MAX = 50
PARTNER_REMOVED = "the partner domain was removed from the group"


def parse_partner_domains(raw: Iterable[str]) -> list[str]:
    """The partner domains as typed (one per item; commas and white space also separate),
    parsed, lower case, without repeats. Raises Invalid with a one-line reason under
    "partners"."""
    domains: list[str] = []
    for item in raw:
        for text in item.replace(",", " ").split():
            try:
                domain = parse_policy_domain(text)
            except Invalid as invalid:
                raise Invalid({"partners": invalid.problems["domain"]}) from None
            if domain not in domains:
                domains.append(domain)
    if len(domains) > PARTNERS_MAX:
        raise Invalid({"partners": f"At most {PARTNERS_MAX} partner domains."})
    return domains


def covering_domains(host: str) -> list[str]:
    """The domains that cover `host` (a host name, or an IRI or host:port, port ignored):
    itself and each parent domain. Empty for no host."""
    name = host_of(host)
    if not name:
        return []
    labels = name.split(".")
    return [".".join(labels[index:]) for index in range(len(labels))]


def covered_in_sql(group_id: ColumnElement[int], host: str) -> ColumnElement[bool]:
    """Whether `host` is on a partner domain of the group whose id is `group_id`."""
    return exists().where(
        GroupPartner.group_id == group_id, GroupPartner.domain.in_(covering_domains(host) or [""])
    )


async def partners_of(session: AsyncSession, group_id: int) -> list[str]:
    rows = await session.execute(
        select(GroupPartner.domain)
        .where(GroupPartner.group_id == group_id)
        .order_by(GroupPartner.domain)
    )
    return list(rows.scalars())


async def is_covered(session: AsyncSession, group_id: int, host: str) -> bool:
    statement = select(covered_in_sql(ConditionGroup.id, host)).where(ConditionGroup.id == group_id)
    return bool((await session.execute(statement)).scalar())


async def shares_with(session: AsyncSession, group: ConditionGroup, host: str) -> bool:
    """Whether a local group's actor, documents and activities may reach `host` (a host
    name, IRI or host:port): a public group's reach everyone the federation policy permits;
    a partner group's only its partner domains; a private group's no one."""
    if group.domain != LOCAL:
        return False
    if federates(group.visibility):
        return True
    return shared_with_partners(group.visibility) and await is_covered(session, group.id, host)


def reach_of(partners: list[str], urls: Iterable[str]) -> list[str]:
    """The URLs (inboxes) on a partner domain, given the group's partner list."""
    return [url for url in urls if _covered_by(partners, url)]


def add_partner_rows(
    session: AsyncSession, group_id: int, domains: Iterable[str], now: datetime
) -> None:
    session.add_all(
        GroupPartner(group_id=group_id, domain=domain, created_at=now) for domain in domains
    )


async def set_partners(
    session: AsyncSession,
    group: ConditionGroup,
    domains: list[str],
    now: datetime,
    *,
    group_actor_iri: str,
) -> tuple[list[str], list[str]]:
    """Make `domains` (already parsed) the group's partner list; gives (added, removed).
    A removed domain's memberships end and the deliveries still queued to it of what the
    group's actor (`group_actor_iri`) published are abandoned, in this transaction."""
    if group.domain != LOCAL or group.visibility != PARTNERS:
        raise Invalid({"partners": "Only a partner group of this node has partner domains."})
    if not domains:
        raise Invalid({"partners": "A partner group needs at least one partner domain."})
    current = await partners_of(session, group.id)
    added = [domain for domain in domains if domain not in current]
    removed = [domain for domain in current if domain not in domains]
    if removed:
        await session.execute(
            delete(GroupPartner).where(
                GroupPartner.group_id == group.id, GroupPartner.domain.in_(removed)
            )
        )
    add_partner_rows(session, group.id, added, now)
    await session.flush()
    if removed:
        await _cut_off(session, group.id, group_actor_iri, removed, now)
    return added, removed


def _under(column: ColumnElement[str], domains: list[str]) -> ColumnElement[bool]:
    """A host[:port] column on one of `domains` or their subdomains (any port)."""
    conditions: list[ColumnElement[bool]] = []
    for domain in domains:
        escaped = domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions += [
            column == domain,
            column.like(f"{escaped}:%", escape="\\"),
            column.like(f"%.{escaped}", escape="\\"),
            column.like(f"%.{escaped}:%", escape="\\"),
        ]
    return or_(*conditions)


async def _cut_off(
    session: AsyncSession, group_id: int, group_actor_iri: str, removed: list[str], now: datetime
) -> None:
    """End the removed domains' memberships in the group, and abandon what is queued for
    them that the group's node would still send about it."""
    still = await partners_of(session, group_id)
    rows = await session.execute(
        select(Membership.group_id, Membership.member_id, Member.domain)
        .join(Member, Member.id == Membership.member_id)
        .where(
            Membership.group_id == group_id,
            Member.domain != LOCAL,
            _under(Member.domain, removed),
            Membership.state != "banned",
        )
    )
    for row_group, member_id, domain in rows.all():
        if still and _covered_by(still, domain):
            continue  # a subdomain of a partner still on the list
        row = await locked_membership(session, row_group, member_id)
        if row is not None and row.state != "banned":
            await remove_membership(session, row)
    # Queued ones only, through the state graph: one already in flight is on the wire.
    await session.execute(
        DELIVERY.update(
            Delivery, [DeliveryState.QUEUED], DeliveryState.ABANDONED,
            last_error=PARTNER_REMOVED, updated_at=now,
        )
        .where(
            _under(Delivery.host, removed),
            Delivery.activity_id.in_(
                select(OutboxActivity.id).where(OutboxActivity.actor_iri == group_actor_iri)
            ),
        )
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    await session.flush()


def _covered_by(domains: list[str], host: str) -> bool:
    name = host_of(host)
    return any(name == domain or name.endswith("." + domain) for domain in domains)
