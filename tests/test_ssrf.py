"""Server-side request forgery: every URL that reaches the node's client from outside, on a node
that is NOT a development node, must be refused before a connection is made.

A node whose domain is a real name ("hospital.example") is served on a loopback port; its
client therefore refuses loopback, private, link-local, reserved and IPv4-mapped addresses
(federation/client.py). Each way an outsider can put a URL in front of that client is driven
over real HTTP, and two things prove that nothing connected:

- raw TCP listeners ("traps") on 127.0.0.1, ::1 and on this host's own non-global addresses
  (found at run time), whose ports the hostile URLs name: each counts every connection;
- a TraceConfig on the node's client that records every request started and every connection
  actually opened, so targets that no trap can listen on (169.254.169.254, 10.0.0.1 ...) are
  covered too.

A control target on a public-looking name that does not resolve shows that each path does try
to fetch what it is given: it ends as "unavailable" (retried), never as "refused".

The places that fetch a URL taken from input (grep of federation/ and web/ for get_json,
post_signed, resolve_handle, fetch_actor, remote_member, remote_group, _object):
1. the signing key of an incoming POST: federation/actors.py ActorDirectory.remote_key ->
   _fetch_key (the keyId's document) -> fetch_actor (a key document's owner);
2. a Create's or Update's object named by id, or embedded from another origin:
   federation/processing.py Processor._object;
3. a followed remote group's Announce: the object by id, the inner Create's object
   (_on_announce -> _object), the author of an announced Page (_announced_object -> _person),
   the actor of an announced Like or Delete (_like / _delete -> _person -> remote_member);
4. the parent of an announced reply: Processor._fetch_ancestor -> _object;
5. deliveries to stored inboxes and shared inboxes: federation/queue.py -> client.post_signed;
6. the remote follow form: web/routes_groups.py follow_remote_group -> resolve_handle
   (WebFinger, federation/discovery.py) -> ActorDirectory.remote_group -> fetch_actor; the
   OStatus subscribe template (/authorize_interaction) only fills the form and fetches nothing;
7. the WebFinger answer's `self` link (discovery.actor_link), fetched by 6.
web/demo.py also calls remote_group, with a URL from the command line, not from the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from federation.discovery import handle_host
from federation.origins import received_origin
from node import posts, remote
from node.groups import create_group, find_group, find_group_by_address, view_group
from node.members import create_member
from node.membership import join as join_group
from node.policy import Viewer
from node.storage.models import ConditionGroup, Delivery, InboxItem, Member, RemoteKey
from tests.browser import Browser
from tests.conftest import NodeFactory
from tests.federation_harness import Recorder, RunningNode, eventually, free_port
from tests.peers import (
    AS2,
    INBOX_LOG,
    PUBLIC,
    Answer,
    Hospital,
    assert_unverified,
    cavage_headers,
    encode,
    post,
    public_pem,
    settle,
)
from web.app import create_app

PRODUCTION_DOMAIN = "hospital.example"
# Peers the node met earlier, when their names still resolved: the names do not resolve here,
# so anything sent to them fails as "unavailable", never as "refused".
SOCIAL = "https://social.example"
CIRCLE = "https://circle.example"
CONTROL = "https://unreachable.example"
MALLORY = f"{SOCIAL}/users/mallory"
CIRCLE_MEMBER = f"{CIRCLE}/users/carol"  # posts in the circle live on her (its) server
CIRCLE_GROUP = f"{CIRCLE}/groups/circle"
REFUSAL_WORDS = ("private address", "localhost", "plain http")


# ---------------------------------------------------------------- the traps


@dataclass
class Trap:
    """A raw TCP listener: it proves whether anything connected to it."""

    host: str
    port: int
    connections: list[Any] = field(default_factory=list)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _local_non_global_addresses() -> list[str]:
    """This host's own addresses that are neither loopback nor global (such as a private
    interface address): a listener there shows that private targets are not reached either."""
    found: list[str] = []
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        address = ipaddress.IPv6Address(int(line.split()[0], 16))
        # Link-local needs a zone to bind; loopback has its own trap.
        if not (address.is_loopback or address.is_link_local or address.is_global):
            found.append(str(address))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.254", 9))  # a UDP connect sends nothing
            address_v4 = probe.getsockname()[0]
        except OSError:
            address_v4 = ""
    if address_v4:
        ip = ipaddress.ip_address(address_v4)
        if not (ip.is_loopback or ip.is_global or ip.is_unspecified):
            found.append(address_v4)
    return found


def _loopback_host_names() -> list[str]:
    """Names other than localhost that resolve to loopback only (a hostname in /etc/hosts)."""
    names = []
    for name in (socket.gethostname(), "localhost.localdomain", "ip6-localhost"):
        try:
            infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            continue
        addresses = {info[4][0] for info in infos}
        if addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses):
            names.append(name)
    return names[:1]


@dataclass
class Traps:
    loopback_v4: Trap
    loopback_v6: Trap | None
    private: list[Trap]

    @property
    def all(self) -> list[Trap]:
        return [self.loopback_v4, *([self.loopback_v6] if self.loopback_v6 else []), *self.private]

    def connections(self) -> list[tuple[str, Any]]:
        return [(trap.netloc, c) for trap in self.all for c in trap.connections]


@pytest.fixture
async def traps() -> AsyncIterator[Traps]:
    servers: list[asyncio.Server] = []

    async def open_trap(host: str) -> Trap | None:
        trap = Trap(host, 0)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            trap.connections.append(writer.get_extra_info("peername"))
            writer.close()

        try:
            server = await asyncio.start_server(on_connect, host, 0)
        except OSError:
            return None  # this address cannot be listened on here
        servers.append(server)
        trap.port = server.sockets[0].getsockname()[1]
        return trap

    loopback_v4 = await open_trap("127.0.0.1")
    assert loopback_v4 is not None
    private = [t for a in _local_non_global_addresses() if (t := await open_trap(a))]
    yield Traps(loopback_v4, await open_trap("::1"), private)
    for server in servers:
        server.close()
        await server.wait_closed()


@dataclass(frozen=True)
class Target:
    label: str
    base: str  # scheme://host[:port], no trailing slash

    @property
    def host(self) -> str:
        return urlsplit(self.base).hostname or ""


STATIC_TARGETS = [
    Target("RFC 1918 10/8", "https://10.0.0.1"),
    Target("RFC 1918 192.168/16", "https://192.168.1.1"),
    Target("RFC 1918 172.16/12", "https://172.16.0.1:8443"),
    Target("cloud metadata (link-local)", "https://169.254.169.254"),
    Target("IPv6 link-local", "https://[fe80::1]"),
    Target("IPv6 unique local", "https://[fd12:3456::1]"),
    Target("IPv4-mapped metadata", "https://[::ffff:169.254.169.254]"),
    Target("IPv4-mapped private", "https://[::ffff:10.0.0.1]"),
    Target("IPv4-mapped private, hex", "https://[::ffff:a00:1]"),
    Target("carrier-grade NAT", "https://100.64.0.1"),
]


def hostile_targets(traps: Traps) -> list[Target]:
    v4 = traps.loopback_v4.port
    found = [
        Target("loopback", f"https://127.0.0.1:{v4}"),
        Target("loopback, plain http", f"http://127.0.0.1:{v4}"),
        Target("loopback 127/8", f"https://127.0.0.2:{v4}"),
        Target("unspecified 0.0.0.0 (reaches this host)", f"https://0.0.0.0:{v4}"),
        Target("IPv4-mapped loopback", f"https://[::ffff:127.0.0.1]:{v4}"),
        Target("localhost", f"https://localhost:{v4}"),
        *[Target(f"{name} (resolves to loopback)", f"https://{name}:{v4}") for name in
          _loopback_host_names()],
    ]  # fmt: skip
    if traps.loopback_v6 is not None:
        v6 = traps.loopback_v6.port
        found += [
            Target("IPv6 loopback", f"https://[::1]:{v6}"),
            Target("IPv6 unspecified", f"https://[::]:{v6}"),
        ]
    for trap in traps.private:
        found.append(Target(f"this host's non-global {trap.host}", f"https://{trap.netloc}"))
        if ":" not in trap.host:
            mapped = f"[::ffff:{trap.host}]:{trap.port}"
            found.append(Target(f"IPv4-mapped {trap.host}", f"https://{mapped}"))
    return found + STATIC_TARGETS


# ---------------------------------------------------------------- what the node's client did


@dataclass
class ClientLog:
    """Every request the node's client started, and every connection it actually opened."""

    started: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def on_request_start(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
        ) -> None:
            context.url = str(params.url)
            self.started.append(context.url)

        async def on_connection_create_end(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
        ) -> None:
            self.opened.append(getattr(context, "url", "?"))

        config.on_request_start.append(on_request_start)
        config.on_connection_create_end.append(on_connection_create_end)
        return config


