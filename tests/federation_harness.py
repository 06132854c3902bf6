"""Several real nodes in one test process, each serving its own app on its own loopback port.

Every outbound request of every node passes through a recording TraceConfig, so tests can
assert what left each node (the private-group leak test reads it).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from node.runtime import NodeContext
from tests.browser import Browser
from web.app import create_app
from web.appkeys import FEDERATION

T = TypeVar("T")


@dataclass
class Sent:
    method: str
    url: str
    body: bytes


@dataclass
class Recorder:
    requests: list[Sent] = field(default_factory=list)

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def on_start(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
        ) -> None:
            context.sent = Sent(params.method, str(params.url), b"")
            self.requests.append(context.sent)

        async def on_chunk(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
        ) -> None:
            context.sent.body += params.chunk

        config.on_request_start.append(on_start)
        config.on_request_chunk_sent.append(on_chunk)
        return config


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningNode:
    name: str
    node: NodeContext
    server: TestServer
    recorder: Recorder
    clients: list[TestClient] = field(default_factory=list)

    @property
    def domain(self) -> str:
        return self.node.settings.domain

    @property
    def base_url(self) -> str:
        return self.node.settings.base_url

    async def browser(self) -> Browser:
        client = TestClient(self.server)
        await client.start_server()
        self.clients.append(client)
        return Browser(client)

    @property
    def federation(self) -> Any:
        return self.server.app[FEDERATION]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.server.close()


async def start_node(
    make_node: Callable[..., Awaitable[NodeContext]], name: str, host: str = "127.0.0.1"
) -> RunningNode:
    """A node served on `host` (any 127.x.y.z is loopback on Linux: nodes on 127.0.0.2 and
    127.0.0.3 have host names of their own, as the federation policy and partner lists see
    servers) and a free port."""
    port = free_port(host)
    node = await make_node(name, domain=f"{host}:{port}")
    recorder = Recorder()
    app = create_app(node, trace_configs=[recorder.trace_config()])
    server = TestServer(app, host=host, port=port)
    await server.start_server()
    return RunningNode(name, node, server, recorder)


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    seconds: float = 20.0,
    interval: float = 0.05,
) -> T:
    """Poll until `check` gives a truthy value, and give it; fail once `seconds` have passed.
    Tests wait for a condition with this, never for a fixed time."""
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        await asyncio.sleep(interval)
