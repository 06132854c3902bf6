"""`healthnode demo`: a hospital, a charity and a clinic federating, in one process.

Each node has its own SQLite database and keys under the data dir, serves on 127.0.0.1, and
runs its own workers; the seed goes through the same services and federation as real use.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from node import groups, members, membership, posts, thread_lists
from node.config import Settings
from node.ids import Iris
from node.paging import FIRST_PAGE
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Membership
from web.app import create_app_owning_node
from web.appkeys import FEDERATION, NODE
from web.serving import GuardedSite, runner_for

DEMO_PASSWORD = "demo-password"


@dataclass(frozen=True)
class DemoNode:
    name: str
    port: int
    people: tuple[str, ...]

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"


HOSPITAL = DemoNode("hospital", 8001, ("hospital_admin", "nurse_kim"))
CHARITY = DemoNode("charity", 8002, ("bea",))
CLINIC = DemoNode("clinic", 8003, ("cal",))


async def run_demo(data_dir: Path) -> None:
    runners: list[web.AppRunner] = []
    try:
        for spec in (HOSPITAL, CHARITY, CLINIC):
            settings = Settings(domain=spec.domain, data_dir=data_dir / spec.name)
            runner = runner_for(create_app_owning_node(settings), settings)
            runners.append(runner)
            await runner.setup()
            await GuardedSite(runner, settings, "127.0.0.1", spec.port).start()
        apps = {
            spec.name: runner.app
            for spec, runner in zip((HOSPITAL, CHARITY, CLINIC), runners, strict=True)
        }
        await _seed(apps["hospital"][NODE], apps["charity"][NODE], apps["clinic"][NODE], apps)
        _print_guide()
        await _wait_for_stop()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _people(node: NodeContext, spec: DemoNode) -> None:
    async with node.transaction() as session:
        for index, username in enumerate(spec.people):
            if await members.find_member(session, username) is None:
                await members.create_member(
                    session, node.passwords, node.settings.limits, username=username,
                    password=DEMO_PASSWORD, display_name=username.replace("_", " ").title(),
                    now=node.clock.now(), is_admin=index == 0 and spec is HOSPITAL,
                    consent_policy_version=node.settings.consent_policy_version,
                )  # fmt: skip


async def _seed(
    hospital: NodeContext,
    charity: NodeContext,
    clinic: NodeContext,
    apps: dict[str, web.Application],
) -> None:
    for node, spec in ((hospital, HOSPITAL), (charity, CHARITY), (clinic, CLINIC)):
        await _people(node, spec)
    async with hospital.transaction() as session:
        owner = await members.get_member(session, "hospital_admin")
        if await groups.find_group(session, "t1d") is None:
            await groups.create_group(
                session, hospital.settings.limits, owner_id=owner.id, slug="t1d",
                name="Type 1 diabetes", description="Living with type 1, day to day.",
                tags="diabetes, type-1", now=hospital.clock.now(),
            )  # fmt: skip
            await groups.create_group(
                session, hospital.settings.limits, owner_id=owner.id, slug="staff_wellbeing",
                name="Staff wellbeing", description="Private: this never leaves the hospital.",
                private=True, join_policy="invite", now=hospital.clock.now(),
            )  # fmt: skip
    async with charity.transaction() as session:
        owner = await members.get_member(session, "bea")
        if await groups.find_group(session, "long_covid_carers") is None:
            await groups.create_group(
                session, charity.settings.limits, owner_id=owner.id, slug="long_covid_carers",
                name="Long COVID carers", description="For people caring for someone.",
                tags="long-covid, carers", now=charity.clock.now(),
            )  # fmt: skip
    t1d = Iris(hospital.settings.base_url).group("t1d")
    carers = Iris(charity.settings.base_url).group("long_covid_carers")
    await _follow(charity, apps["charity"], "bea", t1d)
    await _follow(clinic, apps["clinic"], "cal", t1d)
    await _follow(clinic, apps["clinic"], "cal", carers)
    async with charity.transaction() as session:
        bea = await members.get_member(session, "bea")
        view = await groups.view_group(session, f"t1d@{HOSPITAL.domain}", Viewer(bea.id))
        threads = await thread_lists.group_threads(session, view, FIRST_PAGE)
        if not any(summary.thread.title == "Pacing on bad days" for summary in threads.items):
            await posts.start_thread(
                session, charity.settings.limits, view, title="Pacing on bad days",
                draft=posts.Draft("What helps you plan a day when your levels are all over?"),
                now=charity.clock.now(),
            )  # fmt: skip


async def _follow(node: NodeContext, app: web.Application, username: str, group_iri: str) -> None:
    federation = app[FEDERATION]
    async with node.transaction() as session:
        group = await federation.directory.remote_group(session, group_iri, node.clock.now())
        person = await members.get_member(session, username)
        view = await groups.view_group(session, f"{group.slug}@{group.domain}", Viewer(person.id))
        if view.standing.state is None:
            await membership.join(session, view, node.clock.now())
        group_id, member_id = group.id, person.id
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        async with node.transaction() as session:
            row = await session.get(Membership, (group_id, member_id))
            if row is not None and row.state == "active":
                return
        await asyncio.sleep(0.2)
    print(f"(the follow of {group_iri} by {username} is still waiting)")


def _print_guide() -> None:
    print(
        f"""
healthnode demo: three nodes federating on this machine (password for everyone: {DEMO_PASSWORD})

  hospital  http://{HOSPITAL.domain}/  hospital_admin (admin), nurse_kim
            public group "Type 1 diabetes" (t1d), private group "Staff wellbeing"
  charity   http://{CHARITY.domain}/  bea, who runs "Long COVID carers" and follows t1d
  clinic    http://{CLINIC.domain}/  cal, who follows both public groups

Try: sign in as bea on the charity, open "Type 1 diabetes", reply to "Pacing on bad days";
then read the same thread on the hospital and the clinic. The private group stays at home.
Stop with Ctrl-C.
""",
        flush=True,
    )


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