# ---------------------------------------------------------------- the production node


@dataclass
class ProductionNode:
    hospital: Hospital  # its IRIs: https://hospital.example/...
    http_base: str  # where it is really served
    log: ClientLog
    group_id: int

    @property
    def https_base(self) -> str:
        return self.hospital.base_url

    @property
    def node(self) -> Any:
        return self.hospital.running.node

    def now(self) -> datetime:
        return self.hospital.now()

    async def browser(self) -> Browser:
        """A browser that keeps the node's Secure cookies although it speaks plain http."""
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.http_base])
        client = TestClient(self.hospital.running.server, cookie_jar=jar)
        await client.start_server()
        self.hospital.running.clients.append(client)
        return Browser(client)


async def remember_remote_actor(
    node: Any, iri: str, key: rsa.RSAPrivateKey, *, group: bool = False, inbox: str = "",
    shared_inbox: str | None = None,
) -> None:  # fmt: skip
    """What a successful fetch of a public actor left behind earlier: its row and its key."""
    now = node.clock.now()
    facts = remote.RemoteActorFacts(
        iri=iri, username=iri.rstrip("/").rsplit("/", 1)[-1], domain=urlsplit(iri).netloc,
        display_name="", summary="", inbox=inbox or iri + "/inbox", shared_inbox=shared_inbox,
        profile_url=None,
    )  # fmt: skip
    async with node.transaction() as session:
        if group:
            await remote.upsert_remote_group(session, facts, now)
        else:
            await remote.upsert_remote_member(session, facts, now)
        session.add(
            RemoteKey(key_id=iri + "#main-key", actor_iri=iri, public_pem=public_pem(key),
                      fetched_at=now)
        )  # fmt: skip


