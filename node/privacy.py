"""The privacy notice, the consent record kept at registration, and which groups an admin
opened to search engines.

A member consents to the privacy text shown when they register. Its version is the node's
consent policy version (settings) joined to a digest of the text, and the text is kept under
that version (`consent_texts`), so a member reads what they agreed to even after the admins
have changed the notice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from node.errors import Forbidden, Invalid, NotFound
from node.members import handle_of
from node.modlog import ModAction, log_action
from node.policy import OPEN_VISIBILITIES, is_admin
from node.storage.models import LOCAL, ConditionGroup, ConsentText, Member, NodeNotice
from node.text import neutralise, normalise_line_endings
from node.validation import text_problem

PRIVACY_NOTICE = "privacy"
PRIVACY_MAX = 20_000
DEFAULT_PRIVACY_TEXT = """\
What this node stores
- Your account: your username, display name, "about you", a hash of your password (never the \
password itself), when you joined and when you agreed to this notice.
- What you write: your posts and replies, the groups you belong to, your helpful marks and \
the reports you file.
- For abuse control only: the addresses your sign-ins and sign-ups come from, for a short time.

What federates (is sent to other servers)
- Posts and replies in public groups go to the servers of that group's followers on other \
servers, with your username and display name. Deleting a post sends a deletion to those \
servers, but a post cannot be recalled from a server that ignores deletion.
- The names of a public group's moderators, and how many members it has.

What never leaves this node
- Anything in a private group: its posts, its members and its very name.
- Your password, your sign-in sessions, the addresses you connect from, and which groups you \
belong to (your profile lists your public groups only if you choose so).

Nothing on this node is shown to search engines unless an admin opens a public group to them; \
member profiles never are. The pages load nothing from other sites.
"""


async def privacy_text(session: AsyncSession) -> str:
    """The privacy notice as the admins wrote it, or the default."""
    row = await session.get(NodeNotice, PRIVACY_NOTICE)
    return row.body if row is not None and row.body else DEFAULT_PRIVACY_TEXT


async def set_privacy_text(session: AsyncSession, admin: Member, text: str, now: datetime) -> None:
    """Save the privacy notice; an empty text means the default."""
    if not is_admin(admin.role):
        raise Forbidden("Only the node's admins can edit the privacy notice.")
    body = neutralise(normalise_line_endings(text)).strip()
    problem = text_problem(body, "The privacy notice", PRIVACY_MAX, False)
    if problem:
        raise Invalid({"privacy": problem})
    row = await session.get(NodeNotice, PRIVACY_NOTICE)
    if row is None:
        session.add(NodeNotice(name=PRIVACY_NOTICE, body=body, updated_at=now))
    elif row.body != body:
        row.body, row.updated_at = body, now
    await session.flush()
    await log_action(
        session,
        action=ModAction.PRIVACY_NOTICE,
        reason="Edited the privacy notice.",
        now=now,
        actor_label=handle_of(admin),
        actor_id=admin.id,
    )


def consent_version(policy_version: str, text: str) -> str:
    """The version of a privacy text: the node's policy version and a digest of the text."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{policy_version[:27]}+{digest}"


async def version_consented_to(session: AsyncSession, policy_version: str, now: datetime) -> str:
    """The version of the privacy text shown now, kept so it can be read later: what a new
    member's consent record names."""
    text = await privacy_text(session)
    version = consent_version(policy_version, text)
    # Several sign-ups at once may each be first to keep this version: one row, no error.
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    await session.execute(
        insert(ConsentText)
        .values(version=version, body=text, first_shown_at=now)
        .on_conflict_do_nothing(index_elements=[ConsentText.version])
    )
    return version


@dataclass(frozen=True)
class ConsentRecord:
    version: str | None
    at: datetime | None
    text: str | None  # None for a version whose text was not kept (before texts were)


async def consent_record(session: AsyncSession, member: Member) -> ConsentRecord:
    version = member.consent_policy_version
    kept = await session.get(ConsentText, version) if version else None
    return ConsentRecord(version, member.consent_at, kept.body if kept else None)


async def groups_for_search_engines(session: AsyncSession) -> list[ConditionGroup]:
    """Our public groups, which an admin may open to search engines."""
    rows = await session.scalars(
        select(ConditionGroup)
        .where(ConditionGroup.domain == LOCAL, ConditionGroup.visibility.in_(OPEN_VISIBILITIES))
        .order_by(ConditionGroup.name)
    )
    return list(rows)


async def open_to_search_engines(
    session: AsyncSession, admin: Member, slug: str, opened: bool, now: datetime
) -> ConditionGroup:
    """Open (or close) one of our public groups' page and threads to search engines."""
    if not is_admin(admin.role):
        raise Forbidden("Only the node's admins can open groups to search engines.")
    group = await session.scalar(
        select(ConditionGroup).where(
            ConditionGroup.slug == slug.strip().lower(),
            ConditionGroup.domain == LOCAL,
            ConditionGroup.visibility.in_(OPEN_VISIBILITIES),
        )
    )
    if group is None:
        raise NotFound("There is no public group of this node at that address.")
    if group.indexable != opened:
        group.indexable = opened
        await session.flush()
        await log_action(
            session,
            action=ModAction.SEARCH_ENGINES,
            reason=f"{'Opened' if opened else 'Closed'} the group to search engines.",
            now=now,
            actor_label=handle_of(admin),
            actor_id=admin.id,
            group_id=group.id,
        )
    return group
