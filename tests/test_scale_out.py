"""One node scaled out on PostgreSQL: two `healthnode serve --no-workers` processes and two
`healthnode worker` processes on one database, as if behind a load balancer, federating with a
second node.

Every request to the hospital names its domain in the Host header, whichever port it goes to,
as a reverse proxy would; one cookie jar holds the session, so a person's requests can go to
either web process. The web processes run no workers: everything that federates is done by one
of the two worker processes, through the queues in the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from node.clock import SystemClock
from node.config import Settings
from node.runtime import NodeContext
from node.storage.models import Delivery, InboxItem, Member, Post, Thread
from tests import databases
from tests.browser import Browser
from tests.conftest import NodeFactory
from tests.federation_harness import eventually, free_port
from tests.test_delivery_processes import (
    Command,
    accepted_follow,
    count,
    follow,
    registered,
    scalar,
    spawn,
    start_real_clock_node,
    stop_all,
    wait_until_serving,
)

pytestmark = pytest.mark.skipif(
    databases.BACKEND != "postgresql",
    reason="several web and worker processes share one node on PostgreSQL only",
)

POSTS_PER_MEMBER = 3  # a small budget, so that sharing it across processes shows


class Door:
    """The part of aiohttp's TestClient that Browser uses, aimed at one web process of a
    scaled-out node: the address is the process's port, the Host header the node's domain.
    `via(base_url)` moves the next requests to another process; the cookies stay."""

    def __init__(self, http: aiohttp.ClientSession, domain: str, base_url: str) -> None:
        self.http = http
        self.domain = domain
        self.base_url = base_url

    def via(self, base_url: str) -> Door:
        self.base_url = base_url
        return self

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        return {**(headers or {}), "Host": self.domain}

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Any:
        return self.http.get(self.base_url + path, headers=self._headers(headers))

    def post(self, path: str, data: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.http.post(self.base_url + path, data=data, headers=self._headers(headers))


async def text_of(door: Door, base_url: str, path: str) -> str:
    """A page as an anonymous reader gets it from the web process at `base_url`."""
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + path, headers={"Host": door.domain}) as response:
            assert response.status == 200, f"{path} on {base_url}: {response.status}"
            return await response.text()


async def test_two_web_and_two_worker_processes_act_as_one_node(
    test_databases: databases.TestDatabases, make_node: NodeFactory, tmp_path: Path
) -> None:
    # Given a hospital schema on PostgreSQL and a data dir (its secret) that all four
    # processes share, and a domain that names the first web process's port
    data_dir = tmp_path / "hospital-data"
    data_dir.mkdir()
    url = await test_databases.fresh("hospital_scale", data_dir)
    ports = [free_port(), free_port()]
    domain = f"127.0.0.1:{ports[0]}"
    web_a, web_b = (f"http://127.0.0.1:{port}" for port in ports)
    settings = Settings(domain=domain, data_dir=data_dir, database_url=url)
    opened = await NodeContext.open(settings, clock=SystemClock())  # the secret and the keys
    await opened.close()
    common = ("--domain", domain, "--database-url", url, "--data-dir", data_dir)
    env = {"HEALTHNODE_RATE_POSTS_PER_MEMBER": f"{POSTS_PER_MEMBER}/1h"}

    async with AsyncExitStack() as cleanup:
        hospital = await NodeContext.open(settings, clock=SystemClock())  # for reading only
        cleanup.push_async_callback(hospital.close)
        charity = await start_real_clock_node(make_node, "charity")
        cleanup.push_async_callback(charity.close)
        commands: list[Command] = []
        cleanup.push_async_callback(stop_all, commands)  # first of all: no process outlives it
        for index, port in enumerate(ports):
            commands.append(
                await spawn(
                    f"web-{index + 1}", tmp_path, "serve", "--no-workers", "--port", str(port),
                    *common, env=env,
                )
            )  # fmt: skip
        for index in range(2):
            commands.append(
                await spawn(f"worker-{index + 1}", tmp_path, "worker", *common, env=env)
            )
        await wait_until_serving(commands[0], web_a)
        await wait_until_serving(commands[1], web_b)

        def alive() -> None:
            for command in commands:
                if command.process.returncode is not None:
                    raise AssertionError(f"{command.name} exited:\n{command.tail()}")

        async def waiting_for(check: Any, what: str, seconds: float = 20.0) -> Any:
            async def checked() -> Any:
                alive()
                return await check()

            try:
                return await eventually(checked, what, seconds=seconds)
            except AssertionError as error:
                logs = "\n".join(f"--- {c.name}\n{c.tail(15)}" for c in commands)
                pytest.fail(f"{error}\n{logs}")

        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        cleanup.push_async_callback(http.close)
        nurse_door = Door(http, domain, web_a)
        nurse = Browser(cast(TestClient, nurse_door))

        # When the nurse signs up on the first web process
        await nurse.register("nurse")

        # Then the second knows her session: she creates a public group there
        nurse_door.via(web_b)
        await nurse.get("/groups/new")
        page = await nurse.post(
            "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
        )
        assert page.status == 200 and page.path == "/g/t1d", page.text[:500]

        # And after signing out on the second, she signs in on the first and can post on the
        # second
        await nurse.logout()
        nurse_door.via(web_a)
        assert "Sign out" not in (await nurse.get("/")).text
        page = await nurse.login("nurse")
        assert page.status == 200, page.text[:500]
        nurse_door.via(web_b)

        # When bea, on the charity's node, follows the group (her Follow reaches the first web
        # process, a worker processes it and sends the Accept)
        bea = await registered(charity, "bea")
        await follow(bea, f"t1d@{domain}")
        await waiting_for(lambda: accepted_follow(charity), "the Accept on the charity")

        # And the nurse starts a thread through the second web process
        page = await nurse.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
        assert page.status == 200 and page.path.startswith("/t/"), page.text[:500]
        hospital_thread = page.path.removeprefix("/t/")

        # Then a worker delivers it to the charity, which shows the thread
        async def thread_on_charity() -> Any:
            return await scalar(
                charity.node, select(Thread.id).where(Thread.title == "Night hypos")
            )

        charity_thread = await waiting_for(thread_on_charity, "the thread on the charity")
        delivered = await count(
            hospital,
            select(func.count()).select_from(Delivery).where(Delivery.state == "delivered"),
        )
        assert delivered >= 2  # the Accept and the thread's announces, sent by the workers

        # When bea replies from the charity (to the hospital's inbox, on the first process)
        page = await bea.post(f"/t/{charity_thread}/reply", {"body": "Every week, sadly."})
        assert page.status == 200, page.text[:500]

        # Then a worker processes it, and the second web process shows it on the thread page
        async def reply_on_hospital() -> Any:
            return await scalar(
                hospital, select(Post.id).where(Post.source == "Every week, sadly.")
            )

        await waiting_for(reply_on_hospital, "the reply on the hospital")
        for base_url in (web_b, web_a):
            shown = await text_of(nurse_door, base_url, f"/t/{hospital_thread}")
            assert "Every week, sadly." in shown, base_url
        done = await count(
            hospital,
            select(func.count()).select_from(InboxItem).where(InboxItem.state == "done"),
        )
        assert done >= 2  # the Follow and the reply
        remote_author = await scalar(
            hospital, select(Member.domain).where(Member.username == "bea", Member.domain != "")
        )
        assert remote_author == charity.domain

        # Given a second local member who joins the group on the first process
        cal_door = Door(
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)), domain, web_a
        )
        cleanup.push_async_callback(cal_door.http.close)
        cal = Browser(cast(TestClient, cal_door))
        await cal.register("cal")
        await cal.get("/g/t1d")
        page = await cal.post("/g/t1d/join")
        assert page.status == 200, page.text[:500]

        # When cal replies as often as the node allows, alternating between the processes
        for number in range(POSTS_PER_MEMBER):
            cal_door.via((web_a, web_b)[number % 2])
            page = await cal.post(f"/t/{hospital_thread}/reply", {"body": f"Reply {number}."})
            assert page.status == 200, f"reply {number}: {page.status} {page.text[:300]}"

        # Then one more is refused by either process: the budget is counted in the database
        for base_url in (web_a, web_b):
            cal_door.via(base_url)
            page = await cal.post(f"/t/{hospital_thread}/reply", {"body": "One too many."})
            assert page.status == 429, f"{base_url}: {page.status} {page.text[:300]}"
            assert "the most this node allows" in page.text
        stored = await count(
            hospital,
            select(func.count()).select_from(Post).where(Post.source.like("Reply %")),
        )
        assert stored == POSTS_PER_MEMBER
        assert not await scalar(hospital, select(Post.id).where(Post.source == "One too many."))

        # And every process is still running
        alive()