async def accept_as_member(node: Any, group_id: int, iri: str) -> None:
    """A remote person's Follow of the public group, accepted as processing would."""
    async with node.transaction() as session:
        group = await session.get(ConditionGroup, group_id)
        member = await remote.member_by_iri(session, iri)
        assert group is not None and member is not None
        follow = {"id": f"{iri}/follows/{uuid.uuid4().hex}", "type": "Follow", "actor": iri,
                  "object": f"https://{PRODUCTION_DOMAIN}/g/t1d"}  # fmt: skip
        await remote.accept_remote_follow(
            session, group, member, received_origin(session, follow), node.clock.now()
        )


@pytest.fixture
async def production(
    make_node: NodeFactory, keys: dict[str, rsa.RSAPrivateKey]
) -> AsyncIterator[ProductionNode]:
    """A node on a real domain, served on loopback: its client filters addresses.

    It knows mallory (a member of its public group t1d) and the remote group "circle" (which
    its member nurse follows), as if both had been fetched from the public internet earlier."""
    port = free_port()
    node = await make_node("production", domain=PRODUCTION_DOMAIN)
    assert not node.settings.is_development
    recorder, log = Recorder(), ClientLog()

    app = create_app(node, trace_configs=[recorder.trace_config(), log.trace_config()])
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    running = RunningNode("production", node, server, recorder)
    async with node.transaction() as session:
        nurse = await create_member(
            session, node.passwords, node.settings.limits, username="nurse",
            password="correct horse battery", display_name="Nurse", now=node.clock.now(),
        )  # fmt: skip
        group = await create_group(
            session, node.settings.limits, owner_id=nurse.id, slug="t1d",
            name="Type 1 diabetes", now=node.clock.now(),
        )  # fmt: skip
        group_id, nurse_id = group.id, nurse.id
    await remember_remote_actor(node, MALLORY, keys["mallory"])
    await accept_as_member(node, group_id, MALLORY)
    await remember_remote_actor(node, CIRCLE_GROUP, keys["trent"], group=True)
    await remember_remote_actor(node, CIRCLE_MEMBER, keys["impostor"])
    async with node.transaction() as session:
        circle = await remote.group_by_iri(session, CIRCLE_GROUP)
        assert circle is not None
        view = await view_group(session, f"{circle.slug}@{circle.domain}", Viewer(nurse_id))
        await join_group(session, view, node.clock.now())  # pending until circle answers
    base = f"https://{PRODUCTION_DOMAIN}"
    hospital = Hospital(running, base + "/g/t1d", base + "/g/t1d/inbox")
    yield ProductionNode(hospital, f"http://127.0.0.1:{port}", log, group_id)
    await settle(hospital)
    await running.close()


