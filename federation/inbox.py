"""The inbox edge: authenticate a POSTed activity, store it, answer 202. Processing is later.

Order of checks, cheapest first, and nothing read from the body before the sender is known:
size (web/), the signature headers (present, well formed, covering what they must, the Date
window), the signed digest against the raw body, the federation policy on the keyId's server, the
signer's key (fetched through the actor directory) and the signature. Only then is the body
read as JSON and JSON-LD, in a thread and within bounds (federation/jsonld.py), and the
activity's actor, id and key owner compared.

Faults of the request itself answer 400 (malformed) or 401 with their reason. Everything that
depends on what a key fetch found answers one fixed 401, whatever went wrong, and the reason
is logged: a reason would tell an anonymous sender what this node can reach.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from federation import httpsig
from federation.actors import ActorDirectory, RemoteKeyInfo, UnknownKey
from federation.jsonld import InvalidDocument, normalise
from federation.jsontext import load_json, off_the_loop
from federation.processing import HANDLED_TYPES
from federation.vocab import Activity, VocabError, parse_activity, same_origin
from node.federation_policy import REFUSED
from node.storage.models import InboxItem
from node.storage.states import InboxItemState

log = logging.getLogger(__name__)

DATE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class SignedRequest:
    method: str
    url: str
    path_and_query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    expected_host: str = ""  # our own domain: a request signed for another server is refused


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _check_date(headers: Mapping[str, str], created: int | None, now: datetime) -> None:
    if created is not None:
        try:
            moment = datetime.fromtimestamp(created, tz=now.tzinfo)
        except (OverflowError, OSError, ValueError):
            raise Refused(400, "the signature's created time is not a time") from None
    else:
        if "date" not in headers:
            raise Refused(401, "the request has no Date")
        try:
            moment = parsedate_to_datetime(headers["date"])
        except (TypeError, ValueError):
            raise Refused(400, "the Date header is not an HTTP date") from None
        if moment.tzinfo is None:
            raise Refused(400, "the Date header has no time zone")
    if abs(now - moment) > DATE_WINDOW:
        raise Refused(401, "the request's date is more than an hour from ours")


@dataclass(frozen=True)
class ParsedSignature:
    key_id: str
    created: int | None
    expires: int | None
    covered: tuple[str, ...]  # the headers and components the signature covers
    algorithm: str | None
    value: bytes
    signed: bytes  # the signing string (draft-cavage) or signature base (RFC 9421)


def parse_signature(request: SignedRequest) -> ParsedSignature:
    """Find the signature, insist that it covers what makes a request unforgeable, and build
    what it signs: all from the headers, so that a fault is found before any key is fetched.
    A GET has no body, so no digest is asked of it."""
    headers = request.headers
    has_body = request.method != "GET"
    try:
        if "signature-input" in headers:
            signatures = httpsig.parse_message_signatures(
                headers["signature-input"], headers.get("signature", "")
            )
            if len(signatures) != 1:
                raise Refused(401, "exactly one message signature is expected")
            message = signatures[0]
            required = {"@method", "@target-uri"} | ({"content-digest"} if has_body else set())
            if not required <= set(message.components):
                raise Refused(401, f"the signature must cover {', '.join(sorted(required))}")
            if message.created is None:
                raise Refused(401, "the message signature has no created time")
            base = httpsig.message_signature_base(
                message, method=request.method, url=request.url, headers=headers
            )
            return ParsedSignature(
                message.key_id, message.created, message.expires, message.components,
                message.algorithm, message.signature, base.encode(),
            )  # fmt: skip
        if "signature" not in headers:
            raise Refused(401, "the request is not signed")
        cavage = httpsig.parse_cavage_signature(headers["signature"])
        required = {"(request-target)", "host", "date"} | ({"digest"} if has_body else set())
        if not required <= set(cavage.headers):
            raise Refused(401, f"the signature must cover {', '.join(sorted(required))}")
        text = httpsig.cavage_signing_string(
            request.method, request.path_and_query, headers, cavage.headers,
            cavage.created, cavage.expires,
        )  # fmt: skip
    except httpsig.MalformedSignature as error:
        raise Refused(400, f"malformed signature: {error}") from None
    # (created) and (expires) count only when the signature covers them.
    created = cavage.created if "(created)" in cavage.headers else None
    expires = cavage.expires if "(expires)" in cavage.headers else None
    return ParsedSignature(
        cavage.key_id, created, expires, cavage.headers, cavage.algorithm, cavage.signature,
        text.encode(),
    )  # fmt: skip


def signing_key_id(headers: Mapping[str, str]) -> str | None:
    """The keyId a request claims to be signed with, if it is signed at all."""
    try:
        if "signature-input" in headers:
            signatures = httpsig.parse_message_signatures(
                headers["signature-input"], headers.get("signature", "")
            )
            return signatures[0].key_id
        if "signature" in headers:
            return httpsig.parse_cavage_signature(headers["signature"]).key_id
    except httpsig.MalformedSignature as error:
        raise Refused(400, f"malformed signature: {error}") from None
    return None


# The one answer to every failure that depends on what fetching the signer's key found.
UNVERIFIED = "the signature could not be verified"


def check_request(request: SignedRequest, now: datetime) -> ParsedSignature:
    """The checks that need neither the body's meaning nor the network: the signature's
    headers, the host it was signed for, its time, and the signed digest of the raw body."""
    signature = parse_signature(request)
    if (
        "host" in signature.covered
        and request.expected_host
        and request.headers.get("host", "").lower() != request.expected_host.lower()
    ):
        raise Refused(401, "the request was signed for another host")
    _check_date(request.headers, signature.created, now)
    if signature.expires is not None and signature.expires < now.timestamp():
        raise Refused(401, "the signature has expired")
    try:
        if request.method != "GET":
            httpsig.check_signed_digests(request.body, request.headers, signature.covered)
    except httpsig.MalformedSignature as error:
        raise Refused(400, f"malformed signature: {error}") from None
    except httpsig.SignatureMismatch as error:
        raise Refused(401, str(error)) from None
    return signature


async def authenticate(
    directory: ActorDirectory,
    request: SignedRequest,
    now: datetime,
    blocked: Callable[[str], bool] | None = None,
) -> tuple[Activity, dict[str, Any]]:
    """Everything short of storing: returns the parsed activity or raises Refused.

    `blocked` is asked about the key before it is fetched, and about the actor."""
    signature = check_request(request, now)
    if blocked is not None and blocked(signature.key_id):
        raise Refused(403, REFUSED)
    key = await _verified_key(directory, signature, now)
    try:
        activity, normalised = await off_the_loop(_read_activity, request.body)
    except (ValueError, InvalidDocument, VocabError) as error:  # not JSON, JSON-LD, AS2
        raise Refused(400, str(error)) from None
    if not same_origin(activity.id, activity.actor):
        raise Refused(401, "the activity's id is not on its actor's server")
    if not same_origin(signature.key_id, activity.actor):
        raise Refused(401, "the signing key is not on the actor's server")
    if blocked is not None and blocked(activity.actor):
        raise Refused(403, REFUSED)
    if key.actor_iri != activity.actor:
        log.info(
            "inbox: refused %s: the signing key belongs to someone other than the actor (%s)",
            activity.id[:200], key.actor_iri[:200],
        )  # fmt: skip
        raise Refused(401, UNVERIFIED)
    return activity, normalised


async def authenticate_fetch(
    directory: ActorDirectory,
    request: SignedRequest,
    now: datetime,
    blocked: Callable[[str], bool],
) -> str:
    """The actor IRI whose key signed this GET (authorized fetch), once the signature
    verifies; raises Refused otherwise. `blocked` is asked about the key before it is
    fetched, and about its owner."""
    signature = check_request(request, now)
    if blocked(signature.key_id):
        raise Refused(403, REFUSED)
    key = await _verified_key(directory, signature, now)
    if not same_origin(signature.key_id, key.actor_iri) or blocked(key.actor_iri):
        raise Refused(403, REFUSED)
    return key.actor_iri


def _read_activity(body: bytes) -> tuple[Activity, dict[str, Any]]:
    """JSON, JSON-LD and the activity's shape: CPU work, run in a document thread."""
    normalised = normalise(load_json(body))
    return parse_activity(normalised), normalised


