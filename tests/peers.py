"""A fake remote server and a node under test, for tests of the inbox edge over real HTTP.

A fake remote server (a real aiohttp app on a loopback port) publishes actors whose RSA keys
the tests generate, and records every request it receives, so the Accept or Reject our node
sends back can be read. The node under test is a real node ("hospital") serving its app on
another loopback port. Requests are signed here, by hand (draft-cavage and RFC 9421), without
federation.httpsig, so that a fault shared by our signer and our verifier cannot hide.
The fixtures that build these (keys, remote, third, hospital) live in conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import and_, func, or_, select

from federation.inbox import UNVERIFIED
from node.groups import create_group
from node.members import create_member
from node.storage.models import Delivery, InboxItem, Member, Membership, Post, Thread
from tests.federation_harness import RunningNode, eventually, free_port, start_node

if TYPE_CHECKING:
    from tests.conftest import NodeFactory

AS2 = "https://www.w3.org/ns/activitystreams"
SECURITY_V1 = "https://w3id.org/security/v1"
PUBLIC = AS2 + "#Public"
AS2_JSON = "application/activity+json"
COVERED = ("(request-target)", "host", "date", "digest")
MIB = 1024 * 1024


# ---------------------------------------------------------------- keys


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# ---------------------------------------------------------------- the fake remote server


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def signature_family(headers: dict[str, str]) -> str:
    """How a request is signed, by its shape: RFC 9421 names its signature in Signature-Input."""
    return "rfc9421" if "signature-input" in headers else "draft-cavage"


@dataclass
class FakeRemote:
    """Another server: actors at /users/{name}, their inboxes, and any extra documents.

    Its inboxes accept the signature families in `accepts` (by shape; nothing is verified
    here): by default draft-cavage only, as most of the fediverse does today (Mastodon before
    4.5, Lemmy, Mbin, GoToSocial). A POST signed otherwise is answered 401, as those servers
    answer it, and kept in `refused`, not in `received`: our node then knocks again with
    draft-cavage (federation/knock.py), and `received` holds what the server took in."""

    port: int
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    accepts: frozenset[str] = frozenset({"draft-cavage"})
    refused: list[Received] = field(default_factory=list)
    # Paths answered by a function of the test's instead (statuses, redirects, streams).
    routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )
    server: TestServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def actor(self, name: str) -> str:
        return f"{self.base_url}/users/{name}"

    def key_id(self, name: str) -> str:
        return self.actor(name) + "#main-key"

    def actor_document(self, name: str) -> dict[str, Any]:
        iri = self.actor(name)
        return {
            "@context": [AS2, SECURITY_V1],
            "id": iri,
            "type": "Person",
            "preferredUsername": name,
            "name": name.title(),
            "inbox": iri + "/inbox",
            "publicKey": {
                "id": iri + "#main-key",
                "owner": iri,
                "publicKeyPem": public_pem(self.keys[name]),
            },
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        answer = self.routes.get(request.path)
        if answer is not None:
            # A scripted answer (a status, a redirect, a stream): the body is left unread.
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.received.append(Received(request.method, request.path_qs, headers, b""))
            return await answer(request)
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        received = Received(request.method, request.path_qs, headers, body)
        path = request.path
        is_inbox = path.startswith("/users/") and path.endswith("/inbox")
        if request.method == "POST" and is_inbox and signature_family(headers) not in self.accepts:
            self.refused.append(received)
            return web.json_response({"error": "signature not understood"}, status=401)
        self.received.append(received)
        if request.method == "POST" and is_inbox:
            return web.Response(status=202)
        if request.method == "GET":
            name = path.removeprefix("/users/")
            if path.startswith("/users/") and name in self.keys:
                return json_answer(self.actor_document(name))
            if path in self.documents:
                return json_answer(self.documents[path])
        return web.Response(status=404)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def gets(self, path: str) -> list[Received]:
        return [r for r in self.received if r.method == "GET" and r.path == path]

    def posted(self, kind: str, name: str = "mallory") -> list[dict[str, Any]]:
        """The activities of one type POSTed to an actor's inbox."""
        found = []
        for request in self.received:
            if request.method == "POST" and request.path == f"/users/{name}/inbox":
                document = request.json()
                if document.get("type") == kind:
                    found.append(document)
        return found


def json_answer(document: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(document).encode(), content_type=AS2_JSON)


# ---------------------------------------------------------------- the node under test


@dataclass
class Hospital:
    running: RunningNode
    group_iri: str
    group_inbox: str

    @property
    def base_url(self) -> str:
        return self.running.base_url

    def now(self) -> datetime:
        return self.running.node.clock.now()


