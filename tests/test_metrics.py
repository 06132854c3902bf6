"""Metrics and structured logs (issue 15, "Health, metrics, logs"): Prometheus counters by
route pattern, status and outcome on an address of their own, queue figures read when
scraped, request ids, and JSON log lines."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from node.storage.models import Delivery
from tests.clock import ManualClock
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, free_port, start_node
from tests.test_delivery_processes import (
    accepted_follow,
    count,
    follow,
    registered,
    spawn,
    stop_all,
    wait_until_serving,
)
from web.appkeys import METRICS
from web.cli import build_parser, main
from web.metrics import METRICS_PATH, NO_ROUTE, parse_address, start_metrics_server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def label_values(samples: Samples) -> set[str]:
    return {label for (_name, labels) in samples for _key, label in labels}


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        return await response.text()


async def metrics_of(running: RunningNode) -> AsyncIterator[str]:
    """Serve the node's metrics on an address of their own; yields the scrape URL."""
    port = free_port()
    runner = await start_metrics_server(
        running.server.app[METRICS], lambda: running.node, "127.0.0.1", port
    )
    try:
        yield f"http://127.0.0.1:{port}{METRICS_PATH}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def pair(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    hospital = await start_node(make_node, "hospital")
    charity = await start_node(make_node, "charity")
    try:
        yield hospital, charity
    finally:
        await charity.close()
        await hospital.close()


