"""Moderation across servers, between three real nodes over HTTP on loopback: a hospital that
hosts a public group, a charity and a clinic whose members follow it (docs/FEDERATION.md,
"Moderation across servers")."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from federation.jsonld import LEMMY_CONTEXT, SECURITY_V1
from node import groups, membership, posts
from node.errors import DomainError, Forbidden
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
from tests.peers import (
    AS2,
    PUBLIC,
    FakeRemote,
    Hospital,
    at_once,
    cavage_headers,
    encode,
    post,
    processed,
    public_pem,
)

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
    clinic_post = await scene.opening_on(clinic)

    # When cal reports, from the post on the clinic, bea's thread in the hospital's group
    form = await scene.cal.get(f"/p/{clinic_post}/report")
    assert form.status == 200, form.text[:300]
    page = await scene.cal.post(
        f"/p/{clinic_post}/report", {"category": "spam", "comment": "Selling insulin, a scam."}
    )
    assert page.status == 200, page.text[:300]

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
    openings = {node.name: await scene.opening_on(node) for node in (hospital, charity, clinic)}
    charity_thread = await scene.thread_on(charity)

    # When the group's owner removes bea's thread from its page, with a reason
    removal = f"/p/{openings['hospital']}/delete"
    assert (await scene.nurse.get(removal)).status == 200
    fields = {"reason": "Advertising is not allowed here.", "confirm": "yes"}
    page = await scene.nurse.post(removal, fields)
    assert page.status == 200, page.text[:300]

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
    page = await scene.nurse.post(
        "/g/t1d/moderation/ban",
        {"username": f"cal@{clinic.domain}", "reason": "Selling pills", "confirm": "yes"},
    )
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


# ---------------------------------------------------------------- a Lemmy-shaped community


def lemmy_community(remote: FakeRemote, restricted: bool = False) -> dict[str, Any]:
    """A community on the fake server, in Lemmy's shape (tests/fixtures/lemmy_group.json),
    its key trent's; mallory moderates it."""
    iri = remote.base_url + "/c/main"
    return {
        "@context": [AS2, SECURITY_V1],
        "id": iri,
        "type": "Group",
        "preferredUsername": "main",
        "name": "Main",
        "summary": "<p>A community</p>",
        "inbox": iri + "/inbox",
        "followers": iri + "/followers",
        "attributedTo": iri + "/moderators",
        "featured": iri + "/featured",
        "postingRestrictedToMods": restricted,
        "endpoints": {"sharedInbox": remote.base_url + "/inbox"},
        "publicKey": {
            "id": iri + "#main-key",
            "owner": iri,
            "publicKeyPem": public_pem(remote.keys["trent"]),
        },
    }


