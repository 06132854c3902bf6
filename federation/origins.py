"""Which remote activity caused a change. The domain keeps only its id (node.events.Origin);
the activity itself, as processing read it (with an object fetched from its origin in place of
an untrusted copy), stays with federation for the transaction, so that a group can announce it
verbatim and answer a Follow with it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.vocab import Activity
from node.events import Origin
from node.storage.models import InboxItem

RECEIVED = "healthnode.received_activities"


def origin_of(session: AsyncSession, activity: Activity) -> Origin:
    """The origin the domain is given for a change `activity` causes."""
    received: dict[str, dict[str, Any]] = session.info.setdefault(RECEIVED, {})
    received[activity.id] = activity.raw
    return Origin(activity.id)


def received_origin(session: AsyncSession, raw: dict[str, Any]) -> Origin:
    """The origin of an activity given as a document (its id must be a string)."""
    activity_id = raw["id"]
    received: dict[str, dict[str, Any]] = session.info.setdefault(RECEIVED, {})
    received[activity_id] = raw
    return Origin(activity_id)


def activity_of(session: AsyncSession, origin: Origin) -> dict[str, Any]:
    """The activity behind `origin`, as processing read it in this transaction. Never the
    stored body instead: that may carry an embedded copy processing did not trust."""
    found = session.info.get(RECEIVED, {}).get(origin.activity_id)
    if found is None:
        raise LookupError(f"no activity {origin.activity_id[:200]} read in this transaction")
    return dict(found)


async def inbox_body(session: AsyncSession, activity_id: str) -> str | None:
    row = (
        await session.execute(select(InboxItem.body).where(InboxItem.activity_id == activity_id))
    ).first()
    return row[0] if row else None