async def deliver(
    production: ProductionNode, document: dict[str, Any], key: rsa.RSAPrivateKey,
    key_id: str, path: str = "/inbox",
) -> Answer:  # fmt: skip
    """POST a signed activity as a peer would: signed for https://hospital.example."""
    body = encode(document)
    headers = cavage_headers(
        url=production.https_base + path, body=body, key=key, key_id=key_id,
        now=production.now(),
    )  # fmt: skip
    return await post(production.http_base + path, body, headers)


@dataclass(frozen=True)
class Outcome:
    state: str
    error: str


async def outcome(production: ProductionNode, activity_id: str) -> Outcome | None:
    """The item's state once it was tried at least once (done, failed, or queued to retry)."""
    async with production.node.transaction(reading=True) as session:
        item = (
            await session.execute(select(InboxItem).where(InboxItem.activity_id == activity_id))
        ).scalar_one_or_none()
    if item is None or (item.state == "queued" and item.attempts == 0):
        return None
    return Outcome(item.state, item.error)


async def outcomes(production: ProductionNode, ids: dict[str, str]) -> dict[str, Outcome]:
    """Wait for every activity (label -> id) to be tried; answers label -> outcome."""
    found: dict[str, Outcome] = {}

    async def all_tried() -> bool:
        for label, activity_id in ids.items():
            if label not in found and (result := await outcome(production, activity_id)):
                found[label] = result
        return len(found) == len(ids)

    await eventually(all_tried, "every activity to be processed")
    return found


def assert_refused_and_nothing_connected(
    production: ProductionNode, traps: Traps, results: dict[str, Outcome], targets: list[Target]
) -> None:
    for target in targets:
        result = results[target.label]
        assert result.state == "failed", (target, result)
        assert any(word in result.error for word in REFUSAL_WORDS), (target, result)
    assert_nothing_connected(production, traps, targets)


def assert_nothing_connected(
    production: ProductionNode, traps: Traps, targets: list[Target]
) -> None:
    assert traps.connections() == [], "a trap saw a connection"
    assert production.log.opened == [], "the node opened a connection"
    # Literal addresses are refused before a request even starts; names (which must be
    # resolved first) are refused by the resolver.
    hosts_started = {urlsplit(url).hostname for url in production.log.started}
    for target in targets:
        try:
            ipaddress.ip_address(target.host)
        except ValueError:
            continue
        assert target.host not in hosts_started, target


def assert_control_was_attempted(results: dict[str, Outcome]) -> None:
    control = results["control"]
    assert control.state == "queued", control  # retried later: the path does fetch
    assert "cannot reach" in control.error, control


# ---------------------------------------------------------------- calibration


async def test_the_traps_see_a_connection_when_one_is_made(traps: Traps) -> None:
    # Given the traps the hostile URLs point at
    # When something does connect to each of them
    for trap in traps.all:
        _reader, writer = await asyncio.open_connection(trap.host, trap.port)
        writer.close()
    # Then each counts it: "no connection" below means none was made
    await eventually(
        lambda: _at_once(all(trap.connections for trap in traps.all)), "every trap to count"
    )


async def _at_once(value: Any) -> Any:
    return value


# ---------------------------------------------------------------- 1. the signing key


