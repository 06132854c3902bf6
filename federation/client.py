"""The one outbound HTTP client: timeouts, size cap, redirect limit, address filter, signatures.

Every URL that reaches here came from the network, so every connection, redirects included, is
checked after DNS resolution: private, loopback, link-local, multicast and reserved addresses are
refused, except loopback on a development node (a loopback domain).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from federation.httpsig import sign_cavage, sign_message_signature
from federation.jsontext import load_json, off_the_loop
from federation.knock import (
    CAVAGE,
    REFUSALS,
    SignatureFamily,
    SignaturePreference,
    origin_of,
    other,
)

log = logging.getLogger(__name__)

AS2_ACCEPT = 'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
AS2_CONTENT_TYPE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
MAX_REDIRECTS = 3
# Above the delivery queue's own limits (8 per host, 64 overall), so that fetches of actors
# and objects never wait behind a host's deliveries for a connection.
CONNECTIONS_PER_HOST = 16
CONNECTIONS = 128
# What an RFC 9421 delivery signs, besides created, keyid and alg: Mastodon requires "@method",
# "@target-uri" and, on a POST, "content-digest"; the headers we send beside them are covered.
RFC9421_COMPONENTS = ("@method", "@target-uri", "content-type", "date", "content-digest")


class FetchError(Exception):
    """A remote fetch failed; `kind` says how: refused, gone, not_found, unavailable,
    too_large, invalid."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class PolicyRefused(FetchError):
    """The federation policy refuses the server: nothing was sent to it."""

    def __init__(self, host: str) -> None:
        super().__init__("refused", f"the federation policy refuses {host[:200]}")
        self.host = host


@dataclass(frozen=True)
class ClientLimits:
    connect_seconds: float = 5.0
    total_seconds: float = 15.0
    max_body_bytes: int = 1024 * 1024
    user_agent: str = "healthnode/0.1"


def address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


class RefusedAddress(OSError):
    """A name resolved to an address this node never connects to."""


def _transport_error(error: aiohttp.ClientError, url: str) -> FetchError:
    """Typed: a refused address or an unusable URL is final; anything else may pass."""
    cause = getattr(error, "os_error", None)
    if isinstance(cause, RefusedAddress):
        return FetchError("refused", str(cause))
    if isinstance(error, aiohttp.InvalidURL):
        return FetchError("refused", f"not a usable URL: {url[:200]}")
    return FetchError("unavailable", f"cannot reach {url[:200]}: {error}")