async def _verified_key(
    directory: ActorDirectory, signature: ParsedSignature, now: datetime
) -> RemoteKeyInfo:
    """The signer's key, once the signature verifies with it. A mismatch asks the directory
    for the key again, which fetches it only if it was not fetched recently (a rotated key)."""
    for refresh in (False, True):
        try:
            key = await directory.remote_key(signature.key_id, now, refresh=refresh)
        except UnknownKey as error:
            log.info("inbox: refused a request signed with %s: %s", signature.key_id[:200], error)
            raise Refused(401, UNVERIFIED) from None
        try:
            httpsig.verify_with_key(
                key.public_key, signature.value, signature.signed, signature.algorithm
            )
            return key
        except httpsig.SignatureMismatch as error:
            if refresh:
                log.info(
                    "inbox: refused a request signed with %s: %s", signature.key_id[:200], error
                )
                raise Refused(401, UNVERIFIED) from None
    raise AssertionError("unreachable")


class KnownAddressees:
    """Inboxes found to exist in the last few seconds, by path: a burst of POSTs to one
    group's inbox looks its group up once, not once a POST. Only answers that it exists are
    remembered, briefly and boundedly: an inbox that stops existing is refused again within
    `ttl`, and one that starts existing is accepted at once."""

    def __init__(self, ttl: timedelta = timedelta(seconds=5), size: int = 1024) -> None:
        self.ttl = ttl.total_seconds()
        self.size = size
        # path -> (until, the id of the group whose inbox it is, or None for another inbox)
        self._until: OrderedDict[str, tuple[float, int | None]] = OrderedDict()

    def __contains__(self, path: str) -> bool:
        found = self._until.get(path)
        if found is None:
            return False
        if found[0] < time.monotonic():
            del self._until[path]
            return False
        return True

    def group_of(self, path: str) -> int | None:
        """The group whose inbox `path` was found to be (when it is known and a group's)."""
        found = self._until.get(path)
        return found[1] if found is not None else None

    def add(self, path: str, group_id: int | None = None) -> None:
        self._until.pop(path, None)
        self._until[path] = (time.monotonic() + self.ttl, group_id)
        while len(self._until) > self.size:
            self._until.popitem(last=False)


