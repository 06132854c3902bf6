"""Verified professionals (node/professionals.py): the `healthnode member verify` and
`unverify` commands, the admins' page, badges on pages, and verifications seen by another
real node through the member's actor document and its Updates.

Two nodes need two host names, since a verification counts only when the verifying domain
is the actor's own host (ports aside): the node under test serves on 127.0.0.1 and the
verifying node on the same loopback as `localhost`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from node import groups, members, professionals
from node.erasure import ErasureRequest, erase_local_account
from node.modlog import ModAction
from node.professionals import BadgeKind
from node.remote.actors import member_by_iri
from node.runtime import NodeContext
from node.storage.models import (
    Member,
    Membership,
    ModerationLogEntry,
    ProfessionalVerification,
    Thread,
)
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import (
    Recorder,
    RunningNode,
    eventually,
    free_port,
    start_node,
)
from tests.peers import FakeRemote
from tests.sql_statements import statements_of
from web.app import create_app
from web.cli import BLOCKED_DOMAINS_ENV, DATABASE_URL_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
TITLE = "Registered nurse, diabetes specialist"


# ---------------------------------------------------------------- helpers


async def healthnode(node: NodeContext, *args: str) -> tuple[int, str, str]:
    """The real `healthnode` command, in a subprocess, on the test node's database."""
    env = {k: v for k, v in os.environ.items() if k not in (DATABASE_URL_ENV, BLOCKED_DOMAINS_ENV)}
    env["PYTHONPATH"] = str(REPO_ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web.cli", *args,
        "--data-dir", str(node.settings.data_dir),
        "--database-url", node.settings.resolved_database_url,
        env=env, cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def add_member(node: NodeContext, username: str, admin: bool = False) -> int:
    async with node.transaction() as session:
        member = await members.create_member(
            session, node.passwords, node.settings.limits, username=username,
            password=DEFAULT_PASSWORD, display_name=username.title(), now=node.clock.now(),
            is_admin=admin,
        )  # fmt: skip
        return member.id


async def audit(node: NodeContext, action: ModAction) -> list[ModerationLogEntry]:
    async with node.transaction(reading=True) as session:
        return list(
            await session.scalars(
                select(ModerationLogEntry)
                .where(ModerationLogEntry.action == action.value)
                .order_by(ModerationLogEntry.id)
            )
        )


async def badge(node: NodeContext, member_id: int) -> professionals.Badge | None:
    async with node.transaction(reading=True) as session:
        return await professionals.badge_of(session, member_id, node.clock.now())


async def verification_rows(node: NodeContext) -> int:
    async with node.transaction(reading=True) as session:
        return int(
            await session.scalar(select(func.count()).select_from(ProfessionalVerification)) or 0
        )


# ---------------------------------------------------------------- the command


async def test_member_verify_and_unverify_commands(make_node: NodeFactory) -> None:
    node = await make_node("cli")
    nurse = await add_member(node, "nurse")

    # When an operator verifies a member with an expiry
    code, out, err = await healthnode(
        node, "member", "verify", "nurse", "--title", TITLE, "--expires", "2099-12-31"
    )
    # Then it is done, said in one line, and logged
    assert code == 0, err
    assert out.strip() == f"verified nurse as {TITLE!r} until 2099-12-31"
    shown = await badge(node, nurse)
    assert shown is not None and shown.kind is BadgeKind.LOCAL and shown.title == TITLE
    assert shown.expires_at is not None and shown.expires_at.isoformat().startswith("2100-01-01")
    logged = await audit(node, ModAction.VERIFY_PROFESSIONAL)
    assert [(e.member_id, e.actor_label, e.group_id) for e in logged] == [
        (nurse, "command line", None)
    ]
    assert TITLE in logged[0].reason

    # When the member, the date or the title is wrong
    for args, reason in (
        (("verify", "nobody", "--title", "Doctor"), "no member 'nobody'"),
        (("verify", "nurse", "--title", "Doctor", "--expires", "2099-13-01"), "YYYY-MM-DD"),
        (("verify", "nurse", "--title", "Doctor", "--expires", "31/12/2099"), "YYYY-MM-DD"),
        (("verify", "nurse", "--title", "Doctor", "--expires", "2020-01-01"), "has passed"),
        (("verify", "nurse", "--title", "   "), "professional title"),
        (("unverify", "nobody"), "no member 'nobody'"),
    ):
        code, out, err = await healthnode(node, "member", *args)
        # Then each is refused with one clear line, and nothing changes
        assert code == 1, (args, out, err)
        assert len(err.splitlines()) == 1 and err.startswith("healthnode: "), err
        assert reason in err, (args, err)
    code, _, err = await healthnode(node, "member", "verify", "nurse")
    assert code == 2 and "--title" in err
    assert (await badge(node, nurse)) == shown
    assert len(await audit(node, ModAction.VERIFY_PROFESSIONAL)) == 1

    # When the operator revokes it
    code, out, err = await healthnode(node, "member", "unverify", "nurse")
    # Then nothing is shown any more, and the revocation is logged
    assert code == 0, err
    assert out.strip() == "revoked the verification of nurse"
    assert await badge(node, nurse) is None
    assert [e.member_id for e in await audit(node, ModAction.UNVERIFY_PROFESSIONAL)] == [nurse]
    # And revoking again says so, logs nothing and does not fail a script
    code, out, _ = await healthnode(node, "member", "unverify", "nurse")
    assert code == 0 and out.strip() == "nurse had no current verification"
    assert len(await audit(node, ModAction.UNVERIFY_PROFESSIONAL)) == 1


# ---------------------------------------------------------------- the admins' page, pages


async def test_admin_page_verifies_revokes_and_lists_trusted_verifiers(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await add_member(node, "admin", admin=True)
    nurse = await add_member(node, "nurse")
    outsider = await browser_factory()
    await outsider.login("nurse")
    admin = await browser_factory()
    await admin.login("admin")

    # Only admins see the page, or can post to it
    assert (await outsider.get("/admin/professionals")).status == 404
    page = await outsider.post("/admin/professionals/verify", {"username": "nurse", "title": "X"})
    assert page.status == 404 and await badge(node, nurse) is None

    # Mistakes are shown on the page, nothing is written
    await admin.get("/admin/professionals")
    for fields, message in (
        ({"username": "ghost", "title": "Doctor"}, "There is no member 'ghost' on this node."),
        ({"username": "nurse", "title": ""}, "Give the professional title"),
        ({"username": "nurse", "title": "Doctor", "expires": "tomorrow"}, "is not a date"),
        ({"username": "nurse", "title": "Doctor", "expires": "2001-01-01"}, "has passed"),
        ({"username": "nurse", "title": "x" * 121}, "at most 120 characters"),
    ):
        page = await admin.post("/admin/professionals/verify", {"expires": "", **fields})
        assert page.status == 400, page.text[:300]
        assert message in page.text, (fields, page.text[:600])
    page = await admin.post("/admin/professionals/verifiers", {"domain": "https://a.example/"})
    assert page.status == 400 and "give the host name alone" in page.text
    page = await admin.post("/admin/professionals/verify", {"username": "nurse", "title": "Doctor",
                                                            "csrf_token": "stale"})  # fmt: skip
    assert page.status == 400 and "nothing was saved" in page.text
    assert await verification_rows(node) == 0

    # An admin verifies a member and trusts a partner's verifications
    page = await admin.post(
        "/admin/professionals/verify",
        {"username": "nurse", "title": TITLE, "expires": "2099-06-30"},
    )
    assert page.status == 200 and page.path == "/admin/professionals"
    page = await admin.post("/admin/professionals/verifiers", {"domain": "Partner.Example"})
    assert page.status == 200
    assert "Revoke the verification of nurse" in page.text and TITLE in page.text
    assert "Stop trusting partner.example" in page.text
    logged = await audit(node, ModAction.VERIFY_PROFESSIONAL)
    assert [(e.member_id, e.actor_label) for e in logged] == [(nurse, "admin")]
    assert [e.reason for e in await audit(node, ModAction.TRUST_VERIFIER)] == ["partner.example"]
    profile = await outsider.get("/u/nurse")
    assert f"Verified: {TITLE} (by this node)" in profile.text

    # And then revokes it and stops trusting the partner
    page = await admin.post("/admin/professionals/unverify", {"username": "nurse"})
    page = await admin.post("/admin/professionals/verifiers/remove", {"domain": "partner.example"})
    assert page.status == 200
    assert "No member of this node is verified." in page.text
    assert "No server's verifications are trusted yet." in page.text
    assert "Verified:" not in (await outsider.get("/u/nurse")).text
    assert len(await audit(node, ModAction.UNVERIFY_PROFESSIONAL)) == 1
    assert len(await audit(node, ModAction.DISTRUST_VERIFIER)) == 1


async def test_thread_and_group_pages_show_every_badge_with_one_query(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    # Given a group where two verified members and one unverified member post
    for name in ("ana", "ben", "cy"):
        await add_member(node, name)
    author = await browser_factory()
    await author.login("ana")
    await author.get("/groups/new")
    page = await author.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1", "visibility": "public"}
    )
    assert page.path == "/g/t1d", page.text[:300]
    page = await author.post("/g/t1d/new", {"title": "Pumps", "body": "Which pump?"})
    assert page.status == 200, page.text[:300]
    thread_path = page.path
    for name in ("ben", "cy"):
        other = await browser_factory()
        await other.login(name)
        await other.post("/g/t1d/join")
        await other.get(thread_path)
        reply = await other.post(f"{thread_path}/reply", {"body": f"{name} here", "parent": ""})
        assert reply.status == 200, reply.text[:300]
    now = node.clock.now()
    async with node.transaction() as session:
        for name, title in (("ana", "Diabetes nurse"), ("ben", "Endocrinologist")):
            await professionals.verify_member(
                session, name, title=title, expires_at=None, now=now, actor_label="test"
            )

    # When the thread page is read, counting the statements that read verifications
    with statements_of(node, requests_only=True) as seen:
        page = await author.get(thread_path)
    statements = [statement for statement in seen if "professional_verifications" in statement]

    # Then each verified author's badge is beside their post, from one query
    assert page.status == 200
    text = page.text
    assert "Verified: Diabetes nurse (by this node)" in text
    assert "Verified: Endocrinologist (by this node)" in text
    assert text.count("Verified:") == 2  # cy has none
    assert len(statements) == 1, statements
    # And the group's list of threads names its author with her badge too
    group_page = await author.get("/g/t1d")
    assert "Verified: Diabetes nurse (by this node)" in group_page.text


# ---------------------------------------------------------------- two real nodes


@pytest.fixture
async def pair(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    """The hospital (127.0.0.1) reads members of the clinic (`localhost`), which verifies."""
    hospital = await start_node(make_node, "hospital")
    port = free_port()
    node = await make_node("clinic", domain=f"localhost:{port}")
    recorder = Recorder()
    server = TestServer(
        create_app(node, trace_configs=[recorder.trace_config()]), host="127.0.0.1", port=port
    )
    await server.start_server()
    clinic = RunningNode("clinic", node, server, recorder)
    yield hospital, clinic
    await clinic.close()
    await hospital.close()


async def registered(node: RunningNode, username: str) -> Browser:
    browser = await node.browser()
    await browser.register(username)
    return browser


async def test_verification_and_revocation_are_seen_on_a_second_node(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, clinic = pair
    # Given a public group on the hospital's node, and its admin
    nurse = await registered(hospital, "nurse")
    await nurse.get("/groups/new")
    page = await nurse.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1", "visibility": "public"}
    )
    assert page.path == "/g/t1d"
    await add_member(hospital.node, "boss", admin=True)
    boss = await hospital.browser()
    await boss.login("boss")

    # And cal, of the clinic, who follows it and starts a thread there
    cal = await registered(clinic, "cal")
    await cal.get("/authorize_interaction")
    page = await cal.post("/groups/follow", {"handle": f"t1d@{hospital.domain}"})
    assert page.status == 200, page.text[:300]

    await eventually(lambda: cal_follows(clinic), "the hospital's Accept on the clinic")
    page = await cal.post(f"/g/t1d@{hospital.domain}/new", {"title": "Insulin", "body": "Q?"})
    assert page.status == 200, page.text[:300]

    async def thread_id() -> str | None:
        async with hospital.node.transaction(reading=True) as session:
            return await session.scalar(select(Thread.id).where(Thread.title == "Insulin"))

    thread_path = f"/t/{await eventually(thread_id, 'the thread on the hospital')}"
    reader = await hospital.browser()

    async def thread_text() -> str:
        return (await reader.get(thread_path)).text

    assert "Verified" not in await thread_text()

    # When the clinic's admins verify cal
    clinic_now = clinic.node.clock.now()
    async with clinic.node.transaction() as session:
        await professionals.verify_member(
            session, "cal", title=TITLE, expires_at=None, now=clinic_now, actor_label="test"
        )

    # Then the hospital, which does not trust the clinic yet, shows an unconfirmed claim
    claim = f"Unconfirmed claim: {TITLE} (said by localhost; this node has not checked it)"

    async def shows(words: str) -> bool:
        return words in await thread_text()

    await eventually(lambda: shows(claim), "the claim on the hospital's thread page")
    assert f"Verified: {TITLE}" not in await thread_text()

    # When the hospital's admin trusts the clinic's verifications
    await boss.get("/admin/professionals")
    page = await boss.post("/admin/professionals/verifiers", {"domain": "localhost"})
    assert page.status == 200
    # Then the badge reads as verified by the clinic, never as the hospital's own
    text = await thread_text()
    assert f"Verified: {TITLE} (by localhost)" in text
    assert "(by this node)" not in text and "Unconfirmed" not in text

    # When the clinic revokes it, the hospital shows nothing, through the actor's Update
    async with clinic.node.transaction() as session:
        assert await professionals.unverify_member(
            session, "cal", now=clinic.node.clock.now(), actor_label="test"
        )
    await eventually(lambda: _not(shows("Verified:")), "the revocation on the hospital")
    assert "Unconfirmed" not in await thread_text()

    # When the clinic verifies cal again until tomorrow, and tomorrow comes
    async with clinic.node.transaction() as session:
        await professionals.verify_member(
            session, "cal", title="Midwife", expires_at=clinic.node.clock.now() + timedelta(days=1),
            now=clinic.node.clock.now(), actor_label="test",
        )  # fmt: skip
    await eventually(lambda: shows("Verified: Midwife (by localhost)"), "the new verification")
    for running in pair:  # both clocks, so that signatures' dates stay acceptable
        running.node.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    await clinic.federation.housekeeping.drain()

    # Then its housekeeping announces the expiry: the hospital reads the clinic's document
    # again, which no longer carries the verification, and forgets the claim
    async def claim_kept() -> bool:
        async with hospital.node.transaction(reading=True) as session:
            remote_cal = await member_by_iri(session, f"{clinic.base_url}/u/cal")
            assert remote_cal is not None
            return await session.get(ProfessionalVerification, remote_cal.id) is not None

    await eventually(lambda: _not(claim_kept()), "the expiry's Update read on the hospital")
    assert "Midwife" not in await thread_text()
    assert len(await audit(clinic.node, ModAction.VERIFY_PROFESSIONAL)) == 2


async def cal_follows(clinic: RunningNode) -> bool:
    """Whether the clinic's cal is an active member of the hospital's group (the Accept)."""
    async with clinic.node.transaction(reading=True) as session:
        return bool(
            await session.scalar(
                select(func.count())
                .select_from(Membership)
                .join(Member, Member.id == Membership.member_id)
                .where(Member.username == "cal", Membership.state == "active")
            )
        )


async def _not(check: Any) -> bool:
    return not await check


# ---------------------------------------------------------------- claims read from actors


def with_claim(document: dict[str, Any], verifier: str | None, title: str) -> dict[str, Any]:
    document = dict(document)
    document["@context"] = [*document["@context"], {
        "healthnode": "urn:healthnode:ns#",
        "verifiedProfessional": "healthnode:verifiedProfessional",
        "title": "healthnode:title", "verifier": "healthnode:verifier",
    }]  # fmt: skip
    document["attachment"] = [
        {"type": "PropertyValue", "name": "Verified professional", "value": title}
    ]
    if verifier is not None:
        document["verifiedProfessional"] = {"title": title, "verifier": verifier}
    return document


async def test_only_the_actors_own_domain_counts_as_verifier(
    make_node: NodeFactory, remote: FakeRemote
) -> None:
    running = await start_node(make_node, "hospital")
    node = running.node
    try:
        directory = running.federation.directory
        mallory = remote.actor("mallory")

        async def read_actor() -> professionals.Badge | None:
            async with node.transaction() as session:
                await directory.fetch_actor(session, mallory, node.clock.now())
                member = await member_by_iri(session, mallory)
                assert member is not None
                return await professionals.badge_of(session, member.id, node.clock.now())

        base = remote.actor_document("mallory")
        # An actor that says another server verified it: nothing is kept or shown
        remote.documents["/users/mallory"] = with_claim(base, "hospital.example", "Surgeon")
        remote.keys.pop("mallory")  # answered from `documents` now
        assert await read_actor() is None
        assert await verification_rows(node) == 0
        # A profile field alone, which anyone can write, is no verification
        remote.documents["/users/mallory"] = with_claim(base, None, "Verified surgeon")
        assert await read_actor() is None
        assert await verification_rows(node) == 0
        # Its own server's verification is a claim until this node trusts that server
        remote.documents["/users/mallory"] = with_claim(base, "127.0.0.1", "Surgeon")
        shown = await read_actor()
        assert shown is not None and shown.kind is BadgeKind.CLAIMED and not shown.confirmed
        async with node.transaction() as session:
            await professionals.trust_verifier(session, "127.0.0.1", now=node.clock.now())
        shown = await read_actor()
        assert shown is not None and shown.kind is BadgeKind.TRUSTED
        assert shown.verifier_domain == "127.0.0.1" and shown.title == "Surgeon"
        # And a document without the term ends the claim
        remote.documents["/users/mallory"] = base
        assert await read_actor() is None
        assert await verification_rows(node) == 0
    finally:
        await running.close()


async def test_the_actor_document_carries_the_verification(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await add_member(node, "nurse")
    async with node.transaction() as session:
        await professionals.verify_member(
            session, "nurse", title=TITLE, now=node.clock.now(), actor_label="test",
            expires_at=node.clock.now() + timedelta(days=30),
        )  # fmt: skip
    browser = await browser_factory()
    async with browser.client.get(
        "/u/nurse", headers={"Accept": "application/activity+json"}
    ) as response:
        assert response.status == 200
        document = await response.json(content_type=None)
    domain = node.settings.domain.split(":")[0]
    assert document["attachment"] == [
        {"type": "PropertyValue", "name": "Verified professional",
         "value": f"{TITLE} — verified by {domain}"}
    ]  # fmt: skip
    claim = document["verifiedProfessional"]
    assert claim["title"] == TITLE and claim["verifier"] == domain
    assert claim["verifiedAt"] and claim["endTime"]
    terms = document["@context"][-1]
    assert terms["verifiedProfessional"] == "healthnode:verifiedProfessional"
    assert terms["healthnode"] == "urn:healthnode:ns#"


async def test_an_anonymous_post_shows_no_badge(
    node: NodeContext, browser_factory: BrowserFactory
) -> None:
    # Given a verified member of a private group, where anonymous posts are allowed
    ana = await add_member(node, "ana")
    now = node.clock.now()
    async with node.transaction() as session:
        group = await groups.create_group(
            session, node.settings.limits, owner_id=ana, slug="ignored", name="HIV",
            private=True, now=now,
        )  # fmt: skip
        await professionals.verify_member(
            session, "ana", title="Nurse", expires_at=None, now=now, actor_label="test"
        )
    author = await browser_factory()
    await author.login("ana")
    # When she starts a thread anonymously, then replies under her name
    await author.get(f"/g/{group.slug}/new")
    page = await author.post(
        f"/g/{group.slug}/new", {"title": "Telling", "body": "Hidden", "anonymous": "yes"}
    )
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
    # Then the anonymous post carries no badge, which would point at her
    assert "Anonymous member" in page.text and "Verified" not in page.text
    page = await author.post(f"{page.path}/reply", {"body": "Named", "parent": ""})
    assert page.text.count("Verified: Nurse (by this node)") == 1


async def test_erasing_an_account_takes_its_verification_with_it(node: NodeContext) -> None:
    nurse = await add_member(node, "nurse")
    async with node.transaction() as session:
        await professionals.verify_member(
            session, "nurse", title=TITLE, expires_at=None, now=node.clock.now(),
            actor_label="test",
        )  # fmt: skip
    assert await verification_rows(node) == 1
    async with node.transaction() as session:
        await erase_local_account(
            session, nurse, node.clock.now(), ErasureRequest.ADMIN, "command line"
        )
    assert await verification_rows(node) == 0


async def test_servers_that_received_a_members_posts_are_told(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, clinic = pair
    # Given cal's public group on the clinic, followed from the hospital, where cal posts
    cal = await registered(clinic, "cal")
    await cal.get("/groups/new")
    page = await cal.post("/groups/new", {"slug": "pumps", "name": "Pumps", "visibility": "public"})
    assert page.path == "/g/pumps"
    reader = await registered(hospital, "rita")
    await reader.get("/authorize_interaction")
    page = await reader.post("/groups/follow", {"handle": f"pumps@{clinic.domain}"})
    assert page.status == 200, page.text[:300]

    async def rita_follows() -> bool:
        async with clinic.node.transaction(reading=True) as session:
            return bool(
                await session.scalar(
                    select(func.count())
                    .select_from(Membership)
                    .join(Member, Member.id == Membership.member_id)
                    .where(Member.domain != "", Membership.state == "active")
                )
            )

    await eventually(rita_follows, "rita's follow accepted on the clinic")
    page = await cal.post("/g/pumps/new", {"title": "Basal rates", "body": "Mine are..."})
    assert page.status == 200, page.text[:300]

    async def thread_id() -> str | None:
        async with hospital.node.transaction(reading=True) as session:
            return await session.scalar(select(Thread.id).where(Thread.title == "Basal rates"))

    thread_path = f"/t/{await eventually(thread_id, 'the thread on the hospital')}"

    # When the clinic verifies cal, who belongs to no group on the hospital's node
    async with clinic.node.transaction() as session:
        await professionals.verify_member(
            session, "cal", title="Dietitian", expires_at=None, now=clinic.node.clock.now(),
            actor_label="test",
        )  # fmt: skip

    # Then the hospital, which received cal's posts, is sent the Update and shows the claim
    async def shows_claim() -> bool:
        text = (await reader.get(thread_path)).text
        return "Unconfirmed claim: Dietitian (said by localhost;" in text

    await eventually(shows_claim, "the claim on the hospital's copy of the thread")
