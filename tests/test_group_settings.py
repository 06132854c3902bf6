"""Group settings, held first posts, withdrawn invitations and rules at joining, over real HTTP
(issue 11), on one node and across three."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.events import Event, GroupUpdated, NotificationsGiven
from node.runtime import NodeContext
from node.storage.models import (
    ConditionGroup,
    Membership,
    ModerationLogEntry,
    OutboxActivity,
    Post,
    Thread,
)
from tests.browser import Browser
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node

AS2 = "application/activity+json"


@dataclass
class RecordingSink:
    """An event sink that keeps what was published, inside the transaction that made it, but
    not who was notified of it (the author is told of a moderator's decision)."""

    events: list[Event] = field(default_factory=list)

    async def publish(self, session: AsyncSession, events: list[Event]) -> None:
        self.events.extend(e for e in events if not isinstance(e, NotificationsGiven))


async def member(browser_factory: BrowserFactory, username: str) -> Browser:
    browser = await browser_factory()
    await browser.register(username)
    return browser


async def new_group(browser: Browser, slug: str, **fields: str) -> str:
    await browser.get("/groups/new")
    page = await browser.post(
        "/groups/new",
        {"slug": slug, "name": "Type 1 diabetes", "visibility": "public", **fields},
    )
    assert page.status == 200, page.text[:500]
    return page.path


def settings_fields(**changes: str) -> dict[str, str]:
    fields = {
        "name": "Type 1 diabetes",
        "description": "",
        "rules": "",
        "tags": "",
        "join_policy": "open",
        "hold_first_posts": "0",
    }
    return fields | changes


async def one(node: NodeContext, statement: Any) -> Any:
    async with node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def test_the_owner_edits_the_settings_and_nobody_else_can(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given an owner's public group and a member of it
    owner = await member(browser_factory, "olga")
    group_path = await new_group(owner, "t1d")
    bob = await member(browser_factory, "bob")
    assert (await bob.post(f"{group_path}/join")).status == 200
    sink = RecordingSink()
    node.sinks.append(sink)

    # When the owner changes name, rules, tags and the two moderation settings
    page = await owner.get(f"{group_path}/settings")
    assert page.status == 200
    page = await owner.post(
        f"{group_path}/settings",
        settings_fields(
            name="Type 1 diabetes (adults)",
            rules="Be kind.",
            tags="Diabetes, type 1",
            posting_restricted_to_mods="yes",
            hold_first_posts="2",
        ),
    )

    # Then they are saved, logged with what changed, and a GroupUpdated is recorded
    assert page.status == 200, page.text[:500]
    assert "Saved" in page.text
    group = await one(node, select(ConditionGroup).where(ConditionGroup.slug == "t1d"))
    assert group.name == "Type 1 diabetes (adults)"
    assert group.rules == "Be kind."
    assert group.posting_restricted_to_mods is True
    assert group.hold_first_posts == 2
    assert "#type-1" in (await bob.get(group_path)).text
    assert GroupUpdated(group.id) in sink.events
    reason = await one(
        node, select(ModerationLogEntry.reason).where(ModerationLogEntry.action == "edit_group")
    )
    assert "name" in reason and "tags" in reason and "hold_first_posts" in reason

    # And the members see the group as announcement-only, without the button
    page = await bob.get(group_path)
    assert "Only moderators start threads here" in page.text
    assert f"{group_path}/new" not in page.html
    assert f"{group_path}/new" in (await owner.get(group_path)).html

    # When a member, or someone signed out, tries the settings, they are refused
    sink.events.clear()
    assert (await bob.get(f"{group_path}/settings")).status == 403
    page = await bob.post(f"{group_path}/settings", settings_fields(name="Hijacked"))
    assert page.status == 403
    anonymous = await browser_factory()
    page = await anonymous.get(f"{group_path}/settings")
    assert page.path.startswith("/login")
    assert await one(node, select(ConditionGroup.name).where(ConditionGroup.id == group.id)) == (
        "Type 1 diabetes (adults)"
    )
    assert not [event for event in sink.events if isinstance(event, GroupUpdated)]


async def test_invalid_settings_are_refused_with_messages(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    owner = await member(browser_factory, "olga")
    group_path = await new_group(owner, "t1d")
    sink = RecordingSink()
    node.sinks.append(sink)

    page = await owner.post(
        f"{group_path}/settings",
        settings_fields(name=" ", join_policy="invite", hold_first_posts="lots", tags="no way!"),
    )

    assert page.status == 400
    assert "Group name" in page.text
    assert "A public group's join policy is one of: open." in page.text
    assert "Give a number of posts from 0" in page.text
    assert "is not valid" in page.text
    assert await one(node, select(ConditionGroup.name)) == "Type 1 diabetes"
    assert sink.events == []


async def test_a_private_group_keeps_its_visibility_and_changes_how_people_join(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    owner = await member(browser_factory, "olga")
    await owner.get("/groups/new")
    page = await owner.post(
        "/groups/new",
        {"slug": "quiet", "name": "Quiet", "visibility": "private", "join_policy": "request"},
    )
    group_path = page.path
    sink = RecordingSink()
    node.sinks.append(sink)

    page = await owner.post(
        f"{group_path}/settings", settings_fields(name="Quiet", join_policy="open")
    )
    assert page.status == 400
    assert "A private group's join policy is one of: request, invite." in page.text

    page = await owner.post(
        f"{group_path}/settings",
        settings_fields(name="Quiet", join_policy="invite", visibility="public"),
    )
    assert page.status == 200
    group = await one(node, select(ConditionGroup))
    assert (group.join_policy, group.visibility) == ("invite", "private")
    assert GroupUpdated(group.id) in sink.events


async def held_group(browser_factory: BrowserFactory, hold: str = "1") -> tuple[Browser, str]:
    owner = await member(browser_factory, "olga")
    group_path = await new_group(owner, "t1d")
    page = await owner.post(f"{group_path}/settings", settings_fields(hold_first_posts=hold))
    assert page.status == 200, page.text[:500]
    return owner, group_path


async def test_held_posts_are_seen_by_their_author_and_moderators_only(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a group that holds a new member's first post, with two members
    owner, group_path = await held_group(browser_factory)
    newbie = await member(browser_factory, "newbie")
    reader = await member(browser_factory, "reader")
    anonymous = await browser_factory()
    for browser in (newbie, reader):
        assert (await browser.post(f"{group_path}/join")).status == 200
    sink = RecordingSink()
    node.sinks.append(sink)

    # When the new member starts a thread
    page = await newbie.post(
        f"{group_path}/new", {"title": "Pump advice", "body": "Which pump do you use?"}
    )

    # Then she sees it, waiting; nothing is published, and the group does not move
    assert page.status == 200, page.text[:500]
    thread_path = page.path
    assert "Waiting for a moderator's approval" in page.text
    assert sink.events == []
    thread_id = thread_path.removeprefix("/t/")
    post_id = await one(node, select(Post.id).where(Post.thread_id == thread_id))

    # And nobody else but the moderators sees it: not the thread, the post, the list, the feed
    for browser in (reader, anonymous):
        missing_thread = await browser.get("/t/aaaaaaaaaaaaaaaaaaaa")
        page = await browser.get(thread_path)
        assert (page.status, page.text.replace(thread_id, "")) == (
            missing_thread.status,
            missing_thread.text.replace("aaaaaaaaaaaaaaaaaaaa", ""),
        )
        assert "Pump advice" not in (await browser.get(group_path)).text
    assert "Pump advice" not in (await reader.get("/")).text
    assert "Pump advice" in (await newbie.get("/")).text
    assert "Pump advice" in (await owner.get(thread_path)).text

    # And as ActivityStreams it answers exactly as a post that does not exist
    for path in (f"/p/{post_id}", thread_path):
        async with anonymous.client.get(path, headers={"Accept": AS2}) as held:
            held_answer = (held.status, await held.text())
        async with anonymous.client.get(
            path[:3] + "aaaaaaaaaaaaaaaaaaaa", headers={"Accept": AS2}
        ) as missing:
            assert held_answer == (missing.status, await missing.text())
        assert held_answer[0] == 404

    # And nobody replies to it, its author included, until it is approved
    page = await newbie.post(f"{thread_path}/reply", {"body": "Anyone?"})
    assert page.status == 409
    assert "waits for a moderator's approval" in page.text

    # When a moderator approves it from the held posts page
    page = await owner.get(f"{group_path}/held")
    assert "Which pump do you use?" in page.text
    page = await owner.post(f"{group_path}/held/{post_id}/approve")
    assert page.status == 200, page.text[:500]

    # Then everyone sees it, it is published (the held-back event), and it is logged
    assert "Nothing waiting" in page.text
    assert "Which pump do you use?" in (await anonymous.get(thread_path)).text
    assert "Pump advice" in (await reader.get(group_path)).text
    assert [type(event).__name__ for event in sink.events] == ["ThreadStarted"]
    assert await one(
        node,
        select(func.count())
        .select_from(ModerationLogEntry)
        .where(ModerationLogEntry.action == "approve_post", ModerationLogEntry.post_id == post_id),
    )

    # And her next post is not held: she has had her one post approved
    page = await newbie.post(f"{thread_path}/reply", {"body": "Mine is a tubeless one."})
    assert page.status == 200
    assert "Mine is a tubeless one." in (await reader.get(thread_path)).text


async def test_a_rejected_post_needs_a_reason_and_stays_unseen(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    owner, group_path = await held_group(browser_factory)
    spammer = await member(browser_factory, "spammer")
    assert (await spammer.post(f"{group_path}/join")).status == 200
    page = await spammer.post(f"{group_path}/new", {"title": "Cheap pills", "body": "Buy now"})
    post_id = await one(node, select(Post.id).where(Post.source == "Buy now"))
    sink = RecordingSink()
    node.sinks.append(sink)

    # A rejection without a reason is refused, with a message
    page = await owner.post(f"{group_path}/held/{post_id}/reject", {"reason": " "})
    assert page.status == 400
    assert "Give a reason" in page.text

    # With one, the post's text is erased, it never shows, and nothing is published
    page = await owner.post(f"{group_path}/held/{post_id}/reject", {"reason": "Spam"})
    assert page.status == 200, page.text[:500]
    assert "Nothing waiting" in page.text
    assert "Buy now" not in page.text
    assert await one(node, select(Post.source).where(Post.id == post_id)) == ""
    assert "Cheap pills" not in (await owner.get(group_path)).text
    assert sink.events == []
    assert (
        await one(
            node,
            select(ModerationLogEntry.reason).where(ModerationLogEntry.action == "reject_post"),
        )
        == "Spam"
    )
    # And deciding twice is answered, not a crash
    page = await owner.post(f"{group_path}/held/{post_id}/approve")
    assert page.status == 409
    assert "it was rejected or deleted" in page.text


async def test_a_moderator_withdraws_an_invitation(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a private group joined by invitation, and someone invited to it
    owner = await member(browser_factory, "olga")
    await owner.get("/groups/new")
    page = await owner.post(
        "/groups/new",
        {"slug": "quiet", "name": "Quiet", "visibility": "private", "join_policy": "invite"},
    )
    group_path = page.path
    zoe = await member(browser_factory, "zoe")
    bob = await member(browser_factory, "bob")
    for username in ("zoe", "bob"):
        page = await owner.post(f"{group_path}/moderation/invite", {"username": username})
        assert page.status == 200, page.text[:500]
    assert (await bob.post(f"{group_path}/join")).status == 200
    assert (await zoe.get(group_path)).status == 200

    # When a moderator withdraws zoe's invitation from the moderation page
    page = await owner.get(f"{group_path}/moderation")
    assert "Withdraw the invitation" in page.text
    page = await owner.post(f"{group_path}/invitations/withdraw", {"username": "zoe"})

    # Then it is gone, the group is unknown to her again, and it is logged
    assert page.status == 200, page.text[:500]
    assert "Withdraw the invitation" not in page.text
    assert (await zoe.get(group_path)).status == 404
    assert (await zoe.post(f"{group_path}/join")).status == 404
    assert await one(
        node,
        select(func.count())
        .select_from(ModerationLogEntry)
        .where(ModerationLogEntry.action == "withdraw_invite"),
    )

    # And an accepted invitation is a membership: it is not withdrawn, and she is told why
    page = await owner.post(f"{group_path}/invitations/withdraw", {"username": "bob"})
    assert page.status == 409
    assert "bob has no open invitation" in page.text
    assert await one(node, select(Membership.state).where(Membership.state == "active")) == "active"

    # And a member who does not moderate cannot withdraw one
    page = await owner.post(f"{group_path}/moderation/invite", {"username": "zoe"})
    page = await bob.post(f"{group_path}/invitations/withdraw", {"username": "zoe"})
    assert page.status == 403
    assert (await zoe.get(group_path)).status == 200


async def test_the_rules_are_shown_when_joining(browser_factory: BrowserFactory) -> None:
    # A public group: beside the join button
    owner = await member(browser_factory, "olga")
    group_path = await new_group(owner, "t1d", rules="No selling of supplies.")
    bob = await member(browser_factory, "bob")
    page = await bob.get(group_path)
    assert "By joining you agree to keep to them. No selling of supplies." in page.text
    assert page.html.index("No selling of supplies.") < page.html.index(f"{group_path}/join")

    # A private group joined by request: on the page the join link opens
    await owner.get("/groups/new")
    page = await owner.post(
        "/groups/new",
        {"slug": "quiet", "name": "Quiet", "visibility": "private", "join_policy": "request",
         "rules": "What is said here stays here."},
    )  # fmt: skip
    private_path = page.path
    page = await owner.get(f"{private_path}/moderation")
    match = re.search(r'<code class="breakable">[^<]*(/g/[^<]*/ask/[^<]*)</code>', page.html)
    assert match, page.text[:500]
    page = await bob.get(match.group(1))
    assert "By asking to join you agree to keep to them." in page.text
    assert "What is said here stays here." in page.text

    # And someone invited sees them beside "Accept the invitation"
    await owner.post(f"{private_path}/moderation/invite", {"username": "bob"})
    page = await bob.get(private_path)
    assert "What is said here stays here." in page.text
    assert "Accept the invitation" in page.text


@pytest.fixture
async def trio(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, ...]]:
    nodes = [await start_node(make_node, name) for name in ("hospital", "charity", "clinic")]
    yield tuple(nodes)
    for running in nodes:
        await running.close()


async def on(running: RunningNode, statement: Any) -> Any:
    return await one(running.node, statement)


async def test_held_posts_never_leave_the_node_before_approval(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, charity, clinic = trio
    # Given a public group on the hospital that holds a new member's first post
    owner = await hospital.browser()
    await owner.register("olga")
    group_path = await new_group(owner, "t1d")
    page = await owner.post(f"{group_path}/settings", settings_fields(hold_first_posts="1"))
    assert page.status == 200, page.text[:500]
    handle = f"t1d@{hospital.domain}"

    # And a member on the charity's node and one on the clinic's follow it
    bea = await charity.browser()
    await bea.register("bea")
    cal = await clinic.browser()
    await cal.register("cal")
    for browser in (bea, cal):
        await browser.get("/authorize_interaction")
        page = await browser.post("/groups/follow", {"handle": handle})
        assert page.status == 200, page.text[:500]

    async def remote_followers() -> bool:
        count = await on(
            hospital,
            select(func.count()).select_from(Membership).where(Membership.state == "active"),
        )
        return count == 3

    await eventually(remote_followers, "both follows accepted on the hospital")
    for running in (charity, clinic):
        await eventually(
            lambda running=running: on(
                running, select(Membership.state).where(Membership.state == "active")
            ),
            f"the Accept on {running.name}",
        )

    # When a new local member and the charity's member each start a thread
    newbie = await hospital.browser()
    await newbie.register("newbie")
    assert (await newbie.post(f"{group_path}/join")).status == 200
    page = await newbie.post(f"{group_path}/new", {"title": "Local first", "body": "Held here"})
    assert page.status == 200, page.text[:500]
    page = await bea.post(f"/g/{handle}/new", {"title": "Remote first", "body": "Held too"})
    assert page.status == 200, page.text[:500]
    held_remote = await eventually(
        lambda: on(hospital, select(Post.id).where(Post.source == "Held too")),
        "the charity member's post on the hospital",
    )
    assert await on(hospital, select(Post.held_at).where(Post.id == held_remote)) is not None

    # And the owner (never held) posts after them
    page = await owner.post(f"{group_path}/new", {"title": "Control", "body": "Published"})
    assert page.status == 200, page.text[:500]

    # Then the owner's thread reaches the clinic, and the held ones never left the hospital
    await eventually(
        lambda: on(clinic, select(Thread.id).where(Thread.title == "Control")),
        "the owner's thread on the clinic",
    )
    await eventually(
        lambda: on(charity, select(Thread.id).where(Thread.title == "Control")),
        "the owner's thread on the charity",
    )
    # And the clinic's member, new here too, replies to it: held as well
    clinic_control = await on(clinic, select(Thread.id).where(Thread.title == "Control"))
    page = await cal.post(f"/t/{clinic_control}/reply", {"body": "Held reply"})
    assert page.status == 200, page.text[:500]
    held_reply = await eventually(
        lambda: on(hospital, select(Post.id).where(Post.source == "Held reply")),
        "the clinic member's reply on the hospital",
    )
    assert await on(hospital, select(Post.held_at).where(Post.id == held_reply)) is not None
    sent = b"".join(request.body for request in hospital.recorder.requests)
    assert b"Held here" not in sent and b"Held too" not in sent and b"Held reply" not in sent
    assert (
        await on(clinic, select(Thread.id).where(Thread.title.in_(("Local first", "Remote first"))))
        is None
    )
    assert await on(charity, select(Thread.id).where(Thread.title == "Local first")) is None

    # When a moderator approves both
    held_local = await on(hospital, select(Post.id).where(Post.source == "Held here"))
    for post_id in (held_local, held_remote, held_reply):
        page = await owner.post(f"{group_path}/held/{post_id}/approve")
        assert page.status == 200, page.text[:500]

    # Then they are delivered to the following nodes
    for title in ("Local first", "Remote first"):
        await eventually(
            lambda title=title: on(clinic, select(Thread.id).where(Thread.title == title)),
            f"{title!r} on the clinic after approval",
        )
    await eventually(
        lambda: on(charity, select(Thread.id).where(Thread.title == "Local first")),
        "the local member's thread on the charity after approval",
    )
    await eventually(
        lambda: on(charity, select(Post.id).where(Post.source == "Held reply")),
        "the clinic member's reply on the charity after approval",
    )
    # And the group announced the charity member's post itself: it never wrote an activity
    # in her name (her own Create was read in an earlier transaction)
    bea_iri = f"{charity.base_url}/u/bea"
    assert not await on(
        hospital,
        select(func.count()).select_from(OutboxActivity).where(OutboxActivity.actor_iri == bea_iri),
    )
