"""Network reads for incoming activities, done between write transactions, never inside one.

Processing runs inside the inbox worker's write transaction and never touches the network:
when it needs a remote person it does not know, an actor's current document or an object by
its id, it raises NeedsFetch. The worker leaves that item queued, commits the batch, fetches
what was wanted here (on SQLite nobody else can write while a transaction waits), and
processes the item again at once with what was fetched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from federation.actors import ActorDirectory, ActorDoc
from federation.client import FetchError
from federation.jsonld import InvalidDocument, normalise
from federation.jsontext import off_the_loop

OBJECTS_KEPT = 256
OBJECT_BYTES_KEPT = 4 * 1024 * 1024  # kept as JSON text: memory bounded by what is counted
OBJECT_SECONDS = 600.0  # a fetched object serves the items that wanted it, then is read anew
CONCURRENT_FETCHES = 8


class FetchKind(StrEnum):
    PERSON = "person"  # a remote person not known here yet
    ACTOR = "actor"  # an actor's document, read again from its origin (Update{Person})
    OBJECT = "object"  # an object by its id, from its own origin


@dataclass(frozen=True)
class Wanted:
    kind: FetchKind
    iri: str


def wanted_text(wanted: Wanted) -> str:
    return f"needs the {wanted.kind} {wanted.iri[:200]}"


class NeedsFetch(Exception):
    """Processing cannot go on without this from the network; nothing it did is kept."""

    def __init__(self, wanted: Wanted) -> None:
        super().__init__(wanted_text(wanted))
        self.wanted = wanted


class Fetched:
    """What was fetched for processing, in memory (bounded). Each fetch gets a generation
    number: an item uses only what was fetched after it first asked, so that it always sees
    the object as it is now (an Update after a Create must not get the Create's copy), while
    the items of one batch that want the same thing share one fetch."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.generation = 0
        # iri -> (generation, time kept, the object as JSON text); parsed when used, so that
        # a small document that parses into a large structure costs its size only briefly.
        self._objects: OrderedDict[str, tuple[int, float, str]] = OrderedDict()
        self._object_bytes = 0
        self._actors: OrderedDict[str, int] = OrderedDict()
        self.stale_actors: set[str] = set()  # known, but worth reading again after the batch

    def object(self, iri: str, newer_than: int) -> dict[str, Any] | None:
        found = self._objects.get(iri)
        if found is None or found[0] <= newer_than or self._clock() - found[1] > OBJECT_SECONDS:
            return None
        document: dict[str, Any] = json.loads(found[2])
        return document

    def actor_read(self, iri: str, newer_than: int) -> bool:
        return self._actors.get(iri, -1) > newer_than

    def keep_object(self, iri: str, document: dict[str, Any]) -> None:
        self.generation += 1
        text = json.dumps(document, separators=(",", ":"))
        self._drop(iri)
        self._objects[iri] = (self.generation, self._clock(), text)
        self._object_bytes += len(text)
        now = self._clock()
        while self._objects and (
            len(self._objects) > OBJECTS_KEPT
            or self._object_bytes > OBJECT_BYTES_KEPT
            or now - next(iter(self._objects.values()))[1] > OBJECT_SECONDS
        ):
            self._drop(next(iter(self._objects)))

    def _drop(self, iri: str) -> None:
        found = self._objects.pop(iri, None)
        if found is not None:
            self._object_bytes -= len(found[2])

    def keep_actor(self, iri: str) -> None:
        self.generation += 1
        self._actors[iri] = self.generation
        self._actors.move_to_end(iri)
        while len(self._actors) > OBJECTS_KEPT:
            self._actors.popitem(last=False)


def checked_object(iri: str, document: Any) -> dict[str, Any]:
    """A fetched object, normalised; it must carry the id it was fetched by."""
    try:
        normalised = normalise(document)
    except InvalidDocument as error:
        raise FetchError("invalid", f"{iri[:200]} is not a usable object: {error}") from None
    if not isinstance(normalised, dict) or normalised.get("id") != iri:
        raise FetchError("invalid", "the fetched object has another id")
    return normalised


class Prefetcher:
    """Fetches what processing wanted, with no transaction open while it waits, and stores
    fetched actors in one short write transaction of their own."""

    def __init__(
        self,
        directory: ActorDirectory,
        fetched: Fetched,
        transaction: Callable[..., Any],
    ) -> None:
        self.directory = directory
        self.fetched = fetched
        self.transaction = transaction

    async def fetch(self, wanted: Iterable[Wanted], now: datetime) -> dict[Wanted, FetchError]:
        """Fetch each wanted thing once; answers the failures (what is missing is kept)."""
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            return {}
        async with self.transaction(reading=True) as session:
            signer = await self.directory.instance_signer(session)
        slots = asyncio.Semaphore(CONCURRENT_FETCHES)
        actors: list[ActorDoc] = []
        failures: dict[Wanted, FetchError] = {}

        async def one(item: Wanted) -> None:
            async with slots:
                try:
                    if item.kind is FetchKind.OBJECT:
                        document = await self.directory.client.get_json(item.iri, signer, now)
                        self.fetched.keep_object(
                            item.iri, await off_the_loop(checked_object, item.iri, document)
                        )
                        return
                    actor = await self.directory.fetch_actor_document(signer, item.iri, now)
                    if item.kind is FetchKind.PERSON and actor.type in ("Group", "Application"):
                        raise FetchError("invalid", f"{item.iri[:200]} is not a person")
                    actors.append(actor)
                except FetchError as error:
                    failures[item] = error

        await asyncio.gather(*(one(item) for item in wanted))
        if actors:
            async with self.transaction() as session:
                for actor in actors:
                    await self.directory.remember(session, actor, now)
            for actor in actors:
                self.fetched.keep_actor(actor.id)
        return failures

    async def refresh_stale(self, now: datetime) -> None:
        """Read again the known actors processing found stale (best effort: one that cannot
        be read now keeps what is known of it)."""
        stale, self.fetched.stale_actors = self.fetched.stale_actors, set()
        if stale:
            await self.fetch([Wanted(FetchKind.ACTOR, iri) for iri in sorted(stale)], now)
