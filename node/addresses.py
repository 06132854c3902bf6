"""Where this node keeps client addresses, and for how long.

The only place is the attempt counters of the sign-in and registration throttles, whose keys
name the address (node/auth.py). Web sessions, posts, reports and the access log hold none.
A counter that names an address is purged once it has been quiet for the node's address
retention (Settings.address_retention), whether or not its throttle would still count it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncSession

from node.auth import ADDRESS_KEY_PREFIXES
from node.storage.models import AttemptCounter


async def purge_expired_addresses(
    session: AsyncSession, now: datetime, retention: timedelta
) -> int:
    """Remove the counters naming an address last used more than `retention` ago; answers
    how many were removed."""
    result = await session.execute(
        delete(AttemptCounter).where(
            AttemptCounter.last_at < now - retention,
            or_(*(AttemptCounter.key.startswith(prefix) for prefix in ADDRESS_KEY_PREFIXES)),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
