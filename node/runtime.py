"""A running node's shared parts: settings, database, password hasher, secret and clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from keys.pairs import KeyFactory, generate_key_pair
from keys.secret import load_or_create_node_secret
from node.actor_keys import INSTANCE_ACTOR, ensure_key_pair, ensure_local_actor_keys
from node.clock import Clock, SystemClock
from node.config import Settings
from node.email_addresses import NotificationMails
from node.events import EventSink, take_pending
from node.federation_policy import ConfiguredPolicy, PolicyCache, apply_policy, load_policy
from node.mail import Mailer
from node.notifications import Notifier
from node.passwords import Passwords
from node.storage.engine import (
    begin_for_reading,
    checkpoint_after_erasure,
    create_engine,
    session_factory,
)
from node.storage.files import protect_data
from node.storage.migrate import upgrade_to_head

log = logging.getLogger(__name__)


@dataclass
class NodeContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    passwords: Passwords
    secret: bytes
    clock: Clock
    sinks: list[EventSink] = field(default_factory=list)
    # SQLite has one writer at a time. Writers of this process queue here, in order, and
    # start the moment the last one commits, instead of polling SQLite's lock with its
    # growing sleeps (up to 100 ms between two tries).
    _one_writer: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # Which servers this node federates with, as this process last read it.
    federation_policy: PolicyCache = field(init=False, repr=False)
    # Sends email when the operator configured a mail server (None: no email at all).
    mailer: Mailer | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.federation_policy = PolicyCache(
            self.sessions, self.clock, ConfiguredPolicy.of(self.settings)
        )
        self.mailer = Mailer(self.settings.smtp) if self.settings.smtp else None
        self.sinks.append(Notifier(self.clock))
        if self.mailer is not None:
            self.sinks.append(NotificationMails(self.settings, self.mailer, self.clock))

    @classmethod
    async def open(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        *,
        key_factory: KeyFactory = generate_key_pair,
    ) -> NodeContext:
        """Open the database (migrating it), and create the secret and keys on first start:
        the instance actor's, and any local member's or federating group's that has none
        (rows older than keys), so that every local actor can sign.

        The data dir and the database's files are made owner-only first."""
        protect_data(settings.data_dir, settings.resolved_database_url)
        secret = load_or_create_node_secret(settings.data_dir, settings.secret)
        engine = create_engine(settings.resolved_database_url)
        try:
            await upgrade_to_head(engine)
            context = cls(
                settings=settings,
                engine=engine,
                sessions=session_factory(engine),
                passwords=Passwords(settings.password_cost),
                secret=secret,
                clock=clock or SystemClock(),
            )
            async with context.transaction() as session:
                await ensure_key_pair(session, INSTANCE_ACTOR, secret, context.clock.now())
                made = await ensure_local_actor_keys(
                    session, key_factory, secret, context.clock.now()
                )
                if made:
                    log.info("made key pairs for %d local actors that had none", made)
                # The configuration's policy may have changed since the last start.
                policy = await load_policy(session, ConfiguredPolicy.of(settings))
                await apply_policy(session, policy)
        except BaseException:
            await engine.dispose()
            raise
        return context

    @asynccontextmanager
    async def transaction(self, reading: bool = False) -> AsyncIterator[AsyncSession]:
        """One session and transaction: committed on success, rolled back on any error.

        Events the domain recorded are published into the same transaction before it commits.
        `reading` starts it without SQLite's write lock, for work that only reads.
        """
        queue = self._one_writer if not reading and self.is_sqlite else nullcontext()
        async with queue, self.sessions() as session:
            async with session.begin():
                if reading:
                    await begin_for_reading(session)
                yield session
                await self.publish_pending(session)
            await checkpoint_after_erasure(self.engine, session)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def publish_pending(self, session: AsyncSession) -> None:
        events = take_pending(session)
        while events:
            for sink in self.sinks:
                await sink.publish(session, events)
            events = take_pending(session)  # a sink may cause further changes

    async def commit(self, session: AsyncSession) -> None:
        """Publish the session's pending events and commit, for sessions opened outside
        `transaction` (one per web request)."""
        await self.publish_pending(session)
        await session.commit()
        await checkpoint_after_erasure(self.engine, session)

    async def close(self) -> None:
        if self.mailer is not None:
            await self.mailer.close()
        await self.engine.dispose()
