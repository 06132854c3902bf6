"""Every local member and public group gets its RSA key pair in the transaction that creates it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from federation.actors import group_key_owner, member_key_owner
from keys.pairs import KeyFactory, generate_key_pair
from node import events
from node.actor_keys import store_key_pair
from node.clock import Clock
from node.policy import stays_on_node
from node.runtime import NodeContext
from node.storage.models import LOCAL, ConditionGroup, Member


class ActorKeys:
    def __init__(self, secret: bytes, key_factory: KeyFactory, clock: Clock) -> None:
        self.secret = secret
        self.key_factory = key_factory
        self.clock = clock

    async def publish(self, session: AsyncSession, batch: list[events.Event]) -> None:
        for event in batch:
            if isinstance(event, events.MemberCreated):
                member = await session.get(Member, event.member_id)
                if member is not None and member.domain == LOCAL:
                    await self._create(session, member_key_owner(member.id))
            elif isinstance(event, events.GroupCreated):
                group = await session.get(ConditionGroup, event.group_id)
                if (
                    group is not None
                    and group.domain == LOCAL
                    and not stays_on_node(group.visibility)
                ):  # a public or partner group: it signs what it sends
                    await self._create(session, group_key_owner(group.id))

    async def _create(self, session: AsyncSession, owner: str) -> None:
        await store_key_pair(session, owner, self.key_factory(self.secret), self.clock.now())


def attach_actor_keys(node: NodeContext, key_factory: KeyFactory = generate_key_pair) -> None:
    """Give every new local member and public group its key pair (the CLI and serve do this)."""
    node.sinks.append(ActorKeys(node.secret, key_factory, node.clock))
