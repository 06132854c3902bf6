"""Actors' keys: our own (opened from storage) and remote ones (fetched, cached, refreshed).

A burst of activities from a new server causes one fetch per actor: look-ups of one URI wait
on a shared lock. A cached key is refetched when it is older than the freshness window, or
when a signature fails to verify with it (the actor may have rotated its key), but a key is
fetched at most once per KEY_REFETCH_INTERVAL however many requests name it: a failed fetch
is remembered as long, so that a flood of badly signed requests costs one outbound GET.

An actor's keys are its `publicKey` and, per FEP-521a, the Ed25519 Multikeys of its
`assertionMethod` (read in federation/vocab.py); each is cached by its id, as a PEM, and
belongs to the actor that publishes it. A key the actor stops publishing is forgotten when
the actor is fetched again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from federation.client import FederationClient, FetchError, Signer
from federation.jsonld import InvalidDocument, normalise
from federation.jsontext import off_the_loop
from federation.vocab import ActorDoc, VocabError, parse_actor, same_origin
from keys.pairs import open_private_key
from node import professionals, remote
from node.actor_keys import INSTANCE_ACTOR
from node.actor_keys import group_key_owner as group_key_owner  # where federation/ names them
from node.actor_keys import member_key_owner as member_key_owner
from node.html_text import html_to_text
from node.ids import InstanceActorRef, Iris
from node.storage.models import ActorKey, ConditionGroup, Member, RemoteKey

KEY_FRESHNESS = timedelta(days=1)
RECENT_KEYS = timedelta(minutes=5)
RECENT_KEYS_MAX = 4096
KEY_REFETCH_INTERVAL = timedelta(seconds=60)


class UnknownKey(Exception):
    """The key cannot be had or does not belong to who claims it; answered with 401."""


@dataclass(frozen=True)
class RemoteKeyInfo:
    key_id: str
    actor_iri: str
    public_key: PublicKeyTypes
    fetched_at: datetime


def _stale(row: Member | ConditionGroup, now: datetime) -> bool:
    """Whether what we know of a remote actor is too old to use without fetching it again."""
    return row.fetched_at is None or now - row.fetched_at > KEY_FRESHNESS


class _Locks:
    """Per-URI locks, bounded so that a flood of distinct URIs cannot grow memory."""

    def __init__(self, size: int = 1024) -> None:
        self._locks: OrderedDict[str, asyncio.Lock] = OrderedDict()
        self._size = size

    def get(self, key: str) -> asyncio.Lock:
        lock = self._locks.pop(key, None) or asyncio.Lock()
        self._locks[key] = lock
        while len(self._locks) > self._size:
            oldest, candidate = next(iter(self._locks.items()))
            if candidate.locked():
                break
            del self._locks[oldest]
        return lock


class ActorDirectory:
    def __init__(
        self,
        client: FederationClient,
        secret: bytes,
        iris: Iris,
        transactions: Callable[..., AbstractAsyncContextManager[AsyncSession]],
    ) -> None:
        self.client = client
        self.transactions = transactions
        self.secret = secret
        self.iris = iris
        self.instance_key_id = iris.key_id(InstanceActorRef())
        self._locks = _Locks()
        self._recent: OrderedDict[str, RemoteKeyInfo] = OrderedDict()
        # key id -> (when a fetch of it failed, why): not fetched again before the interval.
        self._failed: OrderedDict[str, tuple[datetime, str]] = OrderedDict()

    # ------------------------------------------------------------ our keys

    async def signer(self, session: AsyncSession, owner: str, key_id: str) -> Signer:
        row = await session.get(ActorKey, owner)
        if row is None:
            raise LookupError(f"no key pair for {owner}")
        return Signer(key_id, open_private_key(row.private_key_sealed, self.secret))

    async def instance_signer(self, session: AsyncSession) -> Signer:
        return await self.signer(session, INSTANCE_ACTOR, self.instance_key_id)

    # ------------------------------------------------------------ remote actors

    def _is_ours(self, iri: str) -> bool:
        return self.iris.is_local(iri)

    async def fetch_actor(self, session: AsyncSession, iri: str, now: datetime) -> ActorDoc:
        """Fetch an actor document (signed by our instance actor) and remember what it says.

        Never one of this node's own actors: they are no one's to describe from outside."""
        actor = await self.fetch_actor_document(await self.instance_signer(session), iri, now)
        await self.remember(session, actor, now)
        return actor

    async def fetch_actor_document(self, signer: Signer, iri: str, now: datetime) -> ActorDoc:
        if self._is_ours(iri):
            raise FetchError("refused", "this node's own actors are not fetched")
        async with self._locks.get(iri):
            document = await self.client.get_json(iri, signer, now)
        try:
            actor = parse_actor(await off_the_loop(normalise, document))
        except (VocabError, InvalidDocument) as error:
            raise FetchError("invalid", f"{iri[:200]} is not a usable actor: {error}") from None
        if actor.id != iri:
            raise FetchError("invalid", f"{iri[:200]} answered with another actor's id")
        return actor

    async def remember(self, session: AsyncSession, actor: ActorDoc, now: datetime) -> None:
        published = actor.published_keys(now + KEY_FRESHNESS)
        for key_id, public_pem in published.items():
            await self._store_key(session, key_id, actor.id, public_pem, now)
        # A key the actor no longer publishes (an FEP-521a key it dropped) no longer speaks
        # for it.
        await session.execute(
            delete(RemoteKey).where(
                RemoteKey.actor_iri == actor.id, RemoteKey.key_id.not_in(list(published))
            )
        )
        # What this process remembers of the actor's keys gives way to what was just stored
        # (a rotated key, read from an Update, is used at once).
        for key_id in [
            key_id
            for key_id, info in self._recent.items()
            if info.actor_iri == actor.id or key_id in published
        ]:
            del self._recent[key_id]
        for key_id in published:
            self._failed.pop(key_id, None)
        facts = remote.RemoteActorFacts(
            iri=actor.id,
            username=actor.preferred_username,
            domain=urlsplit(actor.id).netloc.lower(),
            display_name=actor.name,
            summary=html_to_text(actor.summary),  # shown as text here, never as their HTML
            inbox=actor.inbox,
            shared_inbox=actor.shared_inbox,
            profile_url=actor.url,
            posting_restricted_to_mods=actor.posting_restricted_to_mods,
            followers_only=actor.type == "Group" and not actor.discoverable,
        )
        if actor.type == "Group":
            await remote.upsert_remote_group(session, facts, now)
        elif actor.type in ("Person", "Service", "Organization"):
            member = await remote.upsert_remote_member(session, facts, now)
            # Read on every fetch and refresh: a document without the term ends a claim.
            claim = actor.verification
            await professionals.record_remote_claim(
                session, member,
                title=claim.title if claim else None,
                verifier_domain=claim.verifier if claim else None,
                verified_at=claim.verified_at if claim else None,
                expires_at=claim.expires_at if claim else None,
                now=now,
            )  # fmt: skip
        await session.flush()

    @staticmethod
    async def _store_key(
        session: AsyncSession, key_id: str, actor_iri: str, public_pem: str, now: datetime
    ) -> None:
        row = await session.get(RemoteKey, key_id)
        if row is None:
            try:
                async with session.begin_nested():
                    row = RemoteKey(
                        key_id=key_id, actor_iri=actor_iri, public_pem=public_pem, fetched_at=now
                    )
                    session.add(row)
            except IntegrityError:  # a concurrent request stored it first
                row = await session.get(RemoteKey, key_id)
        if row is not None:
            row.actor_iri, row.public_pem, row.fetched_at = actor_iri, public_pem, now

    async def known_members(
        self, session: AsyncSession, iris: Iterable[str], now: datetime
    ) -> dict[str, Member]:
        """The remote people among `iris` known here and read recently enough that processing
        would use them as they are, with one query."""
        found = await remote.members_by_iri(session, iris)
        return {iri: member for iri, member in found.items() if not _stale(member, now)}

    async def remote_group(self, session: AsyncSession, iri: str, now: datetime) -> ConditionGroup:
        group = await remote.group_by_iri(session, iri)
        if group is None or _stale(group, now):
            actor = await self.fetch_actor(session, iri, now)
            if actor.type != "Group":
                raise FetchError("invalid", f"{iri[:200]} is not a group")
            group = await remote.group_by_iri(session, iri)
        assert group is not None
        return group

    # ------------------------------------------------------------ remote keys

    async def remote_key(self, key_id: str, now: datetime, refresh: bool = False) -> RemoteKeyInfo:
        """A remote key: from this process's memory, the database, or its server, in that
        order. Concurrent look-ups of one key wait for one fetch; what a request fetched is
        remembered in memory at once, so a burst of activities from a new actor costs one fetch.
        `refresh` asks for the key as its server publishes it now, unless it was fetched (here
        or by another process) within KEY_REFETCH_INTERVAL; a key whose fetch failed within it
        is refused without asking its server again.

        No database connection is held while waiting for the key or its server: the look-up
        and the writing of a fetched key are short transactions of their own."""
        async with self._locks.get("key " + key_id):
            remembered = self._recent.get(key_id)
            in_memory_for = KEY_REFETCH_INTERVAL if refresh else RECENT_KEYS
            if remembered and now - remembered.fetched_at <= in_memory_for:
                return remembered
            failed = self._failed.get(key_id)
            if failed is not None and now - failed[0] <= KEY_REFETCH_INTERVAL:
                raise UnknownKey(f"{failed[1]} (not fetched again yet)")
            async with self.transactions(reading=True) as session:
                row = await session.get(RemoteKey, key_id)
                stored = row and (row.actor_iri, row.public_pem, row.fetched_at)
                signer = await self.instance_signer(session)
            stored_for = KEY_REFETCH_INTERVAL if refresh else KEY_FRESHNESS
            if stored is None or now - stored[2] > stored_for:
                try:
                    stored = await self._fetch_key(signer, key_id, now)
                except UnknownKey as error:
                    self._remember_failure(key_id, now, str(error))
                    raise
                self._failed.pop(key_id, None)
            actor_iri, public_pem, fetched_at = stored
            try:
                public_key = load_pem_public_key(public_pem.encode())
            except ValueError:
                raise UnknownKey(f"the key {key_id[:200]} is not a usable public key") from None
            info = RemoteKeyInfo(key_id, actor_iri, public_key, fetched_at)
            self._recent[key_id] = info
            while len(self._recent) > RECENT_KEYS_MAX:
                self._recent.popitem(last=False)
            return info

    def _remember_failure(self, key_id: str, now: datetime, reason: str) -> None:
        self._failed.pop(key_id, None)
        self._failed[key_id] = (now, reason)
        while len(self._failed) > RECENT_KEYS_MAX:
            self._failed.popitem(last=False)

    async def _fetch_key(
        self, signer: Signer, key_id: str, now: datetime
    ) -> tuple[str, str, datetime]:
        """The key lives in its actor's document (key id = actor#fragment: its publicKey or,
        FEP-521a, a Multikey in its assertionMethod) or in a key document whose owner (a
        Multikey's controller) must list it back. Answers (owner, PEM, fetched at)."""
        document_url = key_id.split("#", 1)[0]
        if self._is_ours(document_url):
            raise UnknownKey("this node's own keys are not taken from outside")
        try:
            document = await self.client.get_json(document_url, signer, now)
            owner = document.get("owner") if isinstance(document, dict) else None
            if owner is None and isinstance(document, dict) and document.get("type") == "Multikey":
                owner = document.get("controller")
            if isinstance(owner, str) and document.get("type") != "Person":
                if not same_origin(owner, key_id):
                    raise UnknownKey("the key's owner is on another server")
                actor = await self.fetch_actor_document(signer, owner, now)
            else:
                try:
                    actor = parse_actor(await off_the_loop(normalise, document))
                except (VocabError, InvalidDocument) as error:
                    raise UnknownKey(f"{document_url[:200]} is not an actor: {error}") from None
                if actor.id != document_url:
                    raise UnknownKey(f"{document_url[:200]} answered with another actor's id")
        except FetchError as error:
            raise UnknownKey(f"cannot get the key {key_id[:200]}: {error}") from None
        published = actor.published_keys(now + KEY_FRESHNESS)
        if key_id not in published:
            raise UnknownKey(f"{key_id[:200]} is not the key its actor publishes")
        async with self.transactions() as writing:
            await self.remember(writing, actor, now)
        return actor.id, published[key_id], now
