"""Three real nodes over HTTP on loopback: a hospital, a charity and a clinic (FEP-1b12)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from federation.actors import KEY_REFETCH_INTERVAL
from node.storage.models import Member, Membership, Post, Reaction, RemoteKey, Thread
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
        "/groups/new",
        {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public",
         "description": "Living with type 1"},
    )  # fmt: skip
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

    # And what the group published no longer carries the deleted text
    reader = await hospital.browser()
    async with reader.client.get(
        "/g/t1d/outbox?page=1", headers={"Accept": "application/activity+json"}
    ) as response:
        outbox = await response.text()
    assert "Every week, sadly." in outbox  # the reply is still there
    assert "anyone else" not in outbox and "Anyone **else**" not in outbox

    # And the followers see it in their feed at home, with the group described in plain text
    home = await cal.get("/")
    assert "Recent in your groups" in home.text and "(deleted)" in home.text
    assert "Night hypos" not in home.text  # a deleted opening post takes its title along
    assert "Living with type 1" in home.text and "&lt;p&gt;" not in home.html

    # Then every node shows the same conversation
    for node, thread_id in (
        (hospital, hospital_thread),
        (charity, charity_thread),
        (clinic, clinic_thread),
    ):
        reader = await node.browser()
        page = await reader.get(f"/t/{thread_id}")
        assert page.status == 200, (node.name, page.text[:300])
        assert "(deleted)" in page.text and "Night hypos" not in page.text, node.name
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


async def create_group(browser: Browser, slug: str, name: str, visibility: str) -> str:
    """The new group's address: `slug`, or for a private group a random one."""
    await browser.get("/groups/new")
    page = await browser.post(
        "/groups/new",
        {"slug": slug, "name": name, "visibility": visibility, "join_policy": "invite"},
    )
    assert page.status == 200 and page.path.startswith("/g/"), page.text[:300]
    assert (page.path == f"/g/{slug}") == (visibility == "public"), page.path
    return page.path.removeprefix("/g/")


async def settled(nodes: tuple[RunningNode, ...]) -> bool:
    """No delivery waits and no incoming item waits on any node."""
    from node.storage.models import Delivery, InboxItem

    for running in nodes:
        queued = await one(
            running,
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.state.in_(("queued", "in_flight"))),
        )
        waiting = await one(
            running,
            select(func.count()).select_from(InboxItem).where(InboxItem.state == "queued"),
        )
        if queued or waiting:
            return False
    return True