@pytest.mark.parametrize("inbox", ["/inbox", "/g/t1d/inbox"])
@pytest.mark.parametrize("key_shape", ["actor#main-key", "key document"])
async def test_a_key_on_a_private_address_is_never_fetched(
    production: ProductionNode,
    traps: Traps,
    keys: dict[str, rsa.RSAPrivateKey],
    key_shape: str,
    inbox: str,
) -> None:
    targets = hostile_targets(traps)
    for target in targets:
        # Given a Follow by an actor on a hostile address, signed with a key it names there
        actor = f"{target.base}/users/eve"
        key_id = actor + "#main-key" if key_shape == "actor#main-key" else f"{target.base}/key/1"
        document = {"@context": AS2, "id": f"{actor}/follows/1", "type": "Follow",
                    "actor": actor, "object": production.hospital.group_iri}  # fmt: skip
        # When it is POSTed to the node
        answer = await deliver(production, document, keys["mallory"], key_id, inbox)
        # Then the key cannot be had: 401, because the address is refused (which only the
        # node's log says: the answer is the same whatever the fault)
        assert_unverified(answer, "cannot get the key")
        assert any(word in INBOX_LOG.messages[-1] for word in REFUSAL_WORDS), (target, answer)
    # And a key on a public name that does not resolve is attempted (the control)
    control = f"{CONTROL}/users/eve"
    document = {"@context": AS2, "id": f"{control}/follows/1", "type": "Follow",
                "actor": control, "object": production.hospital.group_iri}  # fmt: skip
    answer = await deliver(production, document, keys["mallory"], control + "#main-key")
    assert_unverified(answer, "cannot reach")
    # And nothing connected anywhere, and nothing was kept
    assert_nothing_connected(production, traps, targets)
    async with production.node.transaction(reading=True) as session:
        assert (await session.execute(select(InboxItem.id))).first() is None


# ---------------------------------------------------------------- 2. a Create's or Update's object


def _note(iri: str, author: str = MALLORY) -> dict[str, Any]:
    return {"id": iri, "type": "Note", "attributedTo": author, "content": "<p>hi</p>",
            "to": [PUBLIC], "cc": [f"https://{PRODUCTION_DOMAIN}/g/t1d"],
            "audience": f"https://{PRODUCTION_DOMAIN}/g/t1d"}  # fmt: skip


def _by_member(kind: str, obj: Any) -> dict[str, Any]:
    return {"@context": AS2, "id": f"{MALLORY}/activities/{uuid.uuid4().hex}", "type": kind,
            "actor": MALLORY, "object": obj, "to": [PUBLIC],
            "cc": [f"https://{PRODUCTION_DOMAIN}/g/t1d"],
            "audience": f"https://{PRODUCTION_DOMAIN}/g/t1d"}  # fmt: skip


OBJECT_SHAPES: dict[str, Callable[[str], dict[str, Any]]] = {
    "Create, object by id": lambda iri: _by_member("Create", iri),
    "Create, embedded from another origin": lambda iri: _by_member("Create", _note(iri)),
    "Update, object by id": lambda iri: _by_member("Update", iri),
    "Update, embedded from another origin": lambda iri: _by_member("Update", _note(iri)),
}


@pytest.mark.parametrize("shape", sorted(OBJECT_SHAPES))
async def test_an_object_on_a_private_address_is_never_fetched(
    production: ProductionNode, traps: Traps, keys: dict[str, rsa.RSAPrivateKey], shape: str
) -> None:
    targets = hostile_targets(traps)
    ids: dict[str, str] = {}
    # Given mallory, a member of the group whose key the node has, names objects on hostile
    # addresses (and one on a public name that does not resolve, as a control)
    for label, base in [(t.label, t.base) for t in targets] + [("control", CONTROL)]:
        document = OBJECT_SHAPES[shape](f"{base}/notes/{uuid.uuid4().hex}")
        # When she POSTs each
        answer = await deliver(production, document, keys["mallory"], MALLORY + "#main-key")
        assert answer.status == 202, (label, answer)
        ids[label] = document["id"]
    # Then each hostile one fails for good as refused, and nothing connected
    results = await outcomes(production, ids)
    assert_refused_and_nothing_connected(production, traps, results, targets)
    assert_control_was_attempted(results)


# ---------------------------------------------------------------- 3, 4. a followed group's Announce


def _announce(obj: Any) -> dict[str, Any]:
    return {"@context": AS2, "id": f"{CIRCLE}/activities/{uuid.uuid4().hex}", "type": "Announce",
            "actor": CIRCLE_GROUP, "object": obj, "to": [PUBLIC],
            "cc": [CIRCLE_GROUP + "/followers"]}  # fmt: skip