async def test_a_lemmy_communitys_moderation_is_applied_here(
    hospital: Hospital, remote: FakeRemote
) -> None:
    node = hospital.running.node
    community = lemmy_community(remote)
    remote.documents["/c/main"] = community
    group_iri, moderator = community["id"], remote.actor("mallory")
    nurse_id = await member_id(hospital.running, "nurse")
    # Given the hospital's nurse follows the community
    async with node.transaction() as session:
        directory = hospital.running.federation.directory
        group = await directory.remote_group(session, group_iri, node.clock.now())
        view = await groups.view_group(session, f"{group.slug}@{group.domain}", Viewer(nurse_id))
        await membership.join(session, view, node.clock.now())

    async def from_community(activity: dict[str, Any], announced: bool = True) -> None:
        """`activity` reaches our shared inbox: announced by the community, or as it is
        (signed by its actor: the community, or its moderator)."""
        number = uuid.uuid4().hex
        document = activity
        if announced:
            document = {
                "@context": AS2, "id": f"{group_iri}/activities/announce/{number}",
                "type": "Announce", "actor": group_iri, "object": activity,
                "to": [PUBLIC], "cc": [group_iri + "/followers"],
            }  # fmt: skip
        document = {"@context": [AS2, LEMMY_CONTEXT], **document}
        url = hospital.base_url + "/inbox"
        body = encode(document)
        key, key_id = remote.keys["trent"], group_iri + "#main-key"
        if document["actor"] == moderator:
            key, key_id = remote.keys["mallory"], remote.key_id("mallory")
        headers = cavage_headers(url=url, body=body, key=key, key_id=key_id, now=hospital.now())
        answer = await post(url, body, headers)
        assert answer.status == 202, answer
        state = await eventually(lambda: processed(hospital, document["id"]), document["type"])
        assert state == "done", document

    def by_moderator(kind: str, obj: Any, **extra: Any) -> dict[str, Any]:
        return {
            "id": f"{remote.base_url}/activities/{kind.lower()}/{uuid.uuid4().hex}",
            "type": kind, "actor": moderator, "object": obj, "to": [PUBLIC], "cc": [group_iri],
            "audience": group_iri, **extra,
        }  # fmt: skip

    def follow_received() -> dict[str, Any] | None:
        for request in remote.received:
            if request.method == "POST" and request.path == "/c/main/inbox":
                found: dict[str, Any] = request.json()
                return found
        return None

    follow = await eventually(lambda: at_once(follow_received()), "the Follow at the community")
    await from_community(
        {"id": f"{group_iri}/activities/accept/{uuid.uuid4().hex}", "type": "Accept",
         "actor": group_iri, "object": follow, "to": [follow["actor"]]},
        announced=False,
    )  # fmt: skip

    # And a thread by its moderator
    page_iri = remote.base_url + "/post/1"
    page = {
        "id": page_iri, "type": "Page", "attributedTo": moderator, "name": "Welcome",
        "content": "<p>Read the rules</p>", "to": [group_iri, PUBLIC], "cc": [],
        "audience": group_iri,
    }  # fmt: skip
    await from_community(by_moderator("Create", page))
    thread_id = await one(hospital.running, select(Thread.id).where(Thread.title == "Welcome"))
    assert thread_id

    async def thread() -> Thread:
        found: Thread = await one(hospital.running, select(Thread).where(Thread.id == thread_id))
        return found

    # When the community announces its moderator's Lock and Add to featured
    await from_community(by_moderator("Lock", page_iri))
    await from_community(by_moderator("Add", page_iri, target=group_iri + "/featured"))
    # Then the thread is locked and pinned here, and the nurse's reply is refused at once
    assert (await thread()).locked_at is not None and (await thread()).pinned_at is not None
    async with node.transaction() as session:
        opening = await posts.first_post(session, thread_id)
        with pytest.raises(DomainError):
            await posts.reply(
                session, node.settings.limits, Viewer(nurse_id), thread_id=thread_id,
                parent_id=opening.id, draft=posts.Draft("Can I?"), now=node.clock.now(),
            )  # fmt: skip

    # When the community itself undoes the Lock, and its moderator's Remove unpins
    undo = {
        "id": f"{group_iri}/activities/undo/{uuid.uuid4().hex}", "type": "Undo",
        "actor": group_iri, "object": by_moderator("Lock", page_iri), "to": [PUBLIC],
    }  # fmt: skip
    await from_community(undo, announced=False)
    await from_community(by_moderator("Remove", page_iri, target=group_iri + "/featured"))
    assert (await thread()).locked_at is None and (await thread()).pinned_at is None

    # When the community removes the thread itself, with a reason
    delete = {
        "id": f"{group_iri}/activities/delete/{uuid.uuid4().hex}", "type": "Delete",
        "actor": group_iri, "object": page_iri, "summary": "Spam", "to": [PUBLIC],
    }  # fmt: skip
    await from_community(delete, announced=False)
    # Then it is removed here, the reason kept in the group's log under the group's name
    deleted = await one(hospital.running, select(Post.deleted_at).where(Post.ap_id == page_iri))
    assert deleted is not None
    entry = await one(
        hospital.running,
        select(ModerationLogEntry).where(ModerationLogEntry.action == "remove_post"),
    )
    assert entry.reason == "Spam" and entry.actor_label.startswith("moderators of Main")

    # When its moderator's Update{Group} says it became announcement-only
    remote.documents["/c/main"] = lemmy_community(remote, restricted=True)
    await from_community(by_moderator("Update", lemmy_community(remote, True)), announced=False)
    # Then the group is read again from its server, and the nurse may not start threads there
    assert await one(
        hospital.running,
        select(ConditionGroup.posting_restricted_to_mods).where(
            ConditionGroup.actor_iri == group_iri
        ),
    )
    async with node.transaction() as session:
        view = await groups.view_group(session, f"main@{remote_domain(remote)}", Viewer(nurse_id))
        with pytest.raises(Forbidden, match="Only moderators can start threads"):
            await posts.start_thread(
                session, node.settings.limits, view, title="Hello", draft=posts.Draft("Hi"),
                now=node.clock.now(),
            )  # fmt: skip


def remote_domain(remote: FakeRemote) -> str:
    return remote.base_url.removeprefix("http://")