class FilteringResolver(AbstractResolver):
    """Resolves names, then refuses when any address the name has is not allowed."""

    def __init__(self, allow_loopback: bool) -> None:
        # The system resolver (getaddrinfo), whatever else is installed: aiodns, when present,
        # would make aiohttp resolve names differently from the rest of the system.
        self._inner = ThreadedResolver()
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not address_allowed(result["host"], self._allow_loopback):
                raise RefusedAddress(f"refusing to connect to {host}: it is a private address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def check_url(url: str, allow_loopback: bool) -> None:
    """Refuse a URL before any connection: wrong scheme, or an IP literal not allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise FetchError("refused", f"not an http(s) URL: {url[:200]}")
    if "@" in parts.netloc:
        # aiohttp would send the user and password as an Authorization header, and the
        # host such a URL names is read differently by different parsers.
        raise FetchError("refused", "a URL with user information is never fetched")
    if parts.scheme == "http" and not allow_loopback:
        raise FetchError("refused", "plain http is only used between development nodes")
    host = parts.hostname
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host == "localhost" and not allow_loopback:
            raise FetchError("refused", "refusing to fetch from localhost") from None
        return
    if not address_allowed(host, allow_loopback):
        raise FetchError("refused", f"refusing to fetch from the private address {host}")


@dataclass(frozen=True)
class Signer:
    """Who signs: the key id published in the actor document, and the private key."""

    key_id: str
    private_key: rsa.RSAPrivateKey


class FederationClient:
    """Wraps the application's single aiohttp session."""

    def __init__(
        self,
        *,
        allow_loopback: bool,
        limits: ClientLimits | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        signatures: SignaturePreference | None = None,
        permits: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.allow_loopback = allow_loopback
        # The federation policy (node/federation_policy.py): a refused server is never asked.
        self.permits = permits
        self.limits = limits or ClientLimits()
        # Which signature family each origin accepts, learnt by post_signed (per process).
        self.signatures = signatures or SignaturePreference()
        connector = aiohttp.TCPConnector(
            resolver=FilteringResolver(allow_loopback),
            limit=CONNECTIONS,
            limit_per_host=CONNECTIONS_PER_HOST,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self.limits.total_seconds, connect=self.limits.connect_seconds
            ),
            headers={"User-Agent": self.limits.user_agent},
            trace_configs=list(trace_configs),
            auto_decompress=True,
        )

    async def close(self) -> None:
        await self.session.close()

    async def _check_policy(self, url: str) -> None:
        if self.permits is not None and not await self.permits(url):
            raise PolicyRefused(urlsplit(url).hostname or "")

    async def get_json(
        self,
        url: str,
        signer: Signer | None,
        now: datetime,
        accept: str = AS2_ACCEPT,
        *,
        other_origins: bool = False,
    ) -> Any:
        """GET a JSON document, following at most three redirects, each checked again.

        A redirect to another origin is refused unless `other_origins`: the document is then
        known to come from the origin of `url`, which is what lets a caller that checks its
        id against `url` trust it for that id. Only look-ups whose answer names what is
        fetched next (WebFinger) follow redirects anywhere."""
        origin = origin_of(url)
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, self.allow_loopback)
            await self._check_policy(url)
            headers = {"Accept": accept}
            if signer is not None:
                headers |= sign_cavage(
                    method="GET",
                    url=url,
                    body=None,
                    key_id=signer.key_id,
                    private_key=signer.private_key,
                    now=now,
                )
            try:
                async with self.session.get(url, headers=headers, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        check_url(url, self.allow_loopback)
                        await self._check_policy(url)
                        if not other_origins and origin_of(url) != origin:
                            raise FetchError(
                                "refused",
                                f"{origin[:200]} redirected to another origin: {url[:200]}",
                            )
                        continue
                    body = await self._read_capped(resp)
                    self._raise_for_status(resp.status, url)
            except aiohttp.ClientError as error:
                raise _transport_error(error, url) from None
            except TimeoutError:
                raise FetchError("unavailable", f"timed out fetching {url[:200]}") from None
            except OSError as error:
                raise FetchError("refused", str(error)) from None
            try:
                return await off_the_loop(load_json, body)
            except ValueError as error:
                reason = f"{url[:200]} did not answer with usable JSON: {error}"
                raise FetchError("invalid", reason) from None
        raise FetchError("refused", "too many redirects")

    async def post_signed(
        self, url: str, body: bytes, signer: Signer, now: datetime
    ) -> tuple[int, str, dict[str, str]]:
        """POST an activity; answers (status, short body, headers). Transport errors raise.

        Double-knocking (federation/knock.py): signed with the family remembered for the
        inbox's origin, else RFC 9421; a 400 or 401 is followed at once by the same request
        signed with the other family, and the answer to that one is the answer. A family
        that gets a 2xx is remembered for the origin. Each request is signed once."""
        check_url(url, self.allow_loopback)
        await self._check_policy(url)
        try:
            target = str(URL(url))  # the target URI as it goes on the wire
        except ValueError:
            raise FetchError("refused", f"not a usable URL: {url[:200]}") from None
        origin = origin_of(url)
        family = self.signatures.first(origin, now)
        headers = self._signed_headers(family, target, body, signer, now)
        answer = await self._post(url, body, headers)
        if answer[0] in REFUSALS:
            log.debug("%s refused a %s signature (%d); knocking again", origin, family, answer[0])
            family = other(family)
            headers = self._signed_headers(family, target, body, signer, now)
            answer = await self._post(url, body, headers)
        if 200 <= answer[0] < 300:
            self.signatures.remember(origin, family, now)
        return answer

    @staticmethod
    def _signed_headers(
        family: SignatureFamily, url: str, body: bytes, signer: Signer, now: datetime
    ) -> dict[str, str]:
        headers = {"Content-Type": AS2_CONTENT_TYPE, "Accept": AS2_ACCEPT}
        if family == CAVAGE:
            return headers | sign_cavage(
                method="POST",
                url=url,
                body=body,
                key_id=signer.key_id,
                private_key=signer.private_key,
                now=now,
            )
        # RFC 9421 as Mastodon and Fedify read it, covering the headers sent beside the
        # digest (a Date too, as Fedify sends, for servers that log or check it).
        headers["Date"] = format_datetime(now.astimezone(UTC), usegmt=True)
        return headers | sign_message_signature(
            method="POST",
            url=url,
            body=body,
            key_id=signer.key_id,
            private_key=signer.private_key,
            now=now,
            components=RFC9421_COMPONENTS,
            extra_headers=headers,
        )

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, dict[str, str]]:
        try:
            async with self.session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                text = (await resp.content.read(4096)).decode("utf-8", "replace")
                return resp.status, text, dict(resp.headers)
        except aiohttp.ClientError as error:
            raise _transport_error(error, url) from None
        except TimeoutError:
            raise FetchError("unavailable", f"timed out delivering to {url[:200]}") from None
        except OSError as error:
            raise FetchError("refused", str(error)) from None

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.limits.max_body_bytes
        declared = resp.content_length
        if declared is not None and declared > cap:
            raise FetchError("too_large", f"the answer is {declared} bytes, over {cap}")
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > cap:
                raise FetchError("too_large", f"the answer is over {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _raise_for_status(status: int, url: str) -> None:
        if status == 410:
            raise FetchError("gone", f"{url[:200]} is gone", status)
        if status == 404:
            raise FetchError("not_found", f"{url[:200]} was not found", status)
        if status >= 500 or status in (408, 429):
            raise FetchError("unavailable", f"{url[:200]} answered {status}", status)
        if status >= 400:
            # Refused for good (401, 403 ...): retrying would not change the answer.
            raise FetchError("refused", f"{url[:200]} answered {status}", status)
