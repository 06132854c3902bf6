"""Moderation across servers, between three real nodes over HTTP on loopback: a hospital that
hosts a public group, a charity and a clinic whose members follow it (docs/FEDERATION.md,
"Moderation across servers")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from node import posts, reports
from node.events import GroupUpdated, record
from node.policy import Viewer
from node.storage.models import (
    ConditionGroup,
    InboxItem,
    Member,
    Membership,
    ModerationLogEntry,
    OutboxActivity,
    Post,
    Report,
    Thread,
)
from tests.browser import Browser
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node

AS2_ACCEPT = {"Accept": "application/activity+json"}


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


async def member_id(node: RunningNode, username: str) -> int:
    found = await one(node, select(Member.id).where(Member.username == username))
    assert found is not None
    return int(found)


@dataclass
class Scene:
    """The hospital's public group t1d, owned by nurse; bea (charity) and cal (clinic) follow
    it from home, and bea has started a thread in it."""

    hospital: RunningNode
    charity: RunningNode
    clinic: RunningNode
    nurse: Browser
    bea: Browser
    cal: Browser
    title: str

    @property
    def group_handle(self) -> str:
        return f"t1d@{self.hospital.domain}"

    async def thread_on(self, node: RunningNode) -> str:
        found = await one(node, select(Thread.id).where(Thread.title == self.title))
        assert found is not None, node.name
        return str(found)

    async def opening_on(self, node: RunningNode) -> str:
        thread_id = await self.thread_on(node)
        found = await one(
            node, select(Post.id).where(Post.thread_id == thread_id, Post.parent_id.is_(None))
        )
        return str(found)


async def followed_group_with_a_thread(trio: tuple[RunningNode, ...]) -> Scene:
    hospital, charity, clinic = trio
    nurse = await registered(hospital, "nurse")
    await nurse.get("/groups/new")
    page = await nurse.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
    )
    assert page.path == "/g/t1d", page.text[:300]
    bea = await registered(charity, "bea")
    cal = await registered(clinic, "cal")
    scene = Scene(hospital, charity, clinic, nurse, bea, cal, "Cheap insulin here")
    for browser, node in ((bea, charity), (cal, clinic)):
        await browser.get("/authorize_interaction")
        page = await browser.post("/groups/follow", {"handle": scene.group_handle})
        assert page.status == 200, page.text[:300]

        async def accepted(node: RunningNode = node) -> Any:
            return await one(
                node,
                select(func.count())
                .select_from(Membership)
                .where(Membership.state == "active", Membership.follow_activity_id.is_not(None)),
            )

        await eventually(accepted, f"the Accept on {node.name}")
    page = await bea.post(
        f"/g/{scene.group_handle}/new", {"title": scene.title, "body": "DM me for a deal."}
    )
    assert page.status == 200, page.text[:300]
    for node in (hospital, clinic):
        await eventually(
            lambda node=node: one(node, select(Thread.id).where(Thread.title == scene.title)),
            f"the thread on {node.name}",
        )
    return scene


def sent_flags(node: RunningNode) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for request in node.recorder.requests:
        if request.method == "POST" and request.body:
            document = json.loads(request.body)
            if document.get("type") == "Flag":
                found.append((request.url, document))
    return found


async def test_a_report_on_a_remote_post_reaches_the_group_and_the_author_without_the_reporter(
    trio: tuple[RunningNode, ...],
) -> None:
    scene = await followed_group_with_a_thread(trio)
    hospital, charity, clinic = scene.hospital, scene.charity, scene.clinic
    cal_id = await member_id(clinic, "cal")
    clinic_post = await scene.opening_on(clinic)

    # When cal reports, on the clinic, bea's thread in the hospital's group
    async with clinic.node.transaction() as session:
        await reports.file_report(
            session, category=reports.ReportCategory.SPAM, now=clinic.node.clock.now(),
            group_id=None, post_id=clinic_post, reporter_id=cal_id,
            comment="Selling insulin, a scam.",
        )  # fmt: skip

    # Then the report is in the hospital group's queue, from the clinic, naming nobody
    hospital_post = await scene.opening_on(hospital)
    report = await eventually(
        lambda: one(hospital, select(Report).where(Report.post_id == hospital_post)),
        "the report on the hospital",
    )
    group_id = await one(hospital, select(ConditionGroup.id).where(ConditionGroup.slug == "t1d"))
    assert report.group_id == group_id
    assert report.origin_domain == clinic.domain
    assert report.reporter_id is None and report.flag_activity_id
    assert report.category == "other" and report.comment == "Selling insulin, a scam."
    assert report.state == "open"

    # And on bea's own node, as a report about its member's post (for its admins)
    charity_post = await scene.opening_on(charity)
    at_home = await eventually(
        lambda: one(charity, select(Report).where(Report.post_id == charity_post)),
        "the report on the charity",
    )
    assert at_home.origin_domain == clinic.domain and at_home.reporter_id is None
    assert at_home.group_id is None  # the group is the hospital's: the charity's admins see it

    # And what the clinic sent is Mastodon's Flag: its instance actor, the person and the
    # post, the comment; never the reporter
    flags = sent_flags(clinic)
    assert {url.split("/", 3)[2] for url, _ in flags} == {hospital.domain, charity.domain}
    for _url, flag in flags:
        assert flag["actor"] == f"{clinic.base_url}/actor"
        assert flag["object"] == [
            f"{charity.base_url}/u/bea",
            f"{charity.base_url}/t/{await scene.thread_on(charity)}",
        ]
        assert flag["content"] == "Selling insulin, a scam."
        assert "/u/cal" not in json.dumps(flag)

    # And a report that came as a Flag is not sent on again
    assert not sent_flags(hospital) and not sent_flags(charity)
    assert await one(hospital, select(func.count()).select_from(Report)) == 1


async def test_a_removal_by_the_groups_moderator_removes_the_post_everywhere_with_its_reason(
    trio: tuple[RunningNode, ...],
) -> None:
    scene = await followed_group_with_a_thread(trio)
    hospital, charity, clinic = scene.hospital, scene.charity, scene.clinic
    nurse_id = await member_id(hospital, "nurse")
    openings = {node.name: await scene.opening_on(node) for node in (hospital, charity, clinic)}
    charity_thread = await scene.thread_on(charity)

    # When the group's owner removes bea's thread, with a reason
    async with hospital.node.transaction() as session:
        await posts.delete_post(
            session, Viewer(nurse_id), post_id=openings["hospital"],
            now=hospital.node.clock.now(), reason="Advertising is not allowed here.",
        )  # fmt: skip

    # Then the post is removed on every node that follows the group, the author's too
    for node in (charity, clinic):
        opening = openings[node.name]

        async def removed(node: RunningNode = node, opening: str = opening) -> Any:
            return await one(node, select(Post.deleted_at).where(Post.id == opening))

        await eventually(removed, f"the removal on {node.name}")
        # And each keeps why, in its moderation log of the group
        reason = await one(
            node,
            select(ModerationLogEntry.reason).where(
                ModerationLogEntry.post_id == opening, ModerationLogEntry.action == "remove_post"
            ),
        )
        assert reason == "Advertising is not allowed here.", node.name

    # And the group announced Lemmy's shape: the moderator's Delete of the post's IRI, with
    # the reason in summary
    bodies = [
        json.loads(body)
        for body in (await hospital_outbox(hospital, OutboxActivity.type == "Announce"))
    ]
    deletes = [b["object"] for b in bodies if b["object"].get("type") == "Delete"]
    assert len(deletes) == 1, deletes
    assert deletes[0]["summary"] == "Advertising is not allowed here."
    assert deletes[0]["object"] == f"{charity.base_url}/t/{charity_thread}"
    assert deletes[0]["actor"] == f"{hospital.base_url}/u/nurse"


async def hospital_outbox(node: RunningNode, *where: Any) -> list[str]:
    async with node.node.transaction() as session:
        rows = await session.execute(select(OutboxActivity.body).where(*where))
        return list(rows.scalars())


async def test_a_remote_groups_ban_refuses_the_members_later_posts_there(
    trio: tuple[RunningNode, ...],
) -> None:
    scene = await followed_group_with_a_thread(trio)
    hospital, clinic = scene.hospital, scene.clinic

    # When the hospital's group bans cal
    await scene.nurse.get("/g/t1d/moderation")
    page = await scene.nurse.post("/g/t1d/moderation/ban", {"username": f"cal@{clinic.domain}"})
    assert page.status == 200, page.text[:300]

    # Then the clinic keeps the ban, and refuses cal's new threads and replies there
    await eventually(
        lambda: one(clinic, select(Membership.member_id).where(Membership.state == "banned")),
        "the Block on the clinic",
    )
    page = await scene.cal.post(
        f"/g/{scene.group_handle}/new", {"title": "Let me back", "body": "Please?"}
    )
    assert page.status in (403, 404), page.status
    page = await scene.cal.post(f"/t/{await scene.thread_on(clinic)}/reply", {"body": "Hello?"})
    assert page.status in (403, 404), page.status
    assert not await one(clinic, select(Post.id).where(Post.source == "Hello?"))
    assert not await one(hospital, select(Thread.id).where(Thread.title == "Let me back"))


async def test_lock_and_pin_propagate_and_a_locked_remote_thread_refuses_replies(
    trio: tuple[RunningNode, ...],
) -> None:
    scene = await followed_group_with_a_thread(trio)
    hospital, charity, clinic = scene.hospital, scene.charity, scene.clinic
    nurse = Viewer(await member_id(hospital, "nurse"))
    hospital_thread = await scene.thread_on(hospital)

    async def moderate(locked: bool | None = None, pinned: bool | None = None) -> None:
        async with hospital.node.transaction() as session:
            now = hospital.node.clock.now()
            if locked is not None:
                await posts.set_thread_locked(
                    session, nurse, thread_id=hospital_thread, locked=locked, now=now
                )
            if pinned is not None:
                await posts.set_thread_pinned(
                    session, nurse, thread_id=hospital_thread, pinned=pinned, now=now
                )

    async def state_on(node: RunningNode, column: Any, present: bool) -> bool:
        value = await one(node, select(column).where(Thread.title == scene.title))
        return (value is not None) == present

    # When the group's owner locks and pins the thread
    await moderate(locked=True, pinned=True)

    # Then every follower's copy is locked and pinned
    for node in (charity, clinic):
        for column in (Thread.locked_at, Thread.pinned_at):
            await eventually(
                lambda node=node, column=column: state_on(node, column, True),
                f"{column.key} on {node.name}",
            )
    # And the clinic refuses cal's reply to it
    page = await scene.cal.post(f"/t/{await scene.thread_on(clinic)}/reply", {"body": "Late"})
    assert page.status >= 400, page.status
    assert not await one(clinic, select(Post.id).where(Post.source == "Late"))
    # And the group publishes it as Lemmy does: stickied, comments off, in `featured`
    reader = await hospital.browser()
    async with reader.client.get(f"/t/{hospital_thread}", headers=AS2_ACCEPT) as response:
        page_document = json.loads(await response.text())
    assert page_document["stickied"] is True and page_document["commentsEnabled"] is False
    async with reader.client.get("/g/t1d/featured", headers=AS2_ACCEPT) as response:
        featured = json.loads(await response.text())
    assert [item["id"] for item in featured["orderedItems"]] == [page_document["id"]]
    assert featured["totalItems"] == 1

    # When the owner unlocks and unpins it
    await moderate(locked=False, pinned=False)

    # Then the followers' copies follow, and cal may reply again
    for node in (charity, clinic):
        for column in (Thread.locked_at, Thread.pinned_at):
            await eventually(
                lambda node=node, column=column: state_on(node, column, False),
                f"{column.key} cleared on {node.name}",
            )
    page = await scene.cal.post(f"/t/{await scene.thread_on(clinic)}/reply", {"body": "Now"})
    assert page.status == 200, page.text[:300]
    await eventually(
        lambda: one(hospital, select(Post.id).where(Post.source == "Now")),
        "cal's reply on the hospital",
    )


async def test_announcement_only_is_published_and_enforced_on_both_sides(
    trio: tuple[RunningNode, ...],
) -> None:
    scene = await followed_group_with_a_thread(trio)
    hospital, charity, clinic = scene.hospital, scene.charity, scene.clinic

    # Given the hospital's group becomes announcement-only, before the others are told
    async with hospital.node.transaction() as session:
        group = (
            await session.execute(select(ConditionGroup).where(ConditionGroup.slug == "t1d"))
        ).scalar_one()
        group.posting_restricted_to_mods = True

    # When bea, whose node does not know yet, starts a thread there
    page = await scene.bea.post(
        f"/g/{scene.group_handle}/new", {"title": "Not a moderator", "body": "Hi all"}
    )
    assert page.status == 200, page.text[:300]

    # Then the group refuses her Create: no thread there, nothing announced
    async def refused() -> Any:
        return await one(
            hospital,
            select(InboxItem.error).where(
                InboxItem.state == "failed", InboxItem.error.contains("Only moderators")
            ),
        )

    await eventually(refused, "the Create refused on the hospital")
    assert not await one(hospital, select(Thread.id).where(Thread.title == "Not a moderator"))
    assert not await one(clinic, select(Thread.id).where(Thread.title == "Not a moderator"))

    # When the group's change is recorded (the owner's edit records GroupUpdated)
    async with hospital.node.transaction() as session:
        record(session, GroupUpdated(group.id))

    # Then the group actor publishes it, and the followers' nodes learn it from Update{Group}
    reader = await hospital.browser()
    async with reader.client.get("/g/t1d", headers=AS2_ACCEPT) as response:
        assert json.loads(await response.text())["postingRestrictedToMods"] is True
    for node in (charity, clinic):
        await eventually(
            lambda node=node: one(
                node,
                select(ConditionGroup.posting_restricted_to_mods).where(
                    ConditionGroup.domain == hospital.domain
                ),
            ),
            f"the restriction on {node.name}",
        )
    # And the clinic refuses cal's new thread there at once, saying why
    page = await scene.cal.post(
        f"/g/{scene.group_handle}/new", {"title": "Question", "body": "Anyone?"}
    )
    assert page.status == 403, page.status
    assert "Only moderators can start threads in this group." in page.text
    # And replies stay open to members
    page = await scene.cal.post(f"/t/{await scene.thread_on(clinic)}/reply", {"body": "Reply ok"})
    assert page.status == 200, page.text[:300]
    # And the group's moderators may still start threads
    page = await scene.nurse.post("/g/t1d/new", {"title": "Clinic hours", "body": "Open 9-5."})
    assert page.status == 200, page.text[:300]
    await eventually(
        lambda: one(clinic, select(Thread.id).where(Thread.title == "Clinic hours")),
        "the moderator's thread on the clinic",
    )