async def settle(hospital: Hospital) -> None:
    """Let the node finish what it is doing before it closes: nothing due in its queues.
    Closing then stops each worker after the batch in hand (federation.queue.Worker.stop), so
    none is cancelled inside a transaction, which could hold SQLite's write lock."""
    await eventually(lambda: quiet(hospital), "the node's queues to settle", seconds=10)


async def quiet(hospital: Hospital) -> bool:
    now = hospital.now()
    due_items = select(func.count()).select_from(InboxItem)
    due_items = due_items.where(InboxItem.state == "queued", InboxItem.next_attempt_at <= now)
    due_deliveries = select(func.count()).select_from(Delivery)
    due_deliveries = due_deliveries.where(
        or_(
            and_(Delivery.state == "queued", Delivery.next_attempt_at <= now),
            Delivery.state == "in_flight",
        )
    )
    return await count(hospital, due_items) == 0 and await count(hospital, due_deliveries) == 0


async def count(hospital: Hospital, statement: Any) -> int:
    async with hospital.running.node.transaction() as session:
        return int((await session.execute(statement)).scalar_one())


async def inbox_items(hospital: Hospital) -> int:
    return await count(hospital, select(func.count()).select_from(InboxItem))


async def remote_memberships(hospital: Hospital) -> int:
    return await count(
        hospital,
        select(func.count())
        .select_from(Membership)
        .join(Member, Member.id == Membership.member_id)
        .where(Member.domain != ""),
    )


async def assert_nothing_kept(hospital: Hospital) -> None:
    assert await inbox_items(hospital) == 0, "an inbox item was stored"
    assert await remote_memberships(hospital) == 0, "a remote membership was written"
    assert await count(hospital, select(func.count()).select_from(Post)) == 0, "a post appeared"
    assert await count(hospital, select(func.count()).select_from(Thread)) == 0


# ---------------------------------------------------------------- signing by hand


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def cavage_headers(
    *,
    url: str,
    body: bytes,
    key: rsa.RSAPrivateKey,
    key_id: str,
    now: datetime,
    covered: Iterable[str] = COVERED,
) -> dict[str, str]:
    """draft-cavage-http-signatures-12 over a POST, rsa-sha256, built from the spec."""
    parts = urlsplit(url)
    values = {
        "(request-target)": f"post {parts.path}",
        "host": parts.netloc,
        "date": http_date(now),
        "digest": "SHA-256=" + b64(hashlib.sha256(body).digest()),
    }
    covered = tuple(covered)
    text = "\n".join(f"{name}: {values[name]}" for name in covered)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        "Host": values["host"],
        "Date": values["date"],
        "Digest": values["digest"],
        "Signature": f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(covered)}",'
        f'signature="{b64(signature)}"',
    }


def rfc9421_headers(
    *,
    url: str,
    body: bytes,
    key: rsa.RSAPrivateKey,
    key_id: str,
    now: datetime,
    expires: datetime | None = None,
) -> dict[str, str]:
    """RFC 9421 signature over @method, @target-uri and content-digest (section 2.5 base)."""
    content_digest = "sha-256=:" + b64(hashlib.sha256(body).digest()) + ":"
    params = (
        '("@method" "@target-uri" "content-digest")'
        f";created={int(now.timestamp())}"
        + (f";expires={int(expires.timestamp())}" if expires else "")
        + f';keyid="{key_id}";alg="rsa-v1_5-sha256"'
    )
    base = "\n".join(
        [
            '"@method": POST',
            f'"@target-uri": {url}',
            f'"content-digest": {content_digest}',
            f'"@signature-params": {params}',
        ]
    )
    signature = key.sign(base.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        "Content-Digest": content_digest,
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{b64(signature)}:",
    }


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def follow(remote: FakeRemote, name: str, target: str) -> dict[str, Any]:
    actor = remote.actor(name)
    return {
        "@context": AS2,
        "id": f"{actor}/follows/{uuid.uuid4().hex}",
        "type": "Follow",
        "actor": actor,
        "object": target,
    }


def signed(
    hospital: Hospital,
    remote: FakeRemote,
    body: bytes,
    *,
    key: rsa.RSAPrivateKey | None = None,
    key_id: str | None = None,
    now: datetime | None = None,
    covered: Iterable[str] = COVERED,
) -> dict[str, str]:
    """Headers for a POST to the group's inbox, signed by mallory unless told otherwise."""
    return cavage_headers(
        url=hospital.group_inbox,
        body=body,
        key=key or remote.keys["mallory"],
        key_id=key_id or remote.key_id("mallory"),
        now=now or hospital.now(),
        covered=covered,
    )


@dataclass
class Answer:
    status: int
    reason: str


async def post(url: str, body: bytes | Any, headers: dict[str, str] | None = None) -> Answer:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=body, headers={"Content-Type": AS2_JSON, **(headers or {})}
        ) as response,
    ):
        text = await response.text()
        reason = text
        if response.content_type == "application/json":
            reason = json.loads(text)["error"]
        return Answer(response.status, reason)


