"""The address a request came from, seen through the reverse proxies the node trusts."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from web.appkeys import NODE

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def client_address(request: web.Request) -> str:
    """The peer's address; when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For that is not one. Anyone else's X-Forwarded-For is ignored: a client
    could otherwise name a fresh address with every guess."""
    peer = request.remote or "unknown"
    trusted = request.app[NODE].settings.trusted_proxies
    if not _is_within(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", ())
        for hop in header.split(",")
    ]
    nearest = peer
    for hop in reversed(hops):  # the proxy nearest to us appended the last one
        if not _is_within(hop, trusted):
            return hop if _is_address(hop) else nearest
        nearest = hop
    return nearest


def from_trusted_proxy(request: web.Request) -> bool:
    """Whether the peer itself is one of the reverse proxies the node trusts."""
    return _is_within(request.remote or "", request.app[NODE].settings.trusted_proxies)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_within(text: str, networks: Networks) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in networks)
