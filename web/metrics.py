"""Prometheus metrics: requests by route pattern and status, request latency, what the
workers count (federation/metrics.py), and queue figures read from the database when
scraped. Served only on the separate address `--metrics-address` names, never on the
public port; each process has its own registry (docs/OPERATIONS.md, "Metrics")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from federation.metrics import FederationMetrics
from node.config import parse_listen_address
from node.queue_figures import QueueFigures, queue_figures
from node.runtime import NodeContext

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
NO_ROUTE = "(no route)"  # unmatched paths: never the path itself
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Reading the queue figures may take this long; past it, the scrape answers without them.
QUEUE_READ_SECONDS = 5.0
# The node, once open: the web app opens its own on startup.
NodeSource = Callable[[], NodeContext | None]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class QueueGauges(Collector):
    """The figures last read from the database (node/queue_figures.py), as gauges. They are
    the same in every process sharing a database: aggregate them with max(), not sum()."""

    def __init__(self) -> None:
        self.figures: QueueFigures | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, node: NodeContext) -> None:
        async with self._lock:  # concurrent scrapes share one read
            try:
                async with asyncio.timeout(QUEUE_READ_SECONDS):
                    async with node.transaction(reading=True) as session:
                        self.figures = await queue_figures(session, node.clock.now())
            except Exception as error:  # the scrape still answers, without these
                log.warning("cannot read the queue figures: %s", type(error).__name__)
                self.figures = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = self.figures
        if figures is None:
            return
        depth = GaugeMetricFamily(
            "healthnode_queue_depth",
            "Rows waiting in a queue (capped at 100000).",
            labels=["queue", "state"],
        )
        depth.add_metric(["inbox", "queued"], figures.inbox_queued)
        depth.add_metric(["deliveries", "queued"], figures.deliveries_queued)
        depth.add_metric(["deliveries", "in_flight"], figures.deliveries_in_flight)
        yield depth
        oldest = GaugeMetricFamily(
            "healthnode_queue_oldest_age_seconds",
            "Age of the oldest queued row (0 when the queue is empty).",
            labels=["queue"],
        )
        oldest.add_metric(["inbox"], figures.oldest_inbox_seconds)
        oldest.add_metric(["deliveries"], figures.oldest_delivery_seconds)
        yield oldest
        yield GaugeMetricFamily(
            "healthnode_open_circuits",
            "Remote hosts whose circuit is open: only a probe is sent to them.",
            value=figures.open_circuits,
        )


class Metrics:
    """One process's registry and what it holds; `web=False` for `healthnode worker`."""

    def __init__(self, *, web: bool = True) -> None:
        self.registry = CollectorRegistry()
        # The process's CPU, memory, open files, garbage collections and Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.federation = FederationMetrics(self.registry)
        self.queues = QueueGauges()
        self.registry.register(self.queues)
        self.requests: Counter | None = None
        self.latency: Histogram | None = None
        if web:
            self.requests = Counter(
                "healthnode_http_requests",
                "HTTP requests answered, by method, route pattern and status.",
                ["method", "route", "status"],
                registry=self.registry,
            )
            self.latency = Histogram(
                "healthnode_http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route pattern.",
                ["method", "route"],
                buckets=LATENCY_BUCKETS,
                registry=self.registry,
            )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if self.requests is None or self.latency is None:
            return
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    async def exposition(self, node: NodeContext | None) -> bytes:
        if node is not None:
            await self.queues.refresh(node)
        return generate_latest(self.registry)


def route_pattern(request: web.BaseRequest) -> str:
    """The matched route's pattern (`/g/{slug}`), never the path: no slug, id or code."""
    match_info = getattr(request, "match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else NO_ROUTE


def metrics_app(metrics: Metrics, node_of: NodeSource) -> web.Application:
    """The metrics endpoint's own app: GET /metrics and nothing else."""

    async def scrape(request: web.Request) -> web.Response:
        body = await metrics.exposition(node_of())
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app = web.Application()
    app.router.add_get(METRICS_PATH, scrape)
    return app


async def start_metrics_server(
    metrics: Metrics, node_of: NodeSource, host: str, port: int
) -> web.AppRunner:
    """Serve the metrics on host:port until the returned runner is cleaned up."""
    runner = web.AppRunner(metrics_app(metrics, node_of), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


# `HOST:PORT` as given to --metrics-address or observability.metrics_address (node/config.py).
parse_address = parse_listen_address
