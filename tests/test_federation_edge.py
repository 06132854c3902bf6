"""Edge cases of the federation layer, without mocks.

- The outbound client (federation/client.py) against real aiohttp servers on 127.0.0.1: the
  address filter, redirects, the size cap, timeouts, error kinds and signed GETs.
- JSON-LD normalisation (federation/jsonld.py): the fast path, redefined terms, per-instance
  and unknown contexts with the network switched off, hostile shapes.
- The typed vocabulary (federation/vocab.py): what activities, actors and posts must carry.

"No packet was sent" is proven by a guard on the standard library's `socket.socket.connect`:
it records every destination and lets only loopback through when a test serves something.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from federation import httpsig
from federation.client import ClientLimits, FederationClient, FetchError, Signer, check_url
from federation.jsonld import AS2, PUBLIC, PUBLIC_ALIASES, InvalidDocument, normalise
from federation.vocab import MAX_ID_LENGTH, VocabError, parse_activity, parse_actor, parse_post
from tests.federation_harness import eventually

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
CAP = 1024
PEM = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----\n"
LITEPUB = "https://pleroma.example/schemas/litepub-0.1.jsonld"


# ------------------------------------------------------------------ the connect guard


class NetworkForbidden(RuntimeError):
    """Raised by the guard; deliberately not an OSError, so the client cannot relabel it."""


@dataclass
class ConnectGuard:
    let_loopback_through: bool = False
    attempts: list[Any] = field(default_factory=list)

    @property
    def outside_loopback(self) -> list[Any]:
        return [address for address in self.attempts if not _is_loopback_address(address)]


def _is_loopback_address(address: Any) -> bool:
    if not isinstance(address, tuple):
        return False
    try:
        return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _install_guard(monkeypatch: pytest.MonkeyPatch, guard: ConnectGuard) -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(sock: socket.socket, address: Any) -> None:
        guard.attempts.append(address)
        if guard.let_loopback_through and _is_loopback_address(address):
            return real_connect(sock, address)
        raise NetworkForbidden(f"a connection to {address!r} was attempted")

    def connect_ex(sock: socket.socket, address: Any) -> int:
        guard.attempts.append(address)
        if guard.let_loopback_through and _is_loopback_address(address):
            return real_connect_ex(sock, address)
        raise NetworkForbidden(f"a connection to {address!r} was attempted")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> ConnectGuard:
    """Every outbound connection is refused and recorded."""
    guard = ConnectGuard(let_loopback_through=False)
    _install_guard(monkeypatch, guard)
    return guard


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> ConnectGuard:
    """Connections to loopback go through; any other is refused and recorded."""
    guard = ConnectGuard(let_loopback_through=True)
    _install_guard(monkeypatch, guard)
    return guard


# ------------------------------------------------------------------ a peer served on loopback


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _padded_json(size: int) -> bytes:
    """A valid JSON document of exactly `size` bytes."""
    body = b'{"pad":"' + b"x" * (size - 10) + b'"}'
    assert len(body) == size
    return body


REDIRECT_TARGETS = {
    "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "private": "http://10.0.0.1/internal",
    "mapped": "http://[::ffff:169.254.169.254]/latest/",
    "rfc1918": "https://192.168.1.1/admin",
    "file": "file:///etc/passwd",
}


@dataclass
class Peer:
    server: TestServer
    hits: list[str] = field(default_factory=list)
    signed: list[dict[str, Any]] = field(default_factory=list)
    chunked: list[bool] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


def _peer_app(peer_box: list[Peer], public_key: rsa.RSAPublicKey) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        peer_box[0].hits.append(request.raw_path)
        return await handler(request)

    @routes.get("/doc")
    async def doc(request: web.Request) -> web.Response:
        return web.json_response(
            {"@context": AS2, "id": "https://peer.example/doc", "type": "Note"},
            content_type="application/activity+json",
        )

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n > 0:
            raise web.HTTPFound(f"/chain/{n - 1}")
        return web.json_response({"arrived": True})

    @routes.get("/loop/{side}")
    async def loop(request: web.Request) -> web.Response:
        other = "b" if request.match_info["side"] == "a" else "a"
        raise web.HTTPMovedPermanently(f"/loop/{other}")

    @routes.get("/to/{target}")
    async def to(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(REDIRECT_TARGETS[request.match_info["target"]])

    @routes.get("/sized/{mode}/{size}")
    async def sized(request: web.Request) -> web.StreamResponse:
        body = _padded_json(int(request.match_info["size"]))
        if request.match_info["mode"] == "length":
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        peer_box[0].chunked.append(response.chunked)
        for start in range(0, len(body), 200):
            await response.write(body[start : start + 200])
        await response.write_eof()
        return response

    @routes.get("/gzip")
    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(b'{"a":"' + b"0" * (256 * 1024) + b'"}')
        assert len(body) < CAP  # the declared length passes the cap, the content does not
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    @routes.get("/hang")
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)  # answers later than any client timeout under test
        return web.json_response({})

    @routes.get("/trickle")
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(100):  # valid JSON whitespace, one byte at a time, forever-ish
            await response.write(b" ")
            await asyncio.sleep(0.05)  # the slowness is the point
        return response

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"error": "x"}, status=int(request.match_info["code"]))

    @routes.get("/html")
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>not json</body></html>", content_type="text/html")

    @routes.get("/badutf8")
    async def badutf8(request: web.Request) -> web.Response:
        return web.Response(body=b'"\xff\xfe\xfd"', content_type="application/json")

    @routes.get("/empty")
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="application/json")

    @routes.get("/signed")
    async def signed(request: web.Request) -> web.Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        outcome = "ok"
        try:
            parsed = httpsig.parse_cavage_signature(headers["signature"])
            httpsig.verify_cavage(
                parsed,
                method=request.method,
                path_and_query=request.raw_path,
                headers=headers,
                public_key=public_key,
            )
        except (httpsig.SignatureError, KeyError) as error:
            parsed = None
            outcome = f"{type(error).__name__}: {error}"
        peer_box[0].signed.append(
            {"headers": headers, "path": request.raw_path, "parsed": parsed, "outcome": outcome}
        )
        return web.json_response({"signed": True})

    @routes.get("/hop-signed")
    async def hop_signed(request: web.Request) -> web.Response:
        raise web.HTTPFound("/signed?via=hop")

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    return app


@pytest.fixture
async def peer(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[Peer]:
    box: list[Peer] = []
    server = TestServer(_peer_app(box, rsa_key.public_key()), host="127.0.0.1")
    box.append(Peer(server))
    await server.start_server()
    yield box[0]
    await server.close()


ClientFactory = Callable[..., FederationClient]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    made: list[FederationClient] = []

    def factory(allow_loopback: bool = True, **limits: Any) -> FederationClient:
        client = FederationClient(allow_loopback=allow_loopback, limits=ClientLimits(**limits))
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.close()


async def _fetch_error(fetch: Awaitable[Any]) -> FetchError:
    with pytest.raises(FetchError) as caught:
        await fetch
    return caught.value


@dataclass
class RawListener:
    """A TCP listener that only counts connections: it proves whether anything arrived."""

    host: str
    port: int
    connections: list[Any] = field(default_factory=list)

    async def connections_before_ours(self) -> list[Any]:
        """The connections it accepted before one of our own, made now. It accepts in order, so
        any connection the code under test made earlier is counted by the time ours is: no
        fixed wait for something that should not happen."""
        _, writer = await asyncio.open_connection(self.host, self.port)
        ours = writer.get_extra_info("sockname")

        async def counted() -> bool:
            return ours in self.connections

        try:
            await eventually(counted, "our own connection")
        finally:
            writer.close()
        return self.connections[: self.connections.index(ours)]


@pytest.fixture
async def raw_listeners() -> AsyncIterator[dict[str, RawListener]]:
    listeners: dict[str, RawListener] = {}
    servers: list[asyncio.Server] = []

    def counter(listener: RawListener) -> Callable[..., Awaitable[None]]:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            listener.connections.append(writer.get_extra_info("peername"))
            writer.close()

        return on_connect

    for family, host in (("v4", "127.0.0.1"), ("v6", "::1")):
        listener = RawListener(host, port=0)
        try:
            server = await asyncio.start_server(counter(listener), host, 0)
        except OSError:
            continue  # no IPv6 loopback on this machine
        listener.port = server.sockets[0].getsockname()[1]
        listeners[family] = listener
        servers.append(server)
    yield listeners
    for server in servers:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------ the address filter


NON_LOOPBACK_REFUSED = [
    "https://10.0.0.1/actor",
    "https://10.255.255.254:8443/inbox",
    "https://192.168.1.1/",
    "https://172.16.0.1/",
    "https://172.31.255.255/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/",  # carrier-grade NAT
    "https://0.0.0.0/",  # reaches the local host on Linux
    "https://[::]/",
    "https://224.0.0.1/",  # multicast
    "https://239.255.255.250/",
    "https://255.255.255.255/",
    "https://[ff02::1]/",
    "https://[fe80::1]/",  # link-local
    "https://[fe80::1%25eth0]/",
    "https://[fd00::1]/",  # unique local
    "https://[fc00::1]/",
    "https://[::ffff:10.0.0.1]/",  # IPv4-mapped IPv6
    "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:192.168.0.1]/",
    "https://[::ffff:a9fe:a9fe]/",  # the same, in hex
    "http://example.com/actor",  # plain http in production
    "ftp://example.com/actor",
    "file:///etc/passwd",
    "https:///no-host",
]

LOOPBACK_FORMS = [
    "https://127.0.0.1:{v4}/doc",
    "https://127.0.0.2:{v4}/doc",
    "http://127.0.0.1:{v4}/doc",
    "https://[::1]:{v6}/doc",
    "https://[0:0:0:0:0:0:0:1]:{v6}/doc",
    "https://localhost:{v4}/doc",
    "https://LocalHost:{v4}/doc",
    "https://[::ffff:127.0.0.1]:{v4}/doc",
    "https://[::ffff:7f00:1]:{v4}/doc",
    "https://[0:0:0:0:0:ffff:7f00:1]:{v4}/doc",
]


@pytest.mark.parametrize("url", NON_LOOPBACK_REFUSED)
async def test_production_client_refuses_non_public_addresses_without_connecting(
    url: str, make_client: ClientFactory, no_network: ConnectGuard
) -> None:
    with pytest.raises(FetchError) as checked:
        check_url(url, allow_loopback=False)
    assert checked.value.kind == "refused"
    # Loopback being allowed never opens the private ranges, nor odd schemes.
    if not url.startswith("http://"):
        with pytest.raises(FetchError):
            check_url(url, allow_loopback=True)
    client = make_client(allow_loopback=False)
    error = await _fetch_error(client.get_json(url, None, NOW))
    assert error.kind == "refused"
    with pytest.raises(FetchError) as posted:
        await client.post_signed(url, b"{}", Signer("https://a.example/u#k", _small_key()), NOW)
    assert posted.value.kind == "refused"
    assert no_network.attempts == []


_SMALL_KEY: list[rsa.RSAPrivateKey] = []


def _small_key() -> rsa.RSAPrivateKey:
    if not _SMALL_KEY:
        _SMALL_KEY.append(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    return _SMALL_KEY[0]


@pytest.mark.parametrize(
    "url",
    ["https://example.com/users/a", "https://8.8.8.8/x", "https://[2606:4700::1111]/x"],
)
def test_check_url_lets_public_https_through(url: str) -> None:
    check_url(url, allow_loopback=False)  # the filter is not simply "refuse everything"


@pytest.mark.parametrize("template", LOOPBACK_FORMS)
async def test_production_client_refuses_loopback_and_nothing_arrives(
    template: str,
    make_client: ClientFactory,
    raw_listeners: dict[str, RawListener],
    loopback_only: ConnectGuard,
) -> None:
    family = "v6" if "{v6}" in template else "v4"
    if family not in raw_listeners:
        pytest.skip("no IPv6 loopback here")
    ports = {name: listener.port for name, listener in raw_listeners.items()}
    url = template.format(v4=ports.get("v4", 0), v6=ports.get("v6", 0))
    client = make_client(allow_loopback=False)
    error = await _fetch_error(client.get_json(url, None, NOW))
    assert error.kind == "refused"
    assert loopback_only.attempts == []  # read first: our own connections below pass the guard
    for listener in raw_listeners.values():
        assert await listener.connections_before_ours() == []


async def test_the_listener_and_guard_do_see_an_allowed_connection(
    make_client: ClientFactory,
    raw_listeners: dict[str, RawListener],
    loopback_only: ConnectGuard,
) -> None:
    """Calibration: the same listener counts a connection a development client makes."""
    port = raw_listeners["v4"].port
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(f"http://127.0.0.1:{port}/doc", None, NOW))
    assert error.kind == "unavailable"  # the listener hangs up
    assert ("127.0.0.1", port) in loopback_only.attempts  # read before our own connection
    assert len(await raw_listeners["v4"].connections_before_ours()) >= 1


OBFUSCATED_LOOPBACK = [
    "https://127.1/",
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0x7f.0.0.1/",
    "https://127.0.0.1./",
    "https://localhost./",
]


@pytest.mark.parametrize("url", OBFUSCATED_LOOPBACK)
async def test_obfuscated_loopback_forms_never_connect(
    url: str, make_client: ClientFactory, no_network: ConnectGuard
) -> None:
    client = make_client(allow_loopback=False)
    await _fetch_error(client.get_json(url, None, NOW))
    assert no_network.attempts == []


def _names_resolving_to_loopback() -> list[str]:
    names = []
    for name in (socket.gethostname(), "0x7f.0.0.1", "localhost.localdomain", "ip6-localhost"):
        try:
            infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
        except OSError:
            continue
        addresses = {info[4][0] for info in infos}
        if addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses):
            names.append(name)
    return names


async def test_a_name_resolving_to_loopback_never_connects(
    make_client: ClientFactory, no_network: ConnectGuard
) -> None:
    names = _names_resolving_to_loopback()
    if not names:
        pytest.skip("no name other than localhost resolves to loopback here")
    client = make_client(allow_loopback=False)
    for name in names:
        await _fetch_error(client.get_json(f"https://{name}/actor", None, NOW))
    assert no_network.attempts == []


async def test_a_name_resolving_to_loopback_is_refused_not_unavailable(
    make_client: ClientFactory, no_network: ConnectGuard
) -> None:
    names = _names_resolving_to_loopback()
    if not names:
        pytest.skip("no name other than localhost resolves to loopback here")
    client = make_client(allow_loopback=False)
    for name in names:
        error = await _fetch_error(client.get_json(f"https://{name}/actor", None, NOW))
        assert error.kind == "refused", (name, error.kind, str(error))


# ------------------------------------------------------------------ fetching from a peer


async def test_get_json_reads_a_served_document(
    peer: Peer, make_client: ClientFactory, loopback_only: ConnectGuard
) -> None:
    client = make_client(allow_loopback=True)
    document = await client.get_json(peer.url("/doc"), None, NOW)
    assert document == {"@context": AS2, "id": "https://peer.example/doc", "type": "Note"}
    assert peer.hits == ["/doc"]
    assert loopback_only.attempts and loopback_only.outside_loopback == []


async def test_three_redirects_are_followed(peer: Peer, make_client: ClientFactory) -> None:
    client = make_client(allow_loopback=True)
    assert await client.get_json(peer.url("/chain/3"), None, NOW) == {"arrived": True}
    assert peer.hits == ["/chain/3", "/chain/2", "/chain/1", "/chain/0"]


async def test_a_fourth_redirect_is_refused_and_not_followed(
    peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(peer.url("/chain/4"), None, NOW))
    assert error.kind == "refused"
    assert peer.hits == ["/chain/4", "/chain/3", "/chain/2", "/chain/1"]


async def test_a_redirect_loop_is_refused(peer: Peer, make_client: ClientFactory) -> None:
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(peer.url("/loop/a"), None, NOW))
    assert error.kind == "refused"
    assert len(peer.hits) == 4


@pytest.mark.parametrize("target", sorted(REDIRECT_TARGETS))
async def test_a_redirect_to_a_forbidden_address_is_refused_without_connecting(
    target: str, peer: Peer, make_client: ClientFactory, loopback_only: ConnectGuard
) -> None:
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(peer.url(f"/to/{target}"), None, NOW))
    assert error.kind == "refused"
    assert peer.hits == [f"/to/{target}"]
    assert loopback_only.attempts, "the first hop was made"
    assert loopback_only.outside_loopback == []


@pytest.mark.parametrize("mode", ["length", "chunked"])
async def test_a_body_of_exactly_the_cap_is_read(
    mode: str, peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True, max_body_bytes=CAP)
    document = await client.get_json(peer.url(f"/sized/{mode}/{CAP}"), None, NOW)
    assert len(document["pad"]) == CAP - 10
    assert peer.chunked == ([True] if mode == "chunked" else [])


@pytest.mark.parametrize("mode", ["length", "chunked"])
@pytest.mark.parametrize("size", [CAP + 1, 64 * CAP])
async def test_a_body_over_the_cap_is_too_large(
    mode: str, size: int, peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True, max_body_bytes=CAP)
    error = await _fetch_error(client.get_json(peer.url(f"/sized/{mode}/{size}"), None, NOW))
    assert error.kind == "too_large"
    assert peer.chunked == ([True] if mode == "chunked" else [])


async def test_a_compressed_body_is_capped_after_decompression(
    peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True, max_body_bytes=CAP)
    error = await _fetch_error(client.get_json(peer.url("/gzip"), None, NOW))
    assert error.kind == "too_large"


@pytest.mark.parametrize("path", ["/hang", "/trickle"])
async def test_a_server_that_hangs_is_unavailable_after_the_total_timeout(
    path: str, peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True, total_seconds=0.5)
    started = time.monotonic()
    error = await _fetch_error(client.get_json(peer.url(path), None, NOW))
    elapsed = time.monotonic() - started
    assert error.kind == "unavailable"
    assert 0.4 <= elapsed < 5  # the timeout fired; a hang would last as long as the server


@pytest.mark.parametrize(
    ("code", "kind"),
    [(404, "not_found"), (410, "gone"), (500, "unavailable"), (503, "unavailable")],
)
async def test_error_statuses_map_to_kinds(
    code: int, kind: str, peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(peer.url(f"/status/{code}"), None, NOW))
    assert (error.kind, error.status) == (kind, code)


@pytest.mark.parametrize("path", ["/html", "/badutf8", "/empty"])
async def test_a_body_that_is_not_json_is_invalid(
    path: str, peer: Peer, make_client: ClientFactory
) -> None:
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(peer.url(path), None, NOW))
    assert error.kind == "invalid"


async def test_a_closed_port_is_unavailable(make_client: ClientFactory) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound, then released: nothing listens there
    client = make_client(allow_loopback=True)
    error = await _fetch_error(client.get_json(f"http://127.0.0.1:{port}/x", None, NOW))
    assert error.kind == "unavailable"


# ------------------------------------------------------------------ signed GET


def _assert_signed_for(record: dict[str, Any], path: str, key_id: str) -> None:
    assert record["outcome"] == "ok"
    assert record["path"] == path
    parsed = record["parsed"]
    assert parsed.key_id == key_id
    assert parsed.algorithm == "rsa-sha256"
    assert parsed.headers == ("(request-target)", "host", "date")
    headers = record["headers"]
    assert headers["date"] == format_datetime(NOW, usegmt=True)
    assert headers["host"] == record["host"]
    assert "application/activity+json" in headers["accept"]


async def test_a_signed_get_verifies_on_the_server(
    peer: Peer, make_client: ClientFactory, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_id = "https://node.example/actor#main-key"
    client = make_client(allow_loopback=True)
    answer = await client.get_json(peer.url("/signed?page=2&x=%20y"), Signer(key_id, rsa_key), NOW)
    assert answer == {"signed": True}
    [record] = peer.signed
    record["host"] = f"127.0.0.1:{peer.server.port}"
    _assert_signed_for(record, "/signed?page=2&x=%20y", key_id)
    # The verification is meaningful: another path, or another key, does not verify.
    with pytest.raises(httpsig.SignatureMismatch):
        httpsig.verify_cavage(
            record["parsed"],
            method="GET",
            path_and_query="/signed?page=3&x=%20y",
            headers=record["headers"],
            public_key=rsa_key.public_key(),
        )
    with pytest.raises(httpsig.SignatureMismatch):
        httpsig.verify_cavage(
            record["parsed"],
            method="GET",
            path_and_query=record["path"],
            headers=record["headers"],
            public_key=_small_key().public_key(),
        )


async def test_a_signed_get_is_signed_again_for_each_redirect_hop(
    peer: Peer, make_client: ClientFactory, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_id = "https://node.example/actor#main-key"
    client = make_client(allow_loopback=True)
    assert await client.get_json(peer.url("/hop-signed"), Signer(key_id, rsa_key), NOW) == {
        "signed": True
    }
    assert peer.hits == ["/hop-signed", "/signed?via=hop"]
    [record] = peer.signed
    record["host"] = f"127.0.0.1:{peer.server.port}"
    _assert_signed_for(record, "/signed?via=hop", key_id)


async def test_an_unsigned_get_carries_no_signature(peer: Peer, make_client: ClientFactory) -> None:
    client = make_client(allow_loopback=True)
    await client.get_json(peer.url("/signed"), None, NOW)
    [record] = peer.signed
    assert "signature" not in record["headers"]
    assert record["outcome"].startswith("KeyError")


# ------------------------------------------------------------------ JSON-LD


MASTODON_NOTE_CONTEXT = [
    AS2,
    {
        "ostatus": "http://ostatus.org#",
        "atomUri": "ostatus:atomUri",
        "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
        "conversation": "ostatus:conversation",
        "sensitive": "as:sensitive",
        "toot": "http://joinmastodon.org/ns#",
        "votersCount": "toot:votersCount",
        "blurhash": "toot:blurhash",
        "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
        "Hashtag": "as:Hashtag",
        "Emoji": "toot:Emoji",
    },
]

# What Mastodon's ActorSerializer sends (app/lib/activitypub/adapter.rb, CONTEXT_EXTENSION_MAP).
MASTODON_ACTOR_CONTEXT = [
    AS2,
    "https://w3id.org/security/v1",
    {
        "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
        "toot": "http://joinmastodon.org/ns#",
        "featured": {"@id": "toot:featured", "@type": "@id"},
        "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
        "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
        "movedTo": {"@id": "as:movedTo", "@type": "@id"},
        "schema": "http://schema.org#",
        "PropertyValue": "schema:PropertyValue",
        "value": "schema:value",
        "discoverable": "toot:discoverable",
        "suspended": "toot:suspended",
        "memorial": "toot:memorial",
        "indexable": "toot:indexable",
        "Hashtag": "as:Hashtag",
        "Emoji": "toot:Emoji",
        "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
    },
]

# The same shape without the entries that once tripped the fast path (tested in full below).
MASTODON_ACTOR_CONTEXT_TRIMMED = [
    AS2,
    "https://w3id.org/security/v1",
    {
        key: value
        for key, value in MASTODON_ACTOR_CONTEXT[2].items()  # type: ignore[union-attr]
        if key not in ("schema", "PropertyValue", "value", "alsoKnownAs")
    },
]

LEMMY_CONTEXT = ["https://join-lemmy.org/context.json", AS2]


def _create(context: Any, note: dict[str, Any], domain: str = "pleroma.example") -> dict[str, Any]:
    return {
        "@context": context,
        "id": f"https://{domain}/activities/1",
        "type": "Create",
        "actor": f"https://{domain}/users/alice",
        "to": [PUBLIC],
        "cc": [f"https://{domain}/users/alice/followers"],
        "object": note,
    }


def _note(domain: str = "pleroma.example") -> dict[str, Any]:
    return {
        "id": f"https://{domain}/objects/1",
        "type": "Note",
        "attributedTo": f"https://{domain}/users/alice",
        "content": "<p>Side effects after the second dose?</p>",
        "summary": "medication",
        "sensitive": True,
        "inReplyTo": "https://health.example/post/7",
        "to": [PUBLIC],
    }


def test_a_plain_as2_document_is_returned_as_it_is() -> None:
    document = _create(AS2, _note())
    assert normalise(document) is document


def test_a_mastodon_status_takes_the_fast_path() -> None:
    document = _create(MASTODON_NOTE_CONTEXT, _note("mastodon.example"), "mastodon.example")
    assert normalise(document) is document


def test_mastodon_actor_extensions_take_the_fast_path() -> None:
    document = {"@context": MASTODON_ACTOR_CONTEXT_TRIMMED, **_actor()}
    assert normalise(document) is document


def test_a_real_mastodon_actor_context_takes_the_fast_path() -> None:
    document = {"@context": MASTODON_ACTOR_CONTEXT, **_actor()}
    assert normalise(document) is document


def test_a_core_term_restated_with_its_own_definition_keeps_the_fast_path() -> None:
    document = _create([AS2, {"alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"}}], _note())
    assert normalise(document) is document


def test_the_fediverse_spelling_of_schema_org_keeps_the_fast_path() -> None:
    schema = {"schema": "http://schema.org#", "PropertyValue": "schema:PropertyValue"}
    document = {"@context": [AS2, "https://w3id.org/security/v1", schema], **_actor()}
    assert normalise(document) is document


def test_a_real_mastodon_actor_still_parses_after_normalising() -> None:
    document = {
        "@context": MASTODON_ACTOR_CONTEXT,
        **_actor(),
        "attachment": [{"type": "PropertyValue", "name": "Pronouns", "value": "she/her"}],
    }
    actor = parse_actor(normalise(document))
    assert (actor.id, actor.inbox, actor.key_id) == (
        document["id"],
        document["inbox"],
        document["publicKey"]["id"],
    )
    assert actor.preferred_username == "alice"


def test_a_lemmy_context_takes_the_fast_path() -> None:
    document = _create(LEMMY_CONTEXT, _lemmy_page(), "lemmy.example")
    assert normalise(document) is document


@pytest.mark.parametrize(
    ("term", "meaning"),
    [
        ("content", "http://example.org/other"),
        ("content", {"@id": "http://example.org/other"}),
        ("sensitive", "http://example.org/notSensitive"),
        ("inReplyTo", {"@id": "http://example.org/somethingElse", "@type": "@id"}),
    ],
)
def test_a_redefined_term_is_expanded_and_compacted(term: str, meaning: Any) -> None:
    note = _note()
    document = _create([AS2, {term: meaning}], note)
    result = normalise(document)
    assert result is not document
    obj = result["object"]
    assert term not in obj  # it no longer means what our code reads under that name
    moved = obj.get("http://example.org/" + _iri_tail(meaning))
    assert moved in (note[term], {"id": note[term]})
    assert (result["id"], result["type"], result["actor"]) == (
        document["id"],
        "Create",
        document["actor"],
    )
    assert result["@context"] != document["@context"]


def _iri_tail(meaning: Any) -> str:
    iri = meaning if isinstance(meaning, str) else meaning["@id"]
    return iri.rsplit("/", 1)[-1]


@pytest.mark.parametrize("context_entry", [{"@vocab": "http://example.org/"}, {"as": "http://x#"}])
def test_context_keywords_and_redefined_prefixes_leave_the_fast_path(context_entry: Any) -> None:
    document = _create([AS2, context_entry], _note())
    assert normalise(document) is not document


def test_an_embedded_context_redefining_a_core_term_is_not_taken_as_plain() -> None:
    note = {"@context": {"content": "http://example.org/other"}, **_note()}
    result = normalise(_create(AS2, note))
    assert result["object"].get("content") != note["content"]


def _assert_as2_fields(result: dict[str, Any], document: dict[str, Any]) -> None:
    activity = parse_activity(result)
    assert (activity.id, activity.type, activity.actor) == (
        document["id"],
        "Create",
        document["actor"],
    )
    assert PUBLIC_ALIASES & {*activity.to, *activity.cc}
    post = parse_post(activity.embedded_object)
    original = document["object"]
    assert post.id == original["id"]
    assert post.attributed_to == original["attributedTo"]
    assert post.in_reply_to == original["inReplyTo"]
    assert post.content_html == original["content"]
    assert post.summary == original["summary"]


def test_a_litepub_context_is_read_without_the_network(no_network: ConnectGuard) -> None:
    document = _create([AS2, LITEPUB], _note())
    result = normalise(document)
    _assert_as2_fields(result, document)
    assert result["object"]["sensitive"] is True  # litepub defines it
    assert no_network.attempts == []


def test_a_real_pleroma_header_keeps_content_and_summary(no_network: ConnectGuard) -> None:
    document = _create([AS2, LITEPUB, {"@language": "und"}], _note())
    result = normalise(document)
    assert no_network.attempts == []
    _assert_as2_fields(result, document)


@pytest.mark.parametrize(
    "context",
    [
        [AS2, "https://mbin.example/contexts"],
        ["https://mbin.example/contexts", AS2],
        [AS2, "https://unknown.example/ns/context.jsonld", "https://w3id.org/security/v1"],
        "http://www.w3.org/ns/activitystreams",  # the http spelling, from the bundle too
    ],
)
def test_an_unknown_context_is_read_without_the_network(
    context: Any, no_network: ConnectGuard
) -> None:
    document = _create(context, _note("mbin.example"), "mbin.example")
    result = normalise(document)
    assert result is not document
    _assert_as2_fields(result, document)
    assert no_network.attempts == []


@pytest.mark.parametrize("depth", [200, 2000])
@pytest.mark.parametrize("context", [AS2, [AS2, LITEPUB]], ids=["plain", "processed"])
def test_deep_nesting_is_handled_or_invalid(depth: int, context: Any) -> None:
    inner: dict[str, Any] = {"id": "https://a.example/leaf", "type": "Note", "content": "x"}
    for level in range(depth):
        inner = {
            "id": f"https://a.example/{level}",
            "type": "Announce",
            "actor": "https://a.example/u",
            "object": inner,
        }
    document = {"@context": context, **inner}
    try:
        result = normalise(document)
    except InvalidDocument:
        return
    assert result["id"] == document["id"]


@pytest.mark.parametrize("shape", ["long content", "many recipients", "many keys"])
def test_huge_documents_are_handled_or_invalid(shape: str) -> None:
    base: dict[str, Any] = {"@context": [AS2, LITEPUB], **_note()}
    if shape == "long content":
        base["content"] = "x" * 2_000_000
    elif shape == "many recipients":
        base["to"] = [f"https://a.example/u/{i}" for i in range(3000)]
    else:
        base.update({f"k{i}": i for i in range(5000)})
    try:
        result = normalise(base)
    except InvalidDocument:
        return
    assert result["id"] == base["id"]
    assert result["content"] == base["content"]


@pytest.mark.parametrize(
    "document",
    [
        [],
        "a string",
        {"@context": 5},
        {"@context": [AS2, 5]},
        {"@context": [AS2, None], "id": "https://a.example/1"},
        {"@context": [AS2, {"content": {"@id": 5}}]},
        {"@context": [AS2, {"@import": "https://evil.example/ctx"}]},
        {"@context": [AS2, {"@vocab": 5}]},
        {"@context": [AS2, {"@type": "@json"}]},
        {"@context": [AS2, LITEPUB], "id": 5, "type": ["Note", 5]},
        {"@context": [AS2, {"x": "http://x/"}], "@id": {"a": 1}},
        {"@context": [AS2, {"x": "http://x/"}], "x": {"@list": {"@list": [1]}}},
        {"@context": [AS2, {"x": {"@id": "http://x/", "@context": "https://e.example/c"}}]},
        {"@context": "https://evil.example/ctx", "id": "relative"},
    ],
)
def test_malformed_json_ld_is_invalid_or_processed_offline(
    document: Any, no_network: ConnectGuard
) -> None:
    try:
        result = normalise(document)
    except InvalidDocument:
        pass
    else:
        assert isinstance(result, dict)
    assert no_network.attempts == []


# ------------------------------------------------------------------ vocab: activities


def _activity(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "@context": AS2,
        "id": "https://a.example/activities/1",
        "type": "Follow",
        "actor": "https://a.example/users/alice",
        "object": "https://health.example/g/diabetes",
    }
    for key, value in changes.items():
        if value is _MISSING:
            document.pop(key, None)
        else:
            document[key] = value
    return document


_MISSING = object()


def test_a_complete_activity_parses() -> None:
    activity = parse_activity(_activity())
    assert (activity.id, activity.type, activity.actor, activity.object_id) == (
        "https://a.example/activities/1",
        "Follow",
        "https://a.example/users/alice",
        "https://health.example/g/diabetes",
    )
    longest = "https://a.example/" + "a" * (MAX_ID_LENGTH - len("https://a.example/"))
    assert parse_activity(_activity(id=longest)).id == longest


@pytest.mark.parametrize(
    "changes",
    [
        {"id": _MISSING},
        {"type": _MISSING},
        {"actor": _MISSING},
        {"type": []},
        {"type": 5},
        {"id": "urn:uuid:0a6e3f7c-2f5d-4f5b-9a59-0e5f6f2f2f2f"},
        {"id": "ftp://a.example/activities/1"},
        {"id": "javascript:alert(1)"},
        {"id": "https:///no-host"},
        {"id": "/activities/1"},
        {"id": ""},
        {"id": 5},
        {"id": ["https://a.example/activities/1"]},
        {"id": "https://a.example/" + "a" * MAX_ID_LENGTH},
        {"actor": "acct:alice@a.example"},
        {"actor": "https://a.example/" + "a" * MAX_ID_LENGTH},
        {"actor": {"type": "Person"}},
        {"target": "data:text/plain,hi"},
    ],
    ids=lambda changes: ",".join(f"{k}={str(v)[:24]}" for k, v in changes.items()),
)
def test_an_incomplete_activity_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(VocabError):
        parse_activity(_activity(**changes))


def test_parse_activity_refuses_what_is_not_an_object() -> None:
    for value in (None, [], "https://a.example/1", 5):
        with pytest.raises(VocabError):
            parse_activity(value)


# ------------------------------------------------------------------ vocab: actors


def _actor(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "https://mastodon.example/users/alice",
        "type": "Person",
        "preferredUsername": "alice",
        "name": "Alice",
        "inbox": "https://mastodon.example/users/alice/inbox",
        "outbox": "https://mastodon.example/users/alice/outbox",
        "followers": "https://mastodon.example/users/alice/followers",
        "endpoints": {"sharedInbox": "https://mastodon.example/inbox"},
        "publicKey": {
            "id": "https://mastodon.example/users/alice#main-key",
            "owner": "https://mastodon.example/users/alice",
            "publicKeyPem": PEM,
        },
    }
    document.update(changes)
    return document


def test_a_complete_actor_parses() -> None:
    actor = parse_actor(_actor())
    assert actor.key_id == "https://mastodon.example/users/alice#main-key"
    assert actor.shared_inbox == "https://mastodon.example/inbox"
    assert actor.public_key_pem == PEM
    # Host case is not a different origin.
    assert parse_actor(_actor(inbox="https://MASTODON.example/users/alice/inbox")).inbox


@pytest.mark.parametrize(
    "changes",
    [
        {
            "publicKey": {
                "id": "https://mastodon.example/users/alice#main-key",
                "owner": "https://mastodon.example/users/mallory",
                "publicKeyPem": PEM,
            }
        },
        {
            "publicKey": {
                "id": "https://evil.example/users/alice#main-key",
                "owner": "https://mastodon.example/users/alice",
                "publicKeyPem": PEM,
            }
        },
        {
            "publicKey": {
                "id": "https://mastodon.example:8443/users/alice#main-key",
                "publicKeyPem": PEM,
            }
        },
        {
            "publicKey": {
                "id": "https://mastodon.example@evil.example/key",
                "publicKeyPem": PEM,
            }
        },
        {"inbox": "https://evil.example/users/alice/inbox"},
        {"inbox": "http://mastodon.example/users/alice/inbox"},
        {"inbox": "https://sub.mastodon.example/inbox"},
        {"publicKey": None},
        {"publicKey": {"id": "https://mastodon.example/users/alice#k", "publicKeyPem": "nope"}},
        {"type": "Note"},
        {"inbox": None},
    ],
    ids=[
        "key-owned-by-another-actor",
        "key-on-another-host",
        "key-on-another-port",
        "key-behind-userinfo",
        "inbox-on-another-host",
        "inbox-on-another-scheme",
        "inbox-on-a-subdomain",
        "no-key",
        "not-a-pem",
        "not-an-actor-type",
        "no-inbox",
    ],
)
def test_a_suspicious_actor_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(VocabError):
        parse_actor(_actor(**changes))


# ------------------------------------------------------------------ vocab: posts


def _lemmy_page() -> dict[str, Any]:
    return {
        "id": "https://lemmy.example/post/42",
        "type": "Page",
        "attributedTo": "https://lemmy.example/u/bob",
        "to": ["https://lemmy.example/c/diabetes", PUBLIC],
        "cc": [],
        "name": "Switching to a pump: what to expect",
        "content": "<p>After <strong>ten years</strong> of pens…</p>\n",
        "mediaType": "text/html",
        "source": {"content": "After **ten years** of pens…", "mediaType": "text/markdown"},
        "sensitive": False,
        "published": "2025-02-28T10:00:00Z",
        "audience": "https://lemmy.example/c/diabetes",
        "language": {"identifier": "en", "name": "English"},
    }


def test_parse_post_reads_a_lemmy_page() -> None:
    post = parse_post(_lemmy_page())
    assert post.type == "Page"
    assert post.attributed_to == "https://lemmy.example/u/bob"
    assert post.name == "Switching to a pump: what to expect"
    assert post.content_html == "<p>After <strong>ten years</strong> of pens…</p>\n"
    assert post.source_markdown == "After **ten years** of pens…"
    assert post.summary == ""
    assert post.sensitive is False
    assert post.in_reply_to is None
    assert post.audience == ["https://lemmy.example/c/diabetes"]
    assert post.to == ["https://lemmy.example/c/diabetes", PUBLIC]


def test_parse_post_reads_a_lemmy_comment() -> None:
    comment = {
        "id": "https://lemmy.example/comment/7",
        "type": "Note",
        "attributedTo": "https://lemmy.example/u/carol",
        "to": [PUBLIC],
        "cc": ["https://lemmy.example/c/diabetes", "https://lemmy.example/u/bob"],
        "content": "<p>Same here</p>",
        "mediaType": "text/html",
        "source": {"content": "Same here", "mediaType": "text/markdown"},
        "inReplyTo": "https://lemmy.example/post/42",
        "published": "2025-02-28T11:00:00Z",
        "audience": "https://lemmy.example/c/diabetes",
        "distinguished": False,
    }
    post = parse_post(comment)
    assert (post.type, post.name, post.source_markdown) == ("Note", "", "Same here")
    assert post.in_reply_to == "https://lemmy.example/post/42"
    assert post.audience == ["https://lemmy.example/c/diabetes"]
    assert post.cc == comment["cc"]


def test_parse_post_reads_a_mastodon_note() -> None:
    note = {
        "id": "https://mastodon.example/users/alice/statuses/1",
        "type": "Note",
        "summary": "CW: injection sites",
        "inReplyTo": {"id": "https://lemmy.example/comment/7", "type": "Note"},
        "published": "2025-02-28T12:00:00Z",
        "url": "https://mastodon.example/@alice/1",
        "attributedTo": "https://mastodon.example/users/alice",
        "to": [PUBLIC],
        "cc": ["https://mastodon.example/users/alice/followers"],
        "sensitive": True,
        "atomUri": "https://mastodon.example/users/alice/statuses/1",
        "conversation": "tag:mastodon.example,2025-02-28:objectId=1:objectType=Conversation",
        "content": "<p>Rotate them!</p>",
        "contentMap": {"en": "<p>Rotate them!</p>"},
        "attachment": [],
        "tag": [],
    }
    post = parse_post(note)
    assert post.summary == "CW: injection sites"
    assert post.sensitive is True
    assert post.content_html == "<p>Rotate them!</p>"
    assert post.source_markdown is None
    assert post.in_reply_to == "https://lemmy.example/comment/7"
    assert post.audience == []
    assert post.context is None  # a tag: URI is no http(s) context


@pytest.mark.parametrize(
    "in_reply_to",
    [
        "https://lemmy.example/comment/7",
        {"type": "Link", "href": "https://lemmy.example/comment/7"},
        ["https://lemmy.example/comment/7"],
        [{"type": "Link", "href": "https://lemmy.example/comment/7"}],
    ],
)
def test_parse_post_reads_in_reply_to_as_an_iri_a_link_or_a_list_of_one(in_reply_to: Any) -> None:
    # fediverse-pasture-inputs' in_reply_to shapes: a Link or a one-entry list is still a reply
    note = {"id": "https://mastodon.example/notes/2", "type": "Note", "content": "<p>Yes</p>",
            "attributedTo": "https://mastodon.example/users/alice", "to": [PUBLIC],
            "inReplyTo": in_reply_to}  # fmt: skip
    assert parse_post(note).in_reply_to == "https://lemmy.example/comment/7"


def test_parse_post_refuses_two_parents() -> None:
    note = {"id": "https://mastodon.example/notes/3", "type": "Note", "content": "<p>Yes</p>",
            "attributedTo": "https://mastodon.example/users/alice", "to": [PUBLIC],
            "inReplyTo": ["https://a.example/1", "https://b.example/2"]}  # fmt: skip
    with pytest.raises(VocabError):
        parse_post(note)


@pytest.mark.parametrize(
    ("changes", "expected_markdown", "expected_sensitive"),
    [
        ({"source": {"content": "x", "mediaType": "text/plain"}}, None, False),
        ({"source": "not an object"}, None, False),
        ({"sensitive": "true"}, "After **ten years** of pens…", False),
        ({"sensitive": 1}, "After **ten years** of pens…", False),
    ],
)
def test_parse_post_is_strict_about_source_and_sensitive(
    changes: dict[str, Any], expected_markdown: str | None, expected_sensitive: bool
) -> None:
    post = parse_post(_lemmy_page() | changes)
    assert post.source_markdown == expected_markdown
    assert post.sensitive is expected_sensitive


@pytest.mark.parametrize(
    "changes",
    [
        {"type": "Person"},
        {"id": "urn:x"},
        {"attributedTo": None},
        {"inReplyTo": "javascript:alert(1)"},
        {"type": None},
    ],
)
def test_parse_post_refuses_unusable_objects(changes: dict[str, Any]) -> None:
    with pytest.raises(VocabError):
        parse_post(_lemmy_page() | changes)


def test_the_normalised_public_address_is_still_public() -> None:
    """After compaction the public collection may read `as:Public`; it must still count."""
    result = normalise(_create([AS2, LITEPUB], _note()))
    activity = parse_activity(result)
    assert PUBLIC_ALIASES & {*activity.to, *activity.cc}
    assert "as:Public" in PUBLIC_ALIASES
