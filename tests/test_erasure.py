"""Erasing an account: by the member over HTTP (or by withdrawing consent), by an admin with
`healthnode member erase`, and across three real nodes on loopback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from node.erasure import ERASED_NAME, NO_PASSWORD
from node.modlog import ModAction
from node.runtime import NodeContext
from node.storage.models import (
    Base,
    Delivery,
    EmailToken,
    Member,
    Membership,
    ModerationLogEntry,
    OutboxActivity,
    Post,
    Reaction,
    Thread,
)
from tests.browser import Browser
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node
from tests.test_cli import DATABASE_FILE, healthnode, ok

PASSWORD = "correct horse battery"
# What the tombstones and the audit log may keep of an erased member: never their text.
KEPT_TABLES = {"members", "posts", "threads", "moderation_log"}


async def member_named(node: NodeContext, username: str) -> Member:
    async with node.transaction() as session:
        found = (
            await session.execute(select(Member).where(Member.username == username))
        ).scalar_one()
        return found


async def references(node: NodeContext, member_id: int) -> dict[str, int]:
    """Rows of every table that names the member (by a foreign key to members, or the log's
    member column), by table."""
    counts: dict[str, int] = {}
    async with node.transaction() as session:
        for table in Base.metadata.sorted_tables:
            columns = [
                fk.parent
                for fk in table.foreign_keys
                if fk.column.table.name == "members" and fk.column.name == "id"
            ]
            if table.name == "members":
                columns = [table.c.id]
            if table.name == "moderation_log":
                columns.append(table.c.member_id)
            for column in columns:
                found = (
                    await session.execute(
                        select(func.count()).select_from(table).where(column == member_id)
                    )
                ).scalar_one()
                if found:
                    counts[table.name] = counts.get(table.name, 0) + found
    return counts


async def thread_with_reply(amy: Browser, ben: Browser) -> tuple[str, str]:
    """amy's public group and thread, ben's reply, marks both ways: (thread id, amy's post)."""
    await amy.get("/groups/new")
    page = await amy.post(
        "/groups/new",
        {"slug": "t1d", "name": "Type 1", "visibility": "public", "description": "T1D"},
    )
    assert page.path == "/g/t1d", page.text[:300]
    await amy.get("/g/t1d/new")
    page = await amy.post("/g/t1d/new", {"title": "My night hypos", "body": "Amy's own words"})
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
    thread_id = page.path.removeprefix("/t/").split("#")[0]
    assert (await ben.post("/g/t1d/join")).status == 200
    page = await ben.post(f"/t/{thread_id}/reply", {"body": "Ben answers kindly"})
    assert page.status == 200, page.text[:300]
    return thread_id, page.path


async def test_a_member_erases_their_account_after_confirming(
    browser_factory: BrowserFactory, web_node: NodeContext
) -> None:
    # Given amy (with a profile, a group, a thread and a helpful mark) and ben, who replied
    amy, ben = await browser_factory(), await browser_factory()
    await amy.register("amy", display_name="Amy Pond")
    await amy.get("/settings/profile")
    await amy.post("/settings/profile", {"display_name": "Amy Pond", "bio": "Diagnosed 2019"})
    await ben.register("ben")
    thread_id, _ = await thread_with_reply(amy, ben)
    async with web_node.transaction() as session:
        posts = dict((await session.execute(select(Post.source, Post.id))).all())
    page = await amy.post(f"/p/{posts['Ben answers kindly']}/helpful", {"helpful": "yes"})
    assert page.status == 200, page.text[:300]
    amy_post = posts["Amy's own words"]
    page = await ben.post(f"/p/{amy_post}/helpful", {"helpful": "yes"})
    assert page.status == 200, page.text[:300]
    amy_id = (await member_named(web_node, "amy")).id
    async with web_node.transaction() as session:  # a confirmed address and a pending link
        await session.execute(
            update(Member)
            .where(Member.id == amy_id)
            .values(email="amy@example.org", notification_email="daily")
        )
        session.add(
            EmailToken(
                token_hash="0" * 64, member_id=amy_id, purpose="recover",
                email="amy@example.org", created_at=web_node.clock.now(),
            )
        )  # fmt: skip

    # The page explains what happens before anything does
    page = await amy.get("/account/delete")
    assert page.status == 200
    assert "cannot be undone" in page.text and "username stays reserved" in page.text
    # A wrong password is refused, and so is a form without the confirmation
    page = await amy.post("/account/delete", {"password": "not my password", "confirm": "yes"})
    assert page.status == 400 and "not your current password" in page.text
    page = await amy.post("/account/delete", {"password": PASSWORD})
    assert page.status == 400 and "Tick the box" in page.text
    assert (await member_named(web_node, "amy")).erased_at is None

    # When she confirms with her password
    page = await amy.post("/account/delete", {"password": PASSWORD, "confirm": "yes"})
    assert page.status == 200, page.text[:300]

    # Then she is signed out, cannot sign in again, and her name cannot be registered anew
    assert (await amy.get("/account/delete")).path.startswith("/login")
    page = await amy.login("amy")
    assert page.path.startswith("/login"), page.path
    other = await browser_factory()
    await other.get("/register")
    page = await other.post(
        "/register",
        {"username": "amy", "password": PASSWORD, "password_again": PASSWORD, "consent": "yes"},
    )
    assert page.status in (400, 409), page.status
    # And nothing personal remains: only the emptied row, tombstones and the audit entry
    member = await member_named(web_node, "amy")
    assert (member.display_name, member.bio, member.password_hash) == (ERASED_NAME, "", NO_PASSWORD)
    assert member.consent_at is None and member.consent_policy_version is None
    assert (member.email, member.notification_email) == (None, "off")
    async with web_node.transaction() as session:
        tokens = await session.scalar(select(func.count()).select_from(EmailToken))
    assert tokens == 0
    assert member.erased_at is not None
    assert set(await references(web_node, amy_id)) <= KEPT_TABLES
    async with web_node.transaction() as session:
        written = (
            await session.execute(
                select(Post.source, Post.deleted_at).where(Post.author_id == amy_id)
            )
        ).all()
        assert written and all(source == "" and deleted for source, deleted in written)
        titles = (
            await session.execute(select(Thread.title).where(Thread.author_id == amy_id))
        ).all()
        assert all("hypos" not in title for (title,) in titles)
        assert (await session.execute(select(func.count()).select_from(Reaction))).scalar() == 0
    # And ben's reply still reads, under a tombstone that names nobody
    page = await ben.get(f"/t/{thread_id}")
    assert page.status == 200
    assert "Ben answers kindly" in page.text and "This post was deleted." in page.text
    assert "Amy Pond" not in page.text and "@amy" not in page.text
    # And her profile is gone (a gone actor to other servers)
    assert (await ben.get("/u/amy")).status == 404
    page = await ben.get("/u/amy", Accept="application/activity+json")
    assert page.status == 410 and json.loads(page.html)["type"] == "Tombstone"
    domain = web_node.settings.domain
    assert (await ben.get(f"/.well-known/webfinger?resource=acct:amy@{domain}")).status == 404


async def test_the_audit_log_records_the_erasure_without_its_content(
    browser_factory: BrowserFactory, web_node: NodeContext
) -> None:
    # Given amy, who wrote a post
    amy, ben = await browser_factory(), await browser_factory()
    await amy.register("amy", display_name="Amy Pond")
    await ben.register("ben")
    await thread_with_reply(amy, ben)
    amy_id = (await member_named(web_node, "amy")).id
    # When she withdraws her consent, which is explained to lead to the account's deletion
    page = await amy.get("/account/consent/withdraw")
    assert page.status == 200 and "account is deleted" in page.text
    page = await amy.post("/account/consent/withdraw", {"password": PASSWORD, "confirm": "yes"})
    assert page.status == 200, page.text[:300]
    # Then the account is erased, and the log says so with her id and a generic label only
    assert (await member_named(web_node, "amy")).erased_at is not None
    async with web_node.transaction() as session:
        entries = (
            (
                await session.execute(
                    select(ModerationLogEntry).where(
                        ModerationLogEntry.action == ModAction.ERASE_ACCOUNT.value
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(entries) == 1
    entry = entries[0]
    assert entry.member_id == amy_id and entry.group_id is None and entry.actor_id is None
    assert entry.reason == "account erased at the member's request"
    kept = f"{entry.actor_label} {entry.reason} {entry.post_id} {entry.thread_id}"
    for content in ("amy", "Amy Pond", "hypos", "Amy's own words"):
        assert content not in kept


def test_an_admin_erases_an_account_from_the_command_line(tmp_path: Path) -> None:
    # Given a data dir with alice (an admin) and bob
    data_dir = tmp_path / "data"
    password = tmp_path / "password.txt"
    password.write_text(PASSWORD + "\n", encoding="utf-8")
    for name, extra in (("alice", ["--admin"]), ("bob", ["--display-name", "Bob Dylan"])):
        ok(
            healthnode(
                tmp_path,
                "member",
                "create",
                name,
                "--password-file",
                password,
                "--data-dir",
                data_dir,
                *extra,
            )
        )
    # When the admin erases bob, for a request made in writing
    output = ok(healthnode(tmp_path, "member", "erase", "bob", "--data-dir", data_dir))
    assert output == "erased the account of bob; its username stays reserved"
    # Then bob's row is emptied, and the audit log says an admin did it, without content
    with closing(sqlite3.connect(f"file:{data_dir / DATABASE_FILE}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT id, display_name, bio, password_hash, erased_at FROM members"
            " WHERE username = 'bob'"
        ).fetchone()
        assert row[1:4] == (ERASED_NAME, "", NO_PASSWORD) and row[4] is not None
        log = db.execute(
            "SELECT actor_label, reason, member_id, group_id FROM moderation_log"
            " WHERE action = 'erase_account'"
        ).fetchall()
        assert log == [
            ("command line", "account erased by an admin, request in writing", row[0], None)
        ]
    # Again: nothing to do; an unknown name: one line, exit 1
    again = ok(healthnode(tmp_path, "member", "erase", "bob", "--data-dir", data_dir))
    assert again == "the account of bob was already erased"
    unknown = healthnode(tmp_path, "member", "erase", "nobody", "--data-dir", data_dir)
    assert unknown.returncode == 1
    assert unknown.error_line() == "healthnode: there is no member nobody"


# ---------------------------------------------------------------- three nodes


@pytest.fixture
async def trio(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, ...]]:
    nodes = [await start_node(make_node, name) for name in ("home", "host", "reader")]
    yield tuple(nodes)
    for running in nodes:
        await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def registered(node: RunningNode, username: str, display_name: str = "") -> Browser:
    browser = await node.browser()
    await browser.register(username, display_name=display_name)
    return browser


async def follow(browser: Browser, handle: str) -> None:
    await browser.get("/authorize_interaction")
    page = await browser.post("/groups/follow", {"handle": handle})
    assert page.status == 200, page.text[:500]


async def test_an_erasure_federates_to_the_group_and_its_followers(
    trio: tuple[RunningNode, ...],
) -> None:
    home, host, reader = trio
    # Given a public group on `host`, followed from `reader` (cal) and from `home` (amy)
    owner = await registered(host, "nurse")
    await owner.get("/groups/new")
    page = await owner.post(
        "/groups/new",
        {"slug": "t1d", "name": "Type 1", "visibility": "public", "description": "T1D"},
    )
    assert page.path == "/g/t1d"
    handle = f"t1d@{host.domain}"
    amy = await registered(home, "amy", display_name="Amy Pond")
    cal = await registered(reader, "cal")
    await follow(cal, handle)
    await follow(amy, handle)

    async def followers() -> bool:
        count = await one(
            host,
            select(func.count())
            .select_from(Membership)
            .join(Member, Member.id == Membership.member_id)
            .where(Membership.state == "active", Member.domain != ""),
        )
        return bool(count >= 2)

    await eventually(followers, "two remote followers")
    for node in (home, reader):
        await eventually(
            lambda node=node: one(
                node,
                select(func.count()).select_from(Membership).where(Membership.state == "active"),
            ),
            f"the Accept on {node.name}",
        )
    # And amy starts a thread from home, and cal replies to it from reader
    page = await amy.post(f"/g/{handle}/new", {"title": "Night hypos", "body": "Amy's own words"})
    assert page.status == 200, page.text[:300]

    async def thread_on(node: RunningNode) -> Any:
        return await one(node, select(Thread.id).where(Thread.title == "Night hypos"))

    await eventually(lambda: thread_on(host), "the thread on host")
    reader_thread = await eventually(lambda: thread_on(reader), "the thread on reader")
    page = await cal.post(f"/t/{reader_thread}/reply", {"body": "Cal answers kindly"})
    assert page.status == 200, page.text[:300]
    for node in (host, home):
        await eventually(
            lambda node=node: one(node, select(Post.id).where(Post.source == "Cal answers kindly")),
            f"the reply on {node.name}",
        )
    amy_iri = f"{home.base_url}/u/amy"
    for node in (host, reader):
        remote_amy = await one(node, select(Member.display_name).where(Member.actor_iri == amy_iri))
        assert remote_amy == "Amy Pond", (node.name, remote_amy)

    # When amy erases her account at home
    await amy.get("/account/delete")
    page = await amy.post("/account/delete", {"password": PASSWORD, "confirm": "yes"})
    assert page.status == 200, page.text[:300]

    # Then home sends Delete{Person}, signed with her key, to where her things went
    deletes = await one(
        home,
        select(func.count())
        .select_from(OutboxActivity)
        .where(OutboxActivity.type == "Delete", OutboxActivity.object_type == ""),
    )
    assert deletes == 1
    assert await one(
        home,
        select(func.count())
        .select_from(Delivery)
        .join(OutboxActivity, OutboxActivity.id == Delivery.activity_id)
        .where(OutboxActivity.type == "Delete", Delivery.inbox_url.startswith(host.base_url)),
    )

    # And host and reader keep only tombstones of what she wrote, and nothing of her profile
    async def erased_on(node: RunningNode) -> bool:
        async with node.node.transaction() as session:
            member = (
                await session.execute(select(Member).where(Member.actor_iri == amy_iri))
            ).scalar_one()
            written = (
                await session.execute(
                    select(Post.source, Post.deleted_at).where(Post.author_id == member.id)
                )
            ).all()
            memberships = (
                await session.execute(
                    select(func.count())
                    .select_from(Membership)
                    .where(Membership.member_id == member.id)
                )
            ).scalar()
        return (
            bool(written)
            and all(source == "" and deleted is not None for source, deleted in written)
            and member.display_name != "Amy Pond"
            and member.bio == ""
            and memberships == 0
        )

    for node in (host, reader):
        await eventually(lambda node=node: erased_on(node), f"the erasure on {node.name}")
    # And the thread still reads on reader, with cal's reply
    page = await cal.get(f"/t/{reader_thread}")
    assert page.status == 200
    assert "Cal answers kindly" in page.text and "Amy's own words" not in page.text
    assert "Amy Pond" not in page.text