async def test_nothing_of_a_private_group_ever_leaves_its_node(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, charity, clinic = trio
    # Given a hospital member who runs a public group and a private one
    owner = await registered(hospital, "nurse")
    await create_group(owner, "t1d", "Type 1 diabetes", "public")
    hush = await create_group(owner, "hush", "Quiet condition", "private")
    secretive = await registered(hospital, "secretive")
    await owner.get(f"/g/{hush}/moderation")
    await owner.post(f"/g/{hush}/moderation/invite", {"username": "secretive"})
    assert (await secretive.post(f"/g/{hush}/join")).status == 200

    # And members elsewhere who follow the public group
    bea = await registered(charity, "bea")
    cal = await registered(clinic, "cal")
    await follow(bea, f"t1d@{hospital.domain}")
    await follow(cal, f"t1d@{hospital.domain}")
    for node in (charity, clinic):
        await eventually(lambda node=node: _active_follow(node), f"the Accept on {node.name}")

    # When the private group is busy, and the public one too
    for author in (owner, secretive):
        page = await author.post(
            f"/g/{hush}/new", {"title": "Private matters", "body": "Only for us, please."}
        )
        assert page.status == 200, page.text[:300]
        await author.post(f"{page.path}/reply", {"body": "Only for us, indeed."})
        first = await one(hospital, select(Post.id).where(Post.source == "Only for us, please."))
        await author.post(f"/p/{first}/helpful", {"helpful": "yes"})
    page = await owner.post("/g/t1d/new", {"title": "Public hello", "body": "Welcome all."})
    assert page.status == 200
    await bea.get(f"/g/t1d@{hospital.domain}/new")
    await bea.post(f"/g/t1d@{hospital.domain}/new", {"title": "From the charity", "body": "Hi."})

    # And someone elsewhere tries to reach the private group by its address
    page = await cal.post("/groups/follow", {"handle": f"hush@{hospital.domain}"})
    assert page.status == 400
    assert "could not be found" in page.text

    async def public_copies() -> bool:
        count = await one(
            clinic, select(func.count()).select_from(Thread).where(Thread.title != "")
        )
        return count >= 2 and await settled(trio)

    await eventually(public_copies, "the public threads on the clinic, and quiet queues")

    # Then no request any node sent carries a private title, text, slug, or member handle
    secrets = ["hush", hush, "Quiet condition", "Private matters", "Only for us", "secretive"]
    typed_lookup = f"/.well-known/webfinger?resource=acct:hush@{hospital.domain}"
    sent = [
        request
        for node in trio
        for request in node.recorder.requests
        # cal's own look-up of the name cal typed is cal's node asking, not a leak
        if not (node is clinic and request.url.endswith(typed_lookup))
    ]
    assert hospital.recorder.requests, "the hospital sent nothing at all"
    assert any(b"Public hello" in request.body for request in sent), "nothing public was sent"
    for request in sent:
        blob = request.url + request.body.decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in blob, f"{secret!r} left a node in {request.method} {request.url}"
    # And the other nodes hold no trace of it either
    for node in (charity, clinic):
        assert not await one(
            node, select(func.count()).select_from(Thread).where(Thread.title == "Private matters")
        )


async def test_a_banned_remote_member_is_blocked_and_a_leaving_one_unfollows(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, charity, clinic = trio
    owner = await registered(hospital, "nurse")
    await create_group(owner, "t1d", "Type 1 diabetes", "public")
    bea = await registered(charity, "bea")
    cal = await registered(clinic, "cal")
    group_path = f"/g/t1d@{hospital.domain}"
    await follow(bea, f"t1d@{hospital.domain}")
    await follow(cal, f"t1d@{hospital.domain}")
    for node in (charity, clinic):
        await eventually(lambda node=node: _active_follow(node), f"the Accept on {node.name}")

    # When the owner bans bea from the group
    await owner.get("/g/t1d/moderation")
    fields = {"username": f"bea@{charity.domain}", "reason": "Spam", "confirm": "yes"}
    page = await owner.post("/g/t1d/moderation/ban", fields)
    assert page.status == 200, page.text[:300]

    # Then the charity's node learns of the Block, and bea can no longer post there
    async def banned_on_charity() -> Any:
        return await one(
            charity,
            select(func.count()).select_from(Membership).where(Membership.state == "banned"),
        )

    await eventually(banned_on_charity, "the Block on the charity")
    page = await bea.post(f"{group_path}/new", {"title": "Still here?", "body": "Hello?"})
    assert page.status in (403, 404)
    # And a Create she sends anyway is refused by the group and never announced
    assert not await one(
        hospital, select(func.count()).select_from(Thread).where(Thread.title == "Still here?")
    )

    # When cal leaves the group from the clinic
    page = await cal.post(f"{group_path}/leave")
    assert page.status == 200

    # Then the hospital's group no longer counts the clinic's member
    async def cal_gone() -> bool:
        remaining = await one(
            hospital,
            select(func.count())
            .select_from(Membership)
            .join(Member, Member.id == Membership.member_id)
            .where(Member.username == "cal"),
        )
        return remaining == 0

    await eventually(cal_gone, "the Undo{Follow} on the hospital")


async def test_a_rotated_group_key_is_picked_up_by_followers(
    trio: tuple[RunningNode, ...],
) -> None:
    from federation.keyrotation import rotate_key
    from tests.keypool import pooled_key_pair

    hospital, charity, _clinic = trio
    owner = await registered(hospital, "nurse")
    await create_group(owner, "t1d", "Type 1 diabetes", "public")
    bea = await registered(charity, "bea")
    await follow(bea, f"t1d@{hospital.domain}")
    await eventually(lambda: _active_follow(charity), "the Accept on the charity")
    group_iri = f"{hospital.base_url}/g/t1d"
    old_key = await one(
        charity, select(RemoteKey.public_pem).where(RemoteKey.actor_iri == group_iri)
    )
    assert old_key
    # And more than a minute has passed on the charity since it fetched that key (a key is
    # fetched again at most once a minute, federation/actors.py)
    charity.node.clock.advance(KEY_REFETCH_INTERVAL + timedelta(seconds=1))

    # When the hospital rotates the group's key (its Update goes to the followers)
    async with hospital.node.transaction() as session:
        await rotate_key(
            session, hospital.federation.outbox, "t1d", hospital.node.secret,
            pooled_key_pair, hospital.node.clock,
        )  # fmt: skip
    hospital.federation.delivery_worker.wake()
    page = await owner.post("/g/t1d/new", {"title": "After rotation", "body": "Still us."})
    assert page.status == 200

    # Then the charity verifies the group's announces with the new key
    async def arrived() -> Any:
        return await one(charity, select(Thread.id).where(Thread.title == "After rotation"))

    await eventually(arrived, "the thread signed with the new key")
    new_key = await one(
        charity, select(RemoteKey.public_pem).where(RemoteKey.actor_iri == group_iri)
    )
    assert new_key != old_key


async def test_a_reply_to_a_thread_a_follower_never_saw_fetches_the_thread_first(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, _charity, clinic = trio
    owner = await registered(hospital, "nurse")
    await create_group(owner, "t1d", "Type 1 diabetes", "public")
    # Given a thread started before the clinic's member followed the group
    page = await owner.post("/g/t1d/new", {"title": "Older thread", "body": "From before."})
    thread_path = page.path
    cal = await registered(clinic, "cal")
    await follow(cal, f"t1d@{hospital.domain}")
    await eventually(lambda: _active_follow(clinic), "the Accept on the clinic")
    assert not await one(clinic, select(Thread.id).where(Thread.title == "Older thread"))

    # When someone replies to it
    page = await owner.post(f"{thread_path}/reply", {"body": "A reply, much later."})
    assert page.status == 200

    # Then the clinic fetches the thread it never saw, and applies the reply after it
    async def reply_on_clinic() -> Any:
        return await one(
            clinic, select(Post.thread_id).where(Post.source == "A reply, much later.")
        )

    thread_id = await eventually(reply_on_clinic, "the reply on the clinic")
    title = await one(clinic, select(Thread.title).where(Thread.id == thread_id))
    assert title == "Older thread"