async def test_counters_move_by_route_pattern_status_and_outcome(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    hospital_scrapes = metrics_of(hospital)
    charity_scrapes = metrics_of(charity)
    hospital_url = await anext(hospital_scrapes)
    charity_url = await anext(charity_scrapes)
    try:
        # Given a nurse on the hospital with a public group and a private one
        nurse = await registered(hospital, "nurse")
        await nurse.get("/groups/new")
        made = await nurse.post(
            "/groups/new", {"slug": "t1d", "name": "T1", "visibility": "public"}
        )
        assert made.status == 200, made.text[:300]
        await nurse.get("/groups/new")
        hush = await nurse.post(
            "/groups/new",
            {"slug": "hushgroup", "name": "Hush", "visibility": "private",
             "join_policy": "request"},
        )  # fmt: skip
        hush_path = hush.path
        assert hush.status == 200 and hush_path.startswith("/g/"), hush.text[:300]
        assert (await nurse.get(hush_path)).status == 200
        # And a stranger asks for a page that does not exist
        stranger = await hospital.browser()
        assert (await stranger.get("/nowhere-at-all-4471")).status == 404
        assert (await stranger.get("/g/no-such-group-9932")).status == 404
        before = parse(await scrape(hospital_url))

        # When a member of the charity follows the public group (a Follow delivered to the
        # hospital, processed there, and an Accept delivered back)
        bea = await registered(charity, "bea")
        await follow(bea, f"t1d@{hospital.domain}")
        await eventually(lambda: accepted_follow(charity), "the Accept on the charity")

        async def settled(url: str, name: str, outcome: str) -> float:
            return value(parse(await scrape(url)), name, outcome=outcome)

        # Then each side counted what its workers did, once committed
        await eventually(
            lambda: settled(charity_url, "healthnode_deliveries_total", "delivered"),
            "the charity's Follow counted as delivered",
        )
        await eventually(
            lambda: settled(hospital_url, "healthnode_inbox_items_total", "processed"),
            "the hospital's inbox item counted as processed",
        )
        await eventually(
            lambda: settled(hospital_url, "healthnode_deliveries_total", "delivered"),
            "the hospital's Accept counted as delivered",
        )
        await eventually(
            lambda: settled(charity_url, "healthnode_inbox_items_total", "processed"),
            "the charity's inbox item counted as processed",
        )
        after = parse(await scrape(hospital_url))
        # And requests are counted by route pattern and status, never by path
        requests = "healthnode_http_requests_total"
        assert value(after, requests, method="GET", route="/g/{slug}", status="200") >= 1
        assert value(after, requests, method="GET", route="/g/{slug}", status="404") == 1
        assert value(after, requests, method="GET", route=NO_ROUTE, status="404") == 1
        assert value(after, requests, method="POST", route="/groups/new", status="303") == 2
        inbox_posts = sum(
            number
            for (name, labels), number in after.items()
            if name == requests
            and ("method", "POST") in labels
            and ("status", "202") in labels
            and dict(labels)["route"].endswith("/inbox")
        )
        assert inbox_posts >= 1, "the Follow was posted to an inbox route"
        assert value(before, requests, method="POST", route="/groups/new", status="303") == 2
        latency = "healthnode_http_request_duration_seconds_count"
        assert value(after, latency, method="GET", route="/g/{slug}") >= 2
        # And no label holds a path, a slug or a private group's name
        labels = label_values(after) | label_values(parse(await scrape(charity_url)))
        for text in ("hushgroup", hush_path, "t1d", "nowhere", "no-such-group", "nurse", "bea"):
            assert not any(text in label for label in labels), text
        patterns = {resource.canonical for resource in hospital.server.app.router.resources()}
        routes = {dict(labels)["route"] for (_name, labels) in after if "route" in dict(labels)}
        assert routes <= patterns | {NO_ROUTE}, routes - patterns
        # And the public port serves no metrics
        assert (await stranger.get(METRICS_PATH)).status == 404
    finally:
        await hospital_scrapes.aclose()
        await charity_scrapes.aclose()


async def test_queue_depth_and_the_oldest_age_are_read_when_scraped(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    scrapes = metrics_of(hospital)
    url = await anext(scrapes)
    try:
        # Given a charity member following the hospital's public group
        nurse = await registered(hospital, "nurse")
        await nurse.get("/groups/new")
        await nurse.post("/groups/new", {"slug": "t1d", "name": "T1", "visibility": "public"})
        bea = await registered(charity, "bea")
        await follow(bea, f"t1d@{hospital.domain}")
        await eventually(lambda: accepted_follow(charity), "the Accept on the charity")
        idle = parse(await scrape(url))
        assert value(idle, "healthnode_queue_depth", queue="deliveries", state="queued") == 0
        assert value(idle, "healthnode_queue_oldest_age_seconds", queue="deliveries") == 0
        assert value(idle, "healthnode_open_circuits") == 0

        # When the hospital's delivery worker is stopped, a thread is started, and 90
        # seconds pass
        await hospital.federation.delivery_worker.stop()
        page = await nurse.post(
            "/g/t1d/new", {"title": "Waiting", "body": "Queued for now", "details_seen": "yes"}
        )
        assert page.status == 200, page.text[:300]
        queued = await count(
            hospital.node,
            select(func.count()).select_from(Delivery).where(Delivery.state == "queued"),
        )
        assert queued >= 1
        clock = hospital.node.clock
        assert isinstance(clock, ManualClock)
        clock.advance(timedelta(seconds=90))

        # Then the scrape reads the queue as it stands
        waiting = parse(await scrape(url))
        depth = value(waiting, "healthnode_queue_depth", queue="deliveries", state="queued")
        assert depth == queued
        assert value(waiting, "healthnode_queue_oldest_age_seconds", queue="deliveries") == 90
        assert value(waiting, "healthnode_queue_depth", queue="inbox", state="queued") == 0
    finally:
        await scrapes.aclose()


async def test_every_answer_carries_a_request_id_a_stranger_cannot_choose(
    make_node: NodeFactory,
) -> None:
    # Given a node behind a trusted proxy at 127.0.0.2 (the test connects from 127.0.0.1)
    import ipaddress

    port = free_port()
    node = await make_node(
        "proxied",
        domain=f"127.0.0.1:{port}",
        trusted_proxies=(ipaddress.ip_network("127.0.0.2/32"),),
    )
    running = await _serve_node(node, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            seen = []
            for path in ("/", "/nowhere-7781", "/healthz"):
                # When anyone asks, offering an id of their own
                async with http.get(base + path, headers={"X-Request-Id": "chosen-1"}) as answer:
                    seen.append(answer.headers["X-Request-Id"])
            # Then each answer names a fresh id of the node's making, never the one offered
            assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in seen), seen
            assert len(set(seen)) == 3
        # When the trusted proxy passes an id on, it is kept; a malformed one is not
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(base + "/", headers={"X-Request-Id": "edge-42.a"}) as answer:
                assert answer.headers["X-Request-Id"] == "edge-42.a"
            async with http.get(base + "/", headers={"X-Request-Id": "x\ty" * 3}) as answer:
                assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-Id"])
    finally:
        await running.cleanup()


async def _serve_node(node: Any, port: int) -> web.AppRunner:
    from web.app import create_app

    runner = web.AppRunner(create_app(node, run_workers=False))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_serve_with_a_metrics_address_and_json_logs(tmp_path: Path) -> None:
    # Given `healthnode serve` with metrics on an address of their own and JSON logs
    port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}{METRICS_PATH}"
    commands = []
    try:
        arguments = (
            "serve", "--port", port, "--data-dir", tmp_path / "data",
            "--metrics-address", f"127.0.0.1:{metrics_port}", "--log-format", "json",
        )  # fmt: skip
        commands.append(await spawn("serve", tmp_path, *arguments))
        serve = commands[0]
        await wait_until_serving(serve, base)
        # When pages are asked for, one of them with a private-looking path
        ids = []
        async with aiohttp.ClientSession() as http:
            for path in ("/", "/g/secret-slug-5150", "/t/99999", METRICS_PATH):
                async with http.get(base + path) as answer:
                    ids.append((path, answer.status, answer.headers["X-Request-Id"]))
        # Then the public port has no metrics, and the metrics address counts the requests
        assert ids[-1][1] == 404
        samples = parse(await scrape(metrics_url))
        requests = "healthnode_http_requests_total"
        assert value(samples, requests, method="GET", route="/", status="200") >= 2
        assert value(samples, requests, method="GET", route="/g/{slug}", status="404") == 1
        assert value(samples, requests, method="GET", route="/t/{thread_id}", status="404") == 1
        assert value(samples, requests, method="GET", route=NO_ROUTE, status="404") == 1
        assert not any(
            "secret-slug" in label or "99999" in label for label in label_values(samples)
        )
        assert value(samples, "healthnode_queue_depth", queue="inbox", state="queued") == 0
        assert ("healthnode_deliveries_total", (("outcome", "delivered"),)) in samples
        await serve.stop(signal.SIGTERM)
        # And every log line is one JSON object with the fields, the access log's lines
        # carrying the ids the answers named
        lines = [line for line in serve.output().splitlines() if line.strip()]
        printed = [line for line in lines if line.startswith("healthnode ")]
        assert len(printed) == 2, printed  # "serving ..." and "metrics on ..."
        records = [json.loads(line) for line in lines if line not in printed]
        assert records
        for record in records:
            assert {"time", "level", "logger", "message"} <= record.keys(), record
        access = {
            record["request_id"]: record["message"]
            for record in records
            if record["logger"] == "aiohttp.access"
        }
        for path, status, rid in ids:
            assert rid in access, (path, access)
            assert f" {status} " in access[rid]
            assert "secret-slug" not in access[rid] and "99999" not in access[rid]
    finally:
        await stop_all(commands)


async def test_a_worker_serves_its_own_metrics_without_request_counters(tmp_path: Path) -> None:
    # Given `healthnode worker` alone, with a metrics address
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}{METRICS_PATH}"
    arguments = ("worker", "--data-dir", tmp_path / "data",
                 "--metrics-address", f"127.0.0.1:{metrics_port}")  # fmt: skip
    commands = [await spawn("worker", tmp_path, *arguments)]
    try:
        worker = commands[0]

        async def scraped() -> str | None:
            if worker.process.returncode is not None:
                raise AssertionError(f"the worker exited:\n{worker.tail()}")
            try:
                return await scrape(metrics_url)
            except aiohttp.ClientError:
                return None

        # Then it answers with the workers' counters and the queue figures, and no requests
        samples = parse(await eventually(scraped, "the worker's metrics", seconds=30))
        assert ("healthnode_inbox_items_total", (("outcome", "processed"),)) in samples
        assert ("healthnode_open_circuits", ()) in samples
        assert not any(name.startswith("healthnode_http_") for name, _labels in samples)
        assert value(samples, "process_resident_memory_bytes") > 0
    finally:
        await stop_all(commands)


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["serve", "--metrics-address", "9100"], "is not HOST:PORT"),
        (["serve", "--metrics-address", "127.0.0.1:99999"], "is not HOST:PORT"),
        (["worker", "--metrics-address", "localhost:"], "is not HOST:PORT"),
        (["serve", "--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_a_wrong_metrics_address_or_log_format_stops_the_command(
    arguments: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(arguments)
    assert stopped.value.code == 2
    assert says in capsys.readouterr().err


def test_the_metrics_address_is_never_the_public_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["serve", "--port", "8123", "--metrics-address", "127.0.0.1:8123",
                 "--data-dir", str(tmp_path)]  # fmt: skip
    assert main(arguments) == 1
    assert "must not use the public port" in capsys.readouterr().err
    assert parse_address("[::1]:9100") == ("::1", 9100)
