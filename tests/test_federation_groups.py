"""Three real nodes over HTTP on loopback: a hospital, a charity and a clinic (FEP-1b12)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from node.storage.models import Member, Membership, Post, Reaction, Thread
from tests.browser import Browser
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node


@pytest.fixture
async def trio(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, ...]]:
    nodes = [await start_node(make_node, name) for name in ("hospital", "charity", "clinic")]
    yield tuple(nodes)
    for running in nodes:
        await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def registered(node: RunningNode, username: str) -> Browser:
    browser = await node.browser()
    await browser.register(username)
    return browser


async def follow(browser: Browser, handle: str) -> None:
    await browser.get("/authorize_interaction")
    page = await browser.post("/groups/follow", {"handle": handle})
    assert page.status == 200, page.text[:500]


async def test_remote_members_follow_post_reply_mark_edit_and_delete(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, charity, clinic = trio
    # Given a public group on the hospital's node
    owner = await registered(hospital, "nurse")
    await owner.get("/groups/new")
    page = await owner.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
    )
    assert page.path == "/g/t1d"
    group_handle = f"t1d@{hospital.domain}"
    remote_group_path = f"/g/{group_handle}"

    # When members of the charity and the clinic follow it from their own nodes
    bea = await registered(charity, "bea")
    cal = await registered(clinic, "cal")
    await follow(bea, group_handle)
    await follow(cal, group_handle)

    async def followers() -> int:
        return await one(
            hospital,
            select(func.count())
            .select_from(Membership)
            .join(Member, Member.id == Membership.member_id)
            .where(Membership.state == "active", Member.domain != ""),
        )

    await eventually(lambda: _at_least(followers, 2), "two remote followers")
    for node in (charity, clinic):
        await eventually(lambda node=node: _active_follow(node), f"the Accept on {node.name}")

    # And bea starts a thread from the charity's node
    await bea.get(f"{remote_group_path}/new")
    page = await bea.post(
        f"{remote_group_path}/new", {"title": "Night hypos", "body": "Anyone **else**?"}
    )
    assert page.status == 200, page.text[:500]

    async def thread_on(node: RunningNode) -> Any:
        return await one(node, select(Thread.id).where(Thread.title == "Night hypos"))

    hospital_thread = await eventually(lambda: thread_on(hospital), "the thread on the hospital")
    clinic_thread = await eventually(lambda: thread_on(clinic), "the thread on the clinic")

    # And cal replies from the clinic, to the clinic's copy
    page = await cal.post(f"/t/{clinic_thread}/reply", {"body": "Every week, sadly."})
    assert page.status == 200, page.text[:500]

    async def reply_on(node: RunningNode) -> Any:
        return await one(node, select(Post.id).where(Post.source == "Every week, sadly."))

    for node in (hospital, charity):
        await eventually(lambda node=node: reply_on(node), f"the reply on {node.name}")

    # And the group's owner marks the reply helpful on the hospital
    hospital_reply = await reply_on(hospital)
    page = await owner.post(f"/p/{hospital_reply}/helpful", {"helpful": "yes"})
    assert page.status == 200, page.text[:500]
    for node in (charity, clinic):
        await eventually(
            lambda node=node: one(node, select(func.count()).select_from(Reaction)),
            f"the helpful mark on {node.name}",
        )

    # And bea edits, then deletes, her opening post
    charity_thread = await thread_on(charity)
    charity_first = await one(
        charity, select(Post.id).where(Post.thread_id == charity_thread, Post.parent_id.is_(None))
    )
    page = await bea.post(
        f"/p/{charity_first}/edit",
        {"title": "Night hypos (edited)", "body": "Edited: anyone else?", "content_warning": ""},
    )
    assert page.status == 200, page.text[:500]

    async def edited_on(node: RunningNode) -> Any:
        return await one(node, select(Post.id).where(Post.source == "Edited: anyone else?"))

    for node in (hospital, clinic):
        await eventually(lambda node=node: edited_on(node), f"the edit on {node.name}")
    page = await bea.post(f"/p/{charity_first}/delete")
    assert page.status == 200, page.text[:500]

    async def deleted_on(node: RunningNode) -> Any:
        return await one(
            node,
            select(func.count())
            .select_from(Post)
            .where(Post.deleted_at.is_not(None), Post.parent_id.is_(None)),
        )

    for node in (hospital, clinic):
        await eventually(lambda node=node: deleted_on(node), f"the deletion on {node.name}")

    # Then every node shows the same conversation
    for node, thread_id in (
        (hospital, hospital_thread),
        (charity, charity_thread),
        (clinic, clinic_thread),
    ):
        reader = await node.browser()
        page = await reader.get(f"/t/{thread_id}")
        assert page.status == 200, (node.name, page.text[:300])
        assert "Night hypos (edited)" in page.text, node.name
        assert "This post was deleted." in page.text, node.name
        assert "Every week, sadly." in page.text, node.name
        assert "Helpful (1)" in page.text or "1 found this helpful" in page.text, node.name


async def _at_least(count: Any, minimum: int) -> bool:
    return await count() >= minimum


async def _active_follow(node: RunningNode) -> Any:
    return await one(
        node,
        select(func.count())
        .select_from(Membership)
        .where(Membership.state == "active", Membership.follow_activity_id.is_not(None)),
    )
