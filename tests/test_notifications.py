"""Notifications over real HTTP on one node: who is told of what, what they never learn, the
header count, marking read, and the kinds a member turns off."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

from sqlalchemy import func, select

from node.mentions import Mentioned, handles_in, link_mentions
from node.runtime import NodeContext
from node.storage.models import ConditionGroup, Member, Notification, Post, PostMention
from tests.browser import Browser
from tests.conftest import BrowserFactory
from tests.test_web_flows import create_group

NEW = re.compile(r"Notifications \((\d+) new\)")


def unread_in_header(page_text: str) -> int:
    found = NEW.search(page_text)
    return int(found.group(1)) if found else 0


async def said(browser: Browser, path: str = "/notifications") -> str:
    """A page's words as read, tags dropped without the spaces `Page.text` puts for them."""
    page = await browser.get(path)
    assert page.status == 200, page.text
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", page.html)))


async def header_count(browser: Browser) -> int:
    return unread_in_header((await browser.get("/")).text)


async def scalar(node: NodeContext, statement: Any) -> Any:
    async with node.transaction(reading=True) as session:
        return (await session.execute(statement)).scalar()


async def people(browser_factory: BrowserFactory, *names: str) -> list[Browser]:
    found = []
    for name in names:
        browser = await browser_factory()
        await browser.register(name, display_name=name.capitalize())
        found.append(browser)
    return found


