"""The federation policy (node/federation_policy.py): open or allowlist mode, allowed and
blocked domains, from the admin page and the `healthnode federation` command.

The node under test serves on 127.0.0.1; the other server is the same fake remote server on
loopback, named `localhost` instead, so that a policy about one host name is not about the
other (a policy domain is a host name and ignores ports).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, insert, select

from federation.httpsig import sign_cavage
from federation.outbox import REFUSED_BY_POLICY
from node import federation_policy, groups, members
from node.configuration import ALLOWED_DOMAINS_ENV, FEDERATION_MODE_ENV
from node.errors import Invalid
from node.federation_policy import REFUSED, DomainPolicy, ListKind, PolicyMode
from node.modlog import ModAction
from node.remote.actors import member_by_iri
from node.runtime import NodeContext
from node.storage.models import (
    Delivery,
    ModerationLogEntry,
    OutboxActivity,
    Thread,
)
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import eventually, free_port
from tests.peers import (
    AS2,
    PUBLIC,
    FakeRemote,
    Hospital,
    close_hospital,
    count,
    follow,
    open_hospital,
    post_signed,
    processed,
    remote_memberships,
)
from tests.sql_statements import statements_of
from web.app import create_app
from web.cli import ALLOWED_DOMAINS_KEY, BLOCKED_DOMAINS_ENV, DATABASE_URL_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
AS2_ACCEPT = {"Accept": "application/activity+json"}


@dataclass
class LocalhostRemote(FakeRemote):
    """The fake remote server, known by the host name `localhost`."""

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"


@pytest.fixture
async def neighbour(keys: dict[str, rsa.RSAPrivateKey]) -> AsyncIterator[LocalhostRemote]:
    server = LocalhostRemote(free_port(), keys={"mallory": keys["mallory"]})
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def hospital(make_node: NodeFactory, neighbour: LocalhostRemote) -> AsyncIterator[Hospital]:
    hospital = await open_hospital(make_node)
    yield hospital
    await close_hospital(hospital)


async def change_policy(node: NodeContext, action: str, *args: str, reason: str = "") -> None:
    """A policy change made in this process, as the admin page makes it."""
    now, who = (
        node.clock.now(),
        {"actor_label": "test", "configured": node.federation_policy.configured},
    )
    async with node.transaction() as session:
        if action == "mode":
            await federation_policy.set_mode(session, PolicyMode(args[0]), now=now, **who)
        elif action == "unlist":
            await federation_policy.unlist_domain(session, args[0], now=now, **who)
        else:
            await federation_policy.list_domain(
                session, args[0], ListKind(action), reason=reason, now=now, **who
            )
    node.federation_policy.invalidate()


async def healthnode(
    node: NodeContext, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """The real `healthnode` command, in a subprocess, on the test node's database."""
    configured = (DATABASE_URL_ENV, BLOCKED_DOMAINS_ENV, ALLOWED_DOMAINS_ENV, FEDERATION_MODE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in configured} | (env or {})
    env["PYTHONPATH"] = str(REPO_ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web.cli", *args,
        "--data-dir", str(node.settings.data_dir),
        "--database-url", node.settings.resolved_database_url,
        env=env, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def key_fetches(remote: FakeRemote) -> int:
    return len(remote.gets("/users/mallory"))


async def mallory_joins(hospital: Hospital, remote: FakeRemote) -> None:
    answer = await post_signed(hospital, remote, follow(remote, "mallory", hospital.group_iri))
    assert answer.status == 202, answer
    await eventually(lambda: _at_once(remote.posted("Accept")), "the Accept at mallory")


async def _at_once(value: object) -> object:
    return value


async def mallory_starts_a_thread(hospital: Hospital, remote: FakeRemote, title: str) -> None:
    actor = remote.actor("mallory")
    group_iri = hospital.group_iri
    page = {
        "id": f"{actor}/pages/{uuid.uuid4().hex}", "type": "Page", "attributedTo": actor,
        "name": title, "content": "<p>Words from elsewhere</p>", "to": [group_iri, PUBLIC],
        "audience": group_iri,
    }  # fmt: skip
    create = {
        "@context": AS2, "id": f"{actor}/activities/{uuid.uuid4().hex}", "type": "Create",
        "actor": actor, "object": page, "to": [PUBLIC], "cc": [group_iri],
        "audience": group_iri,
    }  # fmt: skip
    answer = await post_signed(hospital, remote, create)
    assert answer.status == 202, answer
    assert await eventually(lambda: processed(hospital, create["id"]), "the Create") == "done"


async def thread_titled(hospital: Hospital, title: str) -> Thread:
    async with hospital.running.node.transaction() as session:
        return (await session.execute(select(Thread).where(Thread.title == title))).scalar_one()


# ---------------------------------------------------------------- the inbox edge


async def test_allowlist_refuses_an_unlisted_server_with_403_before_fetching_its_key(
    hospital: Hospital, neighbour: LocalhostRemote
) -> None:
    # Given a node that federates only with the servers it allows (not localhost)
    node = hospital.running.node
    await change_policy(node, "mode", "allowlist")
    await change_policy(node, "allow", "partner.example", reason="our partner")

    # When a person on localhost asks to join
    answer = await post_signed(
        hospital, neighbour, follow(neighbour, "mallory", hospital.group_iri)
    )

    # Then it is refused with 403, and the fake server was never asked for the key
    assert (answer.status, answer.reason) == (403, REFUSED)
    assert await key_fetches(neighbour) == 0
    assert await remote_memberships(hospital) == 0

    # And once localhost is allowed, the same request goes through
    await change_policy(node, "allow", "localhost", reason="a trial")
    answer = await post_signed(
        hospital, neighbour, follow(neighbour, "mallory", hospital.group_iri)
    )
    assert answer.status == 202, answer
    assert await key_fetches(neighbour) == 1


async def test_the_environment_variable_still_blocks(
    make_node: NodeFactory, neighbour: LocalhostRemote
) -> None:
    hospital = await open_hospital_with(make_node, blocked_domains=frozenset({"localhost"}))
    try:
        answer = await post_signed(
            hospital, neighbour, follow(neighbour, "mallory", hospital.group_iri)
        )
        assert (answer.status, answer.reason) == (403, REFUSED)
        assert await key_fetches(neighbour) == 0
    finally:
        await close_hospital(hospital)


async def test_a_mode_fixed_by_the_configuration_admits_only_its_allowed_domains(
    make_node: NodeFactory, neighbour: LocalhostRemote
) -> None:
    # Given a node whose configuration fixes the allowlist mode and allows no one
    hospital = await open_hospital_with(make_node, federation_mode="allowlist")
    try:
        node = hospital.running.node
        answer = await post_signed(
            hospital, neighbour, follow(neighbour, "mallory", hospital.group_iri)
        )
        # Then the neighbour is refused before its key is fetched
        assert (answer.status, answer.reason) == (403, REFUSED)
        assert await key_fetches(neighbour) == 0
        # And neither an admin nor the command line can open the node again
        with pytest.raises(Invalid) as refused:
            await change_policy(node, "mode", "open")
        assert "configuration" in refused.value.problems["mode"]
        code, out, err = await healthnode(
            node, "federation", "mode", "open", env={FEDERATION_MODE_ENV: "allowlist"}
        )
        assert code != 0 and "federation.mode" in err, (out, err)
        assert (await node.federation_policy.current()).mode is PolicyMode.ALLOWLIST
    finally:
        await close_hospital(hospital)


async def test_the_configuration_allows_domains_beside_the_table(
    make_node: NodeFactory, neighbour: LocalhostRemote
) -> None:
    # Given a node whose configuration fixes the allowlist mode and allows localhost
    hospital = await open_hospital_with(
        make_node, federation_mode="allowlist", allowed_domains=frozenset({"localhost"})
    )
    try:
        # Then the neighbour's follow goes through
        answer = await post_signed(
            hospital, neighbour, follow(neighbour, "mallory", hospital.group_iri)
        )
        assert answer.status == 202, answer
        # And the domain is listed as the configuration's, after the table's
        code, out, err = await healthnode(
            hospital.running.node, "federation", "list", env={ALLOWED_DOMAINS_ENV: "localhost"}
        )
        assert code == 0, err
        assert out.splitlines() == [
            "mode\topen",  # the subprocess has no mode configured: the database's
            f"localhost\tallow\tset by the configuration ({ALLOWED_DOMAINS_KEY})",
        ]
    finally:
        await close_hospital(hospital)


async def test_the_admin_page_says_where_a_configured_mode_is_changed(
    make_node: NodeFactory, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    node = await make_node(
        "configured", federation_mode="allowlist", allowed_domains=frozenset({"partner.example"})
    )
    await make_admin(node)
    admin = Browser(await aiohttp_client(TestServer(create_app(node))))
    await admin.login("admin")
    page = await admin.get("/admin/federation")
    assert "set by the node's configuration" in page.text
    assert 'action="/admin/federation/mode"' not in page.html
    assert "partner.example allow set by the configuration" in page.text
    page = await admin.post("/admin/federation/mode", {"mode": "open"})
    assert page.status == 400 and "change it there" in page.text
    assert (await node.federation_policy.current()).mode is PolicyMode.ALLOWLIST


async def open_hospital_with(make_node: NodeFactory, **overrides: object) -> Hospital:
    async def factory(name: str, domain: str, **more: object) -> NodeContext:
        return await make_node(name, domain=domain, **overrides, **more)

    return await open_hospital(factory)


# ---------------------------------------------------------------- the command line


async def test_a_block_from_the_command_line_ends_follows_hides_content_and_applies_within_seconds(
    hospital: Hospital, neighbour: LocalhostRemote
) -> None:
    # Given mallory of localhost is a member of the group and started a thread in it
    node = hospital.running.node
    await mallory_joins(hospital, neighbour)
    await mallory_starts_a_thread(hospital, neighbour, "Hello from localhost")
    thread = await thread_titled(hospital, "Hello from localhost")
    reader = await hospital.running.browser()
    assert "Hello from localhost" in (await reader.get("/g/t1d")).text
    assert (await reader.get(f"/t/{thread.id}")).status == 200
    # And the running node has read its policy (open)
    assert (await node.federation_policy.current()).permits(neighbour.base_url)

    # When an operator blocks localhost with the command, beside the running node
    code, out, err = await healthnode(node, "federation", "block", "localhost", "--reason", "spam")
    assert code == 0, err
    assert out.strip() == "federation block localhost (1 membership ended)"

    # Then mallory's membership has ended, and her content is hidden at once
    assert await remote_memberships(hospital) == 0
    assert "Hello from localhost" not in (await reader.get("/g/t1d")).text
    assert (await reader.get(f"/t/{thread.id}")).status == 404
    # And within seconds (of the node's clock), the running node refuses her server
    node.clock.advance(timedelta(seconds=3))  # type: ignore[attr-defined]
    fetches = await key_fetches(neighbour)
    answer = await post_signed(
        hospital, neighbour, follow(neighbour, "mallory", hospital.group_iri)
    )
    assert (answer.status, answer.reason) == (403, REFUSED)
    assert await key_fetches(neighbour) == fetches
    # And the change is in the admins' audit log
    async with node.transaction() as session:
        entry = (await session.execute(select(ModerationLogEntry))).scalar_one()
    assert (entry.action, entry.group_id, entry.actor_label) == (
        ModAction.FEDERATION_POLICY.value, None, "command line",
    )  # fmt: skip
    assert entry.reason == "block localhost: spam"

    # And `list` prints the mode and the entries, one tab-separated line each
    code, out, _ = await healthnode(node, "federation", "list")
    assert (code, out) == (0, "mode\topen\nlocalhost\tblock\tspam\n")

    # When it is unlisted again, her content is shown again (her membership stays ended)
    code, _, err = await healthnode(node, "federation", "unlist", "localhost")
    assert code == 0, err
    assert "Hello from localhost" in (await reader.get("/g/t1d")).text
    assert (await reader.get(f"/t/{thread.id}")).status == 200
    assert await remote_memberships(hospital) == 0


@pytest.mark.parametrize(
    "domain",
    ["evil.example:443", "https://evil.example", "evil.example/path", "", "  ", "ev il.example"],
)
async def test_an_invalid_domain_exits_2_with_a_clear_message(
    node: NodeContext, domain: str
) -> None:
    code, out, err = await healthnode(node, "federation", "block", domain)
    assert code == 2, (out, err)
    assert err.startswith("healthnode: argument DOMAIN: ") and len(err.splitlines()) == 1, err
    code, out, _ = await healthnode(node, "federation", "list")
    assert (code, out) == (0, "mode\topen\n")


async def test_mode_allow_and_list_from_the_command_line(node: NodeContext) -> None:
    for args in (("mode", "allowlist"), ("allow", "Partner.Example"), ("block", "evil.example")):
        code, _, err = await healthnode(node, "federation", *args)
        assert code == 0, err
    code, out, _ = await healthnode(node, "federation", "list")
    assert out == "mode\tallowlist\nevil.example\tblock\t\npartner.example\tallow\t\n"
    code, _, err = await healthnode(node, "federation", "mode", "closed")
    assert code == 2 and "invalid choice" in err
    code, _, err = await healthnode(node, "federation", "unlist", "never.example")
    assert code == 1 and "neither allowed nor blocked" in err


# ---------------------------------------------------------------- deliveries


async def test_nothing_is_delivered_to_a_blocked_server(
    hospital: Hospital, neighbour: LocalhostRemote
) -> None:
    node = hospital.running.node
    await mallory_joins(hospital, neighbour)
    # Given a delivery to mallory's server queued for later, before the block
    now = node.clock.now()
    async with node.transaction() as session:
        session.add(
            OutboxActivity(
                id="queued-before", actor_iri=hospital.group_iri, signer="instance",
                type="Announce", body="{}", created_at=now,
            )
        )  # fmt: skip
        await session.flush()
        await session.execute(
            insert(Delivery).values(
                activity_id="queued-before", inbox_url=neighbour.actor("mallory") + "/inbox",
                state="queued", attempts=0, next_attempt_at=now + timedelta(minutes=1),
                created_at=now, updated_at=now, last_error="",
            )
        )  # fmt: skip
    # When her server is blocked, and then the node answers one of her old Follows
    await change_policy(node, "block", "localhost", reason="spam")
    async with node.transaction() as session:
        mallory = await member_by_iri(session, neighbour.actor("mallory"))
        assert mallory is not None
        old_follow = follow(neighbour, "mallory", hospital.group_iri)
        await hospital.running.federation.outbox.reject_follow(session, old_follow, mallory)
    # Then the Reject is stored but no delivery of it is created
    rejects = (
        select(func.count())
        .select_from(Delivery)
        .join(OutboxActivity, OutboxActivity.id == Delivery.activity_id)
        .where(OutboxActivity.type == "Reject")
    )
    assert await count(hospital, rejects) == 0
    assert await count(hospital, select(func.count()).where(OutboxActivity.type == "Reject")) == 1
    # And the one queued before is abandoned when its time comes, never sent
    node.clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]
    hospital.running.federation.delivery_worker.wake()

    async def abandoned() -> str | None:
        async with node.transaction() as session:
            row = (
                await session.execute(
                    select(Delivery).where(Delivery.activity_id == "queued-before")
                )
            ).scalar_one()
        return row.last_error if row.state == "abandoned" else None

    assert await eventually(abandoned, "the queued delivery abandoned") == REFUSED_BY_POLICY
    posted = [r for r in neighbour.received if r.method == "POST"]
    assert all(r.json()["type"] == "Accept" for r in posted), [r.json()["type"] for r in posted]


# ---------------------------------------------------------------- follows and look-ups


async def test_in_allowlist_mode_following_a_group_elsewhere_is_refused_with_a_reason(
    hospital: Hospital, neighbour: LocalhostRemote
) -> None:
    node = hospital.running.node
    await change_policy(node, "mode", "allowlist")
    browser = await hospital.running.browser()
    await browser.login("nurse", "correct horse battery")
    page = await browser.post("/groups/follow", {"handle": f"club@localhost:{neighbour.port}"})
    assert page.status == 400
    assert "does not federate with localhost" in page.text
    assert neighbour.received == []  # not even a WebFinger look-up


# ---------------------------------------------------------------- signed GETs and subdomains


def test_a_domain_covers_its_subdomains_and_ignores_ports() -> None:
    policy = DomainPolicy(PolicyMode.OPEN, frozenset(), frozenset({"evil.example"}))
    assert not policy.permits("https://evil.example/u/a")
    assert not policy.permits("https://social.evil.example:8443/u/a")
    assert not policy.permits("EVIL.example.:443")
    assert policy.permits("https://notevil.example/u/a")
    allowlist = DomainPolicy(PolicyMode.ALLOWLIST, frozenset({"partner.example"}), frozenset())
    assert allowlist.permits("https://lemmy.partner.example/c/x")
    assert not allowlist.permits("https://other.example/c/x")
    assert not allowlist.permits("")


async def test_signed_gets_from_a_blocked_subdomain_are_refused(make_node: NodeFactory) -> None:
    node = await make_node("hospital", domain="hospital.example")
    async with node.transaction() as session:
        owner = await members.create_member(
            session, node.passwords, node.settings.limits, username="nurse",
            password=DEFAULT_PASSWORD, display_name="Nurse", now=node.clock.now(),
        )  # fmt: skip
        await groups.create_group(
            session, node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1 diabetes", now=node.clock.now(),
        )  # fmt: skip
    await change_policy(node, "block", "evil.example", reason="harassment")
    client = TestClient(TestServer(create_app(node, run_workers=False)))
    await client.start_server()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        url = str(client.make_url("/g/t1d"))
        for key_id in ("https://social.evil.example/actor#main-key", "https://ok.example/a#k"):
            signed = sign_cavage(
                method="GET", url=url, body=None, key_id=key_id, private_key=key,
                now=node.clock.now(),
            )  # fmt: skip
            async with client.get("/g/t1d", headers=AS2_ACCEPT | signed) as response:
                assert response.status == (403 if "evil" in key_id else 200), key_id
    finally:
        await client.close()


# ---------------------------------------------------------------- the admin page


async def make_admin(node: NodeContext) -> None:
    async with node.transaction() as session:
        await members.create_member(
            session, node.passwords, node.settings.limits, username="admin",
            password=DEFAULT_PASSWORD, display_name="Admin", now=node.clock.now(), is_admin=True,
        )  # fmt: skip


async def test_admins_manage_both_lists_with_a_reason(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await make_admin(node)
    admin = await browser_factory()
    await admin.login("admin")
    page = await admin.get("/admin/federation")
    assert page.status == 200 and "Federation policy" in page.text

    page = await admin.post(
        "/admin/federation/domains",
        {"domain": "Evil.Example", "kind": "block", "reason": "harassed our members"},
    )
    assert page.status == 200
    assert "evil.example" in page.text and "harassed our members" in page.text
    page = await admin.post(
        "/admin/federation/domains",
        {"domain": "partner.example", "kind": "allow", "reason": "our partner hospital"},
    )
    page = await admin.post("/admin/federation/mode", {"mode": "allowlist"})
    assert "only the allowed servers" in page.text
    policy = await node.federation_policy.current()
    assert policy.mode is PolicyMode.ALLOWLIST
    assert (policy.allowed, policy.blocked) == ({"partner.example"}, {"evil.example"})

    # A bad domain or kind is a 400 with the reason on the page, and changes nothing
    page = await admin.post(
        "/admin/federation/domains", {"domain": "evil.example:8443", "kind": "block"}
    )
    assert page.status == 400 and "has a port" in page.text
    page = await admin.post("/admin/federation/domains", {"domain": "x.example", "kind": "mute"})
    assert page.status == 400 and "allow or block" in page.text
    page = await admin.post("/admin/federation/mode", {"mode": "closed"})
    assert page.status == 400

    page = await admin.post("/admin/federation/domains/unlist", {"domain": "evil.example"})
    assert page.status == 200
    assert (await node.federation_policy.current()).blocked == frozenset()

    async with node.transaction() as session:
        entries = (
            await session.execute(select(ModerationLogEntry).order_by(ModerationLogEntry.id))
        ).scalars().all()  # fmt: skip
    assert [(e.action, e.actor_label, e.group_id, e.reason) for e in entries] == [
        ("federation_policy", "admin", None, "block evil.example: harassed our members"),
        ("federation_policy", "admin", None, "allow partner.example: our partner hospital"),
        ("federation_policy", "admin", None, "mode allowlist"),
        ("federation_policy", "admin", None, "unlist evil.example"),
    ]


async def test_no_one_else_can_change_the_policy(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await make_admin(node)
    member = await browser_factory()
    await member.register("plain")
    anonymous = await browser_factory()
    for browser in (member, anonymous):
        assert (await browser.get("/admin/federation")).status == 404
        for path, form in (
            ("/admin/federation/mode", {"mode": "allowlist"}),
            ("/admin/federation/domains", {"domain": "evil.example", "kind": "block"}),
            ("/admin/federation/domains/unlist", {"domain": "evil.example"}),
        ):
            page = await browser.post(path, form, csrf=browser is member)
            assert page.status in (403, 404), (path, page.status)
    policy = await node.federation_policy.current()
    assert (policy.mode, policy.allowed, policy.blocked) == (PolicyMode.OPEN, set(), set())


async def test_many_asking_at_once_read_the_policy_once(node: NodeContext) -> None:
    """A claimed batch asks from every delivery at once: one read answers them all."""
    await node.federation_policy.current()
    node.federation_policy.invalidate()  # due to be read again, and unchanged since
    with statements_of(node) as seen:
        policies = await asyncio.gather(*(node.federation_policy.current() for _ in range(64)))
    statements = [statement for statement in seen if "federation_policy" in statement]
    assert len({id(policy) for policy in policies}) == 1
    assert len(statements) == 1, statements