def _inner(kind: str, actor: str, obj: Any) -> dict[str, Any]:
    activity_id = f"{CIRCLE}/activities/{uuid.uuid4().hex}"
    return {"id": activity_id, "type": kind, "actor": actor, "object": obj, "to": [PUBLIC],
            "cc": [CIRCLE_GROUP], "audience": CIRCLE_GROUP}  # fmt: skip


def _circle_page(author: str, in_reply_to: str | None = None) -> dict[str, Any]:
    page = {"id": f"{CIRCLE}/post/{uuid.uuid4().hex}", "type": "Note" if in_reply_to else "Page",
            "attributedTo": author, "name": "Pacing", "content": "<p>pacing</p>",
            "to": [PUBLIC], "cc": [CIRCLE_GROUP], "audience": CIRCLE_GROUP}  # fmt: skip
    if in_reply_to:
        page["inReplyTo"] = in_reply_to
    return page


EXISTING_PAGE = f"{CIRCLE}/post/existing"

ANNOUNCE_SHAPES: dict[str, Callable[[str], dict[str, Any]]] = {
    "object by id": lambda base: _announce(f"{base}/post/1"),
    "Create whose object is named by id": lambda base: _announce(
        _inner("Create", MALLORY, f"{base}/post/1")
    ),
    "Page whose author is there": lambda base: _announce(
        {**_circle_page(f"{base}/users/eve"), "id": f"{base}/post/2"}
    ),
    "reply whose parent is there": lambda base: _announce(
        _inner(
            "Create",
            CIRCLE_MEMBER,
            _circle_page(CIRCLE_MEMBER, in_reply_to=f"{base}/post/parent"),
        )
    ),
    "Like by an actor there": lambda base: _announce(
        _inner("Like", f"{base}/users/eve", EXISTING_PAGE)
    ),
    "Delete by an actor there": lambda base: _announce(
        _inner("Delete", f"{base}/users/eve", EXISTING_PAGE)
    ),
}


@pytest.mark.parametrize("shape", sorted(ANNOUNCE_SHAPES))
async def test_a_followed_group_cannot_make_the_node_fetch_a_private_address(
    production: ProductionNode, traps: Traps, keys: dict[str, rsa.RSAPrivateKey], shape: str
) -> None:
    circle_key = keys["trent"], CIRCLE_GROUP + "#main-key"
    # Given the remote group nurse follows already announced a thread by mallory
    existing = _announce({**_circle_page(CIRCLE_MEMBER), "id": EXISTING_PAGE})
    answer = await deliver(production, existing, *circle_key)
    assert answer.status == 202, answer
    first = await outcomes(production, {"existing": existing["id"]})
    assert first["existing"].state == "done", first
    # When it announces activities that name hostile addresses (and a control)
    targets = hostile_targets(traps)
    ids: dict[str, str] = {}
    for label, base in [(t.label, t.base) for t in targets] + [("control", CONTROL)]:
        document = ANNOUNCE_SHAPES[shape](base)
        answer = await deliver(production, document, *circle_key)
        assert answer.status == 202, (label, answer)
        ids[label] = document["id"]
    # Then each hostile one fails for good as refused, and nothing connected
    results = await outcomes(production, ids)
    assert_refused_and_nothing_connected(production, traps, results, targets)
    assert_control_was_attempted(results)


# ---------------------------------------------------------------- 5. deliveries to stored inboxes


