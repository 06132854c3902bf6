"""Serving the app over HTTP: a deadline and a cap for request heads, and a private access log.

aiohttp reads request heads with no deadline of its own. Its keep-alive timer, which starts
when a connection opens and again after each answer and which arriving bytes do not reset,
closes a connection still waiting for a whole request; it is set to the head deadline here,
so that it bounds every head after the first. The first head of each connection is guarded
here as well, and only so many connections may be waiting for their first head at once:
past the cap, the one that has waited longest is closed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from node.config import Settings
from web.appkeys import METRICS, NODE, REQUEST_ID
from web.metrics import route_pattern, start_metrics_server

access_log = logging.getLogger("aiohttp.access")
HEAD_END = b"\r\n\r\n"


class RouteAccessLogger(AbstractAccessLogger):
    """Method, the matched route's pattern, status and time: never the path or query (a
    search, a private group's address, a join code) and never the client's address."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = route_pattern(request)
        rid = request.get(REQUEST_ID) if isinstance(request, web.Request) else None
        self.logger.info(
            "%s %s %s %.1f ms",
            request.method,
            route,
            response.status,
            time * 1000,
            extra={"request_id": rid},
        )


class HeadGuard:
    """A protocol factory around aiohttp's: bounds connections waiting for their first head."""

    def __init__(
        self, protocols: Callable[[], asyncio.Protocol], seconds: float, most: int
    ) -> None:
        self._protocols = protocols
        self._seconds = seconds
        self._most = most
        self._waiting: OrderedDict[_GuardedConnection, asyncio.TimerHandle] = OrderedDict()

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self, self._protocols())

    def waiting(self, connection: _GuardedConnection) -> None:
        while len(self._waiting) >= self._most:
            oldest = next(iter(self._waiting))
            self.done(oldest)
            oldest.hang_up()
        timer = asyncio.get_running_loop().call_later(self._seconds, connection.hang_up)
        self._waiting[connection] = timer

    def done(self, connection: _GuardedConnection) -> None:
        timer = self._waiting.pop(connection, None)
        if timer is not None:
            timer.cancel()


class _GuardedConnection(asyncio.Protocol):
    def __init__(self, guard: HeadGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._awaiting_head = True
        self._tail = b""  # the last bytes seen, to find a head's end split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(transport)
        self._guard.waiting(self)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            seen = self._tail + data
            if HEAD_END in seen:
                self._awaiting_head = False
                self._guard.done(self)
            self._tail = seen[-(len(HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.done(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def hang_up(self) -> None:
        self._awaiting_head = False
        if self._transport is not None:
            self._transport.close()


def runner_for(app: web.Application, settings: Settings) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log_class=RouteAccessLogger,
        keepalive_timeout=settings.request_head_seconds,
        handle_signals=False,
    )


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a HeadGuard."""

    def __init__(self, runner: web.AppRunner, settings: Settings, host: str, port: int) -> None:
        super().__init__(runner)
        self._settings = settings
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = HeadGuard(
            server,
            self._settings.request_head_seconds,
            self._settings.connections_awaiting_head_max,
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(guard, self._host, self._port, reuse_address=True)


async def serve(
    app: web.Application,
    settings: Settings,
    host: str,
    port: int,
    ready: Callable[[], None],
    metrics_address: tuple[str, int] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (`healthnode serve`), and the metrics on their own
    address when one is given."""
    runner = runner_for(app, settings)
    await runner.setup()
    metrics: web.AppRunner | None = None
    try:
        if metrics_address is not None:
            metrics = await start_metrics_server(
                app[METRICS], lambda: app.get(NODE), *metrics_address
            )
        await GuardedSite(runner, settings, host, port).start()
        ready()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        if metrics is not None:
            await metrics.cleanup()
        await runner.cleanup()