class StoreFailed(Exception):
    """The activity could not be kept: the sender must be told to try again (not 202)."""


@dataclass
class _Pending:
    row: dict[str, Any]
    kept: asyncio.Future[bool]


class InboxWriter:
    """Keeps accepted activities for processing, many per transaction (group commit).

    Each inbox POST waits for the transaction that holds its row, so a 202 still means
    "stored"; but a burst of POSTs shares one write transaction instead of queueing for the
    write lock one by one. Rows are written with ON CONFLICT DO NOTHING on the activity id:
    an activity delivered twice, even at once or to two web processes, is kept once.
    """

    def __init__(
        self,
        transactions: Callable[[], AbstractAsyncContextManager[AsyncSession]],
        dialect: str,
        wake: Callable[[], None],
    ) -> None:
        self.transactions = transactions
        self.dialect = dialect
        self.wake = wake
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None

    async def store(
        self,
        activity: Activity,
        document: dict[str, Any],
        now: datetime,
        addressed_group_id: int | None = None,
    ) -> bool:
        """True when kept, False when it was here already (a redelivery); StoreFailed when
        the database refused it. `addressed_group_id` is the group whose inbox it was POSTed
        to: processing starts from it instead of looking the group up again."""
        row = {
            "activity_id": activity.id,
            "actor_iri": activity.actor,
            "addressed_group_id": addressed_group_id,
            "body": json.dumps(document, separators=(",", ":")),
            "state": InboxItemState.QUEUED.value,
            "attempts": 0,
            "next_attempt_at": now,
            "received_at": now,
            "error": "",
        }
        pending = _Pending(row, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await asyncio.shield(pending.kept)

    async def close(self) -> None:
        """Let the batch being written finish: its senders are waiting for their answers."""
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        # Whatever arrives while one batch is being written goes into the next.
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                kept = await self._write([pending.row for pending in batch])
            except OperationalError:
                # Busy or unreachable (SQLite's lock timeout, a lost connection): every row
                # would wait as long again, so all senders are answered 503 at once.
                self._answer_failed(batch)
                continue
            except Exception:
                if len(batch) == 1:
                    self._answer_failed(batch)
                    continue
                # One row the database refuses must not fail the others: each on its own.
                log.warning("storing %d inbox items together failed; one by one", len(batch))
                kept = set()
                for pending in batch:
                    try:
                        kept |= await self._write([pending.row])
                    except Exception:
                        self._answer_failed([pending])
            if kept:
                self.wake()
            claimed: set[str] = set()
            for pending in batch:
                activity_id = pending.row["activity_id"]
                first = activity_id in kept and activity_id not in claimed
                claimed.add(activity_id)
                if not pending.kept.done():
                    pending.kept.set_result(first)

    @staticmethod
    def _answer_failed(batch: list[_Pending]) -> None:
        """The senders get a 503 and deliver again later."""
        log.exception("storing an inbox item failed")
        for pending in batch:
            if not pending.kept.done():
                pending.kept.set_exception(StoreFailed("the database refused it"))

    async def _write(self, rows: list[dict[str, Any]]) -> set[str]:
        unique = list({row["activity_id"]: row for row in reversed(rows)}.values())
        kept: set[str] = set()
        insert = sqlite_insert if self.dialect == "sqlite" else postgresql_insert
        # One statement, compiled once whatever the number of rows: SQLAlchemy sends the
        # rows as multi-row VALUES of up to its own batch size, and answers the ids kept.
        statement = (
            insert(InboxItem)
            .on_conflict_do_nothing(index_elements=[InboxItem.activity_id])
            .returning(InboxItem.activity_id)
        )
        async with self.transactions() as session:
            kept.update((await session.execute(statement, unique)).scalars())
        return kept


def is_handled(activity: Activity) -> bool:
    return activity.type in HANDLED_TYPES