async def test_replies_mentions_and_marks_notify_the_people_they_concern(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given alice's thread in a public group, which bob joins; carla and dan only read
    alice, bob, carla, dan = await people(browser_factory, "alice", "bob", "carla", "dan")
    await create_group(alice, "t1d", "Type 1 diabetes")
    page = await alice.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    thread = page.path
    assert (await bob.post("/g/t1d/join")).status == 200
    signed_out = await browser_factory()
    assert "Notifications" not in (await signed_out.get("/")).text

    # When bob replies, mentioning carla and someone nobody knows
    page = await bob.post(f"{thread}/reply", {"body": "Yes, @carla too. Ask @nobody_here."})
    assert page.status == 200

    # Then alice is told once (a reply to her opening post, in her thread), carla is
    # mentioned, with a link to her profile in the post; bob is told nothing of his own reply
    assert await header_count(alice) == 1
    listing = await said(alice)
    assert "Bob replied to your post in “Night hypos”" in listing
    assert "New" in listing  # unread says so in words, not only by colour
    assert await header_count(carla) == 1
    assert "Bob mentioned you in a post" in await said(carla)
    html = (await carla.get(thread)).html
    assert '<a href="/u/carla" class="mention">@carla</a>' in html
    assert "@nobody_here" in html and 'href="/u/nobody_here"' not in html
    assert await header_count(bob) == 0
    assert await header_count(dan) == 0

    # When alice marks bob's reply helpful, and bob answers his own reply
    reply_id = await scalar(node, select(Post.id).where(Post.source.like("Yes, @carla%")))
    assert (await alice.post(f"/p/{reply_id}/helpful", {"helpful": "yes"})).status == 200
    await bob.post(f"{thread}/reply", {"body": "And me again.", "parent": reply_id})

    # Then bob is told of the mark, not of his own reply; alice of the reply in her thread
    assert "Alice marked your post helpful" in await said(bob)
    assert await header_count(bob) == 1
    assert await header_count(alice) == 2
    assert "Bob replied in your thread" in await said(alice)

    # When carla turns mentions off, dan joins and mentions her again
    settings = await carla.get("/account/notifications")
    assert 'name="kind" value="mention" checked' in settings.html
    kept = [("kind", kind) for kind in ("reply", "thread_reply", "helpful", "moderation")]
    data = [("csrf_token", carla.token), *kept]
    async with carla.client.post("/account/notifications", data=data) as response:
        assert response.status == 200
        html = await response.text()
    assert 'value="mention" checked' not in html and 'value="reply" checked' in html
    assert (await dan.post("/g/t1d/join")).status == 200
    await dan.post(f"{thread}/reply", {"body": "@carla, welcome."})
    # Then she is not told
    assert await header_count(carla) == 1
    # (the mention is kept: turning the kind back on is not retroactive, nor needed)
    assert await scalar(node, select(func.count()).select_from(PostMention)) == 2

    # When alice marks one read, bob tries to mark hers, then she marks all read
    ids = await _ids_of(node, "alice")
    assert len(ids) == 3  # bob's reply, bob's second reply, dan's reply
    assert (await bob.post(f"/notifications/{ids[0]}/read")).status == 200
    assert await header_count(alice) == 3
    assert (await alice.post(f"/notifications/{ids[0]}/read")).status == 200
    assert await header_count(alice) == 2
    refused = await alice.post("/notifications/read", csrf=False)
    assert refused.status == 403 and await header_count(alice) == 2
    await alice.post("/notifications/read")
    assert await header_count(alice) == 0
    listing = await said(alice)
    assert "Mark as read" not in listing and "New" not in listing.replace("News", "")

    # Bad input is a clear 4xx; a visitor is sent to sign in
    assert (await alice.get("/notifications?page=0")).status == 400
    assert (await alice.get("/notifications?page=x")).status == 400
    assert (await alice.post("/account/notifications", {"kind": "nonsense"})).status == 400
    assert (await alice.post("/notifications/007/read")).status == 404
    page = await signed_out.get("/notifications")
    assert page.path.startswith("/login")
    # The old notices page leads to the notifications
    assert (await alice.get("/notices")).path == "/notifications"


async def _ids_of(node: NodeContext, username: str) -> list[int]:
    async with node.transaction(reading=True) as session:
        member_id = (
            await session.execute(select(Member.id).where(Member.username == username))
        ).scalar_one()
        rows = await session.execute(
            select(Notification.id)
            .where(Notification.recipient_id == member_id)
            .order_by(Notification.id)
        )
        return list(rows.scalars())


async def test_private_groups_tell_only_those_who_may_see_them(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given olga's private group, joined by request
    olga, bob, carla, eve = await people(browser_factory, "olga", "bob", "carla", "eve")
    await olga.get("/groups/new")
    fields = {"name": "Quiet room", "visibility": "private", "join_policy": "request"}
    page = await olga.post("/groups/new", {"slug": "", "tags": "", **fields})
    assert page.status == 200, page.text
    group = page.path  # a private group's address is random
    code = await scalar(
        node, select(ConditionGroup.join_code).where(ConditionGroup.slug == group[3:])
    )
    link = f"{group}/ask/{code}"

    # When bob asks to join, olga is told, and the link leads to her queue
    assert (await bob.post(link)).status == 200
    listing = (await olga.get("/notifications")).html
    assert "Bob</bdi> asked to join" in listing and f'href="{group}/moderation"' in listing
    # And when she approves him, bob is told
    await olga.get(f"{group}/moderation")
    assert (await olga.post(f"{group}/moderation/approve", {"username": "bob"})).status == 200
    assert "was approved: you are a member now" in await said(bob)

    # When carla asks too and olga declines, carla is told, without the name of a group
    # that no longer exists for her
    await carla.post(link)
    await olga.get(f"{group}/moderation")
    await olga.post(f"{group}/moderation/reject", {"username": "carla"})
    listing = await said(carla)
    assert "Your request to join a private group was declined" in listing
    assert "Quiet room" not in listing

    # When olga invites eve, eve is told of the invitation
    await olga.get(f"{group}/moderation")
    await olga.post(f"{group}/moderation/invite", {"username": "eve"})
    assert "You are invited to join Quiet room" in await said(eve)

    # When bob starts a thread mentioning carla and eve (neither may read it) and olga replies
    page = await bob.post(
        f"{group}/new", {"title": "Secret worries", "body": "Hello @olga, @carla and @eve."}
    )
    thread = page.path
    await olga.post(f"{thread}/reply", {"body": "Welcome, bob."})
    # Then olga is told of the mention and bob of the reply; carla and eve of nothing more
    assert "Bob mentioned you" in await said(olga)
    assert "Secret worries" in await said(bob)
    for outsider in (carla, eve):
        listing = await said(outsider)
        assert "Secret worries" not in listing and "mentioned" not in listing

    # When bob leaves the group, nothing of it stays among his notifications, nor in his count
    before = await header_count(bob)
    assert (await bob.post(f"{group}/leave")).status == 200
    listing = await said(bob)
    assert "Secret worries" not in listing and "Olga replied" not in listing
    assert "Quiet room" not in listing and "was approved" not in listing
    assert await header_count(bob) == before - 2


def test_mentions_are_found_and_linked_outside_code_and_links() -> None:
    text = "Hi @Bea, @rita@hospital.example. Not me@example.org, a/@path, nor `@x`."
    assert handles_in(text) == [("bea", ""), ("rita", "hospital.example"), ("x", "")]
    known = {("bea", ""): Mentioned(1, "bea", "/u/bea")}
    html = '<p>Hi @bea <code>@bea</code> <a href="/elsewhere">@bea</a><br>@bea.</p>'
    assert link_mentions(html, known) == (
        '<p>Hi <a href="/u/bea" class="mention">@bea</a> <code>@bea</code> '
        '<a href="/elsewhere">@bea</a><br><a href="/u/bea" class="mention">@bea</a>.</p>'
    )


async def test_watching_a_thread_tells_of_its_replies_and_muting_it_silences_them(
    browser_factory: BrowserFactory,
) -> None:
    # Given alice's thread in a public group that bob and carla joined
    alice, bob, carla = await people(browser_factory, "alice", "bob", "carla")
    await create_group(alice, "t1d", "Type 1 diabetes")
    thread = (await alice.post("/g/t1d/new", {"title": "Pumps", "body": "Which one?"})).path
    for member in (bob, carla):
        assert (await member.post("/g/t1d/join")).status == 200

    # When bob watches it and carla replies
    assert (await bob.post(f"{thread}/subscription", {"subscription": "watch"})).status == 200
    await carla.post(f"{thread}/reply", {"body": "The one with the long tubing."})

    # Then bob is told, as alice is (her opening post)
    assert "Carla replied in a thread you watch “Pumps”" in await said(bob)
    assert "Carla replied to your post in “Pumps”" in await said(alice)
    assert await header_count(bob) == 1 and await header_count(alice) == 1

    # When alice mutes her own thread and carla replies again, mentioning her
    assert (await alice.post(f"{thread}/subscription", {"subscription": "mute"})).status == 200
    await carla.post(f"{thread}/reply", {"body": "@alice did you decide?"})

    # Then alice hears nothing more of it, and bob, still watching, does
    assert await header_count(alice) == 1
    assert await header_count(bob) == 2