async def post_signed(
    hospital: Hospital,
    remote: FakeRemote,
    document: dict[str, Any],
    *,
    url: str | None = None,
    signer: str = "mallory",
) -> Answer:
    url = url or hospital.group_inbox
    body = encode(document)
    headers = cavage_headers(
        url=url, body=body, key=remote.keys[signer], key_id=remote.key_id(signer),
        now=hospital.now(),
    )  # fmt: skip
    return await post(url, body, headers)


class _Recorded(logging.Handler):
    """What the inbox logged, most recent last: the reasons its fixed 401 does not give."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: deque[str] = deque(maxlen=50)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


INBOX_LOG = _Recorded()
logging.getLogger("federation.inbox").addHandler(INBOX_LOG)
logging.getLogger("federation.inbox").setLevel(logging.INFO)


def assert_unverified(answer: Answer, *causes: str) -> None:
    """Refused with the one fixed answer to anything that depends on what fetching the key
    found, the cause being only in the node's log."""
    assert (answer.status, answer.reason) == (401, UNVERIFIED), answer
    logged = INBOX_LOG.messages[-1] if INBOX_LOG.messages else ""
    for cause in causes:
        assert cause.lower() in logged.lower(), logged


# Causes found only by fetching the signer's key: the answer is UNVERIFIED, the cause logged.
AFTER_KEY_FETCH = (
    "does not verify",
    "someone other than the actor",
    "cannot get the key",
    "not the key",
    "the key's owner is on another server",
    "not a usable public key",
)


def assert_refused(answer: Answer, status: int, *causes: str) -> None:
    if status == 401 and any(after in cause for cause in causes for after in AFTER_KEY_FETCH):
        assert_unverified(answer, *causes)
        return
    assert answer.status == status, answer
    for cause in causes:
        assert cause.lower() in answer.reason.lower(), answer


async def join(hospital: Hospital, remote: FakeRemote) -> None:
    """mallory follows the public group and waits for the Accept."""
    answer = await post_signed(hospital, remote, follow(remote, "mallory", hospital.group_iri))
    assert answer.status == 202, answer
    await eventually(lambda: at_once(remote.posted("Accept")), "the Accept at mallory")


async def processed(hospital: Hospital, activity_id: str) -> str | None:
    async with hospital.running.node.transaction() as session:
        state = (
            await session.execute(
                select(InboxItem.state).where(InboxItem.activity_id == activity_id)
            )
        ).scalar()
    return state if state in ("done", "failed") else None


async def deliveries_settled(hospital: Hospital) -> bool:
    queued = (
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.state.in_(("queued", "in_flight")))
    )
    return await count(hospital, queued) == 0


async def at_once(value: Any) -> Any:
    return value


# ------------------------------------------------ fixtures (registered in conftest.py)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    """Keys for the remote actors, plus one that nobody publishes."""
    return {
        name: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for name in ("mallory", "trent", "impostor")
    }


@pytest.fixture
async def remote(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[FakeRemote]:
    server = FakeRemote(free_port(), keys={"mallory": keys["mallory"], "trent": keys["trent"]})
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def third(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[FakeRemote]:
    """A third server, on another origin than mallory's (another port)."""
    server = FakeRemote(free_port(), keys={"mallory": keys["mallory"]})
    await server.start()
    yield server
    await server.close()


async def open_hospital(make_node: NodeFactory) -> Hospital:
    """A node serving over HTTP where nurse owns the public group "t1d"."""
    running = await start_node(make_node, "hospital")
    node = running.node
    async with node.transaction() as session:
        owner = await create_member(
            session, node.passwords, node.settings.limits, username="nurse",
            password="correct horse battery", display_name="Nurse", now=node.clock.now(),
        )  # fmt: skip
        await create_group(
            session, node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1 diabetes", now=node.clock.now(),
        )  # fmt: skip
    group_iri = running.base_url + "/g/t1d"
    return Hospital(running, group_iri, group_iri + "/inbox")


async def close_hospital(hospital: Hospital) -> None:
    await settle(hospital)
    await hospital.running.close()


@pytest.fixture
async def hospital(
    make_node: NodeFactory, remote: FakeRemote, third: FakeRemote
) -> AsyncIterator[Hospital]:
    """The node under test; it closes before the fake servers it may still be talking to."""
    hospital = await open_hospital(make_node)
    yield hospital
    await close_hospital(hospital)


@pytest.fixture
async def scripted(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[FakeRemote]:
    """Another server, for tests that script some of its answers through `routes`."""
    server = FakeRemote(free_port(), keys={"mallory": keys["mallory"]})
    await server.start()
    yield server
    await server.close()
