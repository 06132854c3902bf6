"""Notifications across two real nodes on loopback: a reply from another server notifies the
local author, and Mention tags carry `@name@domain` both ways."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from node.storage.models import Member, Membership, Notification, Post, Thread
from tests.browser import Browser
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node
from tests.test_notifications import said


@pytest.fixture
async def pair(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    hospital = await start_node(make_node, "hospital")
    charity = await start_node(make_node, "charity")
    yield hospital, charity
    for running in (hospital, charity):
        await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def registered(node: RunningNode, username: str) -> Browser:
    browser = await node.browser()
    await browser.register(username, display_name=username.capitalize())
    return browser


async def notified(node: RunningNode, username: str, kind: str) -> int:
    """How many notifications of `kind` a member of `node` has."""
    return int(
        await one(
            node,
            select(func.count())
            .select_from(Notification)
            .join(Member, Member.id == Notification.recipient_id)
            .where(Member.username == username, Member.domain == "", Notification.kind == kind),
        )
    )


async def test_remote_replies_and_mentions_notify_members_at_home(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    # Given nurse's thread in a public group of the hospital, where rita has replied
    nurse = await registered(hospital, "nurse")
    rita = await registered(hospital, "rita")
    await nurse.get("/groups/new")
    page = await nurse.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
    )
    assert page.path == "/g/t1d"
    # And bea, on the charity's node, follows the group
    bea = await registered(charity, "bea")
    await bea.get("/authorize_interaction")
    page = await bea.post("/groups/follow", {"handle": f"t1d@{hospital.domain}"})
    assert page.status == 200, page.text[:500]
    await eventually(
        lambda: one(
            charity,
            select(func.count())
            .select_from(Membership)
            .where(Membership.state == "active", Membership.follow_activity_id.is_not(None)),
        ),
        "the Accept on the charity",
    )
    page = await nurse.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    hospital_thread = page.path
    assert (await rita.post("/g/t1d/join")).status == 200
    page = await rita.post(f"{hospital_thread}/reply", {"body": f"Hi @bea@{charity.domain}!"})
    assert page.status == 200

    # Then rita's mention of bea, a person on another server the hospital knows, is a link
    # and a Mention tag, with bea in the Note's cc; and bea is told at home
    html = (await rita.get(hospital_thread)).html
    assert f'class="mention">@bea@{charity.domain}</a>' in html
    sent = [
        json.loads(request.body)
        for request in hospital.recorder.requests
        if request.method == "POST" and b'"Mention"' in request.body
    ]
    assert sent, "a Note with a Mention tag left the hospital"
    note = sent[0]["object"]
    note = note.get("object", note) if isinstance(note, dict) else note
    bea_iri = f"{charity.base_url}/u/bea"
    assert {"type": "Mention", "href": bea_iri, "name": f"@bea@{charity.domain}"} in note["tag"]
    assert bea_iri in note["cc"]
    await eventually(lambda: notified(charity, "bea", "mention"), "bea's mention at home")
    listing = await said(bea)
    assert "Rita mentioned you in a post" in listing
    # (and, before, that the hospital's group accepted her: a decision on her request)
    assert "Your request to join Type 1 diabetes was approved" in listing

    # When bea replies from the charity to nurse's opening post, mentioning rita
    charity_thread = await eventually(
        lambda: one(charity, select(Thread.id).where(Thread.title == "Night hypos")),
        "the thread on the charity",
    )
    await eventually(
        lambda: one(charity, select(Post.id).where(Post.source.like("Hi @bea%"))),
        "rita's reply on the charity",
    )
    page = await bea.post(
        f"/t/{charity_thread}/reply", {"body": f"Me too. Thanks @rita@{hospital.domain}."}
    )
    assert page.status == 200, page.text[:500]

    # Then nurse is told of the reply at home, and rita of the mention (its Mention tag)
    await eventually(lambda: notified(hospital, "nurse", "reply"), "nurse's notification")
    await eventually(lambda: notified(hospital, "rita", "mention"), "rita's notification")
    assert "Bea replied to your post in “Night hypos”" in await said(nurse)
    assert "Bea mentioned you in a post" in await said(rita)
    page = await rita.get("/notifications")
    post_link = re.search(r'<a href="(/p/[^"]+)">a post</a>', page.html)
    assert post_link, "the notification links the post by its own address"
    # which leads to its place in the thread at home
    async with rita.client.get(post_link.group(1), allow_redirects=False) as answer:
        assert answer.status == 303
        assert answer.headers["Location"].startswith(f"/t/{hospital_thread[3:]}#post-")
