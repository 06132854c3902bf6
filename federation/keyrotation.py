"""Rotating an actor's key pair, and telling the servers that know the actor."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from federation.actors import group_key_owner, member_key_owner
from federation.outbox import Outbox
from keys.pairs import KeyFactory
from node import groups, members
from node.actor_keys import INSTANCE_ACTOR, replace_key_pair
from node.clock import Clock
from node.policy import federates


class UnknownActor(Exception):
    pass


async def rotate_key(
    session: AsyncSession,
    outbox: Outbox,
    actor: str,
    secret: bytes,
    key_factory: KeyFactory,
    clock: Clock,
) -> str:
    """Replace the key of a member (by username), a public group (by slug) or the instance
    ("instance"); the actor's Update goes to every server that follows or hosts it."""
    now = clock.now()
    if actor == INSTANCE_ACTOR:
        await replace_key_pair(session, INSTANCE_ACTOR, key_factory(secret), now)
        return "instance actor"
    member = await members.find_member(session, actor)
    if member is not None:
        await replace_key_pair(session, member_key_owner(member.id), key_factory(secret), now)
        await outbox.member_updated(session, member)
        return f"member {member.username}"
    group = await groups.find_group(session, actor)
    if group is not None and group.domain == "" and federates(group.visibility):
        await replace_key_pair(session, group_key_owner(group.id), key_factory(secret), now)
        await outbox.group_updated(session, group)
        return f"group {group.slug}"
    raise UnknownActor(f"no member or public group called {actor!r} (or give 'instance')")