async def test_a_stored_inbox_on_a_private_address_gets_no_delivery(
    production: ProductionNode, traps: Traps, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    # Given remote people whose stored inbox and shared inbox now point at hostile addresses
    # (a name that resolved publicly when their actor was fetched may resolve privately
    # later; literal addresses stand for rows written by an older, laxer version)
    targets = hostile_targets(traps)
    people = {target.label: f"{target.base}/users/eve" for target in targets}
    for target in targets:
        await remember_remote_actor(
            production.node, people[target.label], keys["impostor"],
            shared_inbox=f"{target.base}/inbox",
        )  # fmt: skip
    # When each becomes a member of the public group (an Accept goes to their own inbox)
    for iri in people.values():
        await accept_as_member(production.node, production.group_id, iri)
    # And nurse starts a thread there (the group announces it to the shared inboxes)
    async with production.node.transaction() as session:
        nurse = (await session.execute(select(Member).where(Member.username == "nurse"))).scalar()
        group = await find_group(session, "t1d")
        assert nurse is not None and group is not None
        view = await view_group(session, "t1d", Viewer(nurse.id))
        await posts.start_thread(
            session, production.node.settings.limits, view, title="Hello",
            draft=posts.Draft("Hello everyone"), now=production.now(),
        )  # fmt: skip

    # Then every delivery to a hostile inbox fails for good as refused
    hostile = {f"{t.base}/users/eve/inbox" for t in targets} | {f"{t.base}/inbox" for t in targets}

    async def all_hostile_failed() -> list[Delivery] | None:
        async with production.node.transaction(reading=True) as session:
            rows = list(
                (
                    await session.execute(select(Delivery).where(Delivery.inbox_url.in_(hostile)))
                ).scalars()
            )
        done = [row for row in rows if row.state not in ("queued", "in_flight")]
        return rows if len(rows) == len(done) >= len(hostile) else None

    rows = await eventually(all_hostile_failed, "the deliveries to hostile inboxes to end")
    assert {row.inbox_url for row in rows} == hostile
    for row in rows:
        assert row.state == "failed", (row.inbox_url, row.state, row.last_error)
        assert any(word in row.last_error for word in REFUSAL_WORDS), (
            row.inbox_url,
            row.last_error,
        )
        assert row.attempts == 1, (row.inbox_url, row.attempts)
    # And nothing connected, while deliveries to mallory (a public name) were attempted
    assert_nothing_connected(production, traps, targets)
    async with production.node.transaction(reading=True) as session:
        to_mallory = list(
            (
                await session.execute(
                    select(Delivery).where(Delivery.inbox_url == MALLORY + "/inbox")
                )
            ).scalars()
        )
    assert to_mallory and all("cannot reach" in row.last_error for row in to_mallory)


# ---------------------------------------------------------------- 6, 7. the remote follow form


async def test_the_remote_follow_form_never_reaches_a_private_address(
    production: ProductionNode, traps: Traps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="web.routes_groups")

    def last_logged() -> str:
        return caplog.records[-1].getMessage() if caplog.records else ""

    # Given nurse, signed in on the production node
    browser = await production.browser()
    page = await browser.login("nurse")
    assert page.status == 200, page.text[:300]
    targets = hostile_targets(traps)
    for target in targets:
        parts = urlsplit(target.base)
        handles = [f"{target.base}/groups/circle"]  # the group's address as a link
        if parts.scheme == "https":
            handles.append(f"circle@{parts.netloc}")  # a handle: WebFinger on that host
        for handle in handles:
            # When the OStatus subscribe template sends her to the form with that address
            page = await browser.get(f"/authorize_interaction?uri={handle}")
            assert page.status == 200, (handle, page.text[:300])
            # And she submits it
            page = await browser.post("/groups/follow", {"handle": handle})
            # Then the form says it cannot be reached, without saying why (which a member
            # could use to map what the node reaches): the refusal is in the node's log
            assert page.status == 400, (handle, page.status, page.text[:300])
            assert "That group could not be found" in page.text, (handle, page.text[:300])
            # The form shows what she typed again, and names its server ("we could not
            # reach ..."): neither says why
            shown = page.text.replace(handle, "").replace(handle_host(handle), "")
            assert not any(word in shown for word in REFUSAL_WORDS), (handle, page.text)
            assert any(word in last_logged() for word in REFUSAL_WORDS), (handle, last_logged())
    # And a group on a public name that does not resolve is attempted (the control), and
    # answered the same
    page = await browser.post("/groups/follow", {"handle": f"circle@{urlsplit(CONTROL).netloc}"})
    assert page.status == 400 and "That group could not be found" in page.text, page.text[:500]
    assert "cannot reach" not in page.text and "cannot reach" in last_logged(), last_logged()
    # And nothing connected, and no remote group was stored for any of them
    assert_nothing_connected(production, traps, targets)
    async with production.node.transaction(reading=True) as session:
        for target in targets:
            assert (
                await find_group_by_address(session, f"circle@{urlsplit(target.base).netloc}")
                is None
            )
