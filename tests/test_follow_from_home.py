"""Following a public group from one's own server: two real nodes over HTTP on loopback.

A visitor on the hospital's group page gives their address on the charity's node; the hospital
asks the charity's WebFinger for its subscribe template and sends the visitor there with the
group's IRI; the charity's node follows the group, and the visitor's reply shows on the
hospital, with their home server named."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from federation.discovery import SUBSCRIBE_REL
from node import ids
from node.storage.models import Membership, Post, Thread
from tests.browser import Browser
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node
from tests.test_web_flows import create_group


@pytest.fixture
async def pair(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    # Two host names of their own (127.0.0.2, 127.0.0.3), as two servers would have.
    hospital = await start_node(make_node, "hospital", host="127.0.0.2")
    charity = await start_node(make_node, "charity", host="127.0.0.3")
    yield hospital, charity
    for running in (hospital, charity):
        await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def follow_from_home(visitor: Browser, slug: str, handle: str) -> tuple[int, str, str]:
    """Submit the group page's form: (status, the link onwards to the visitor's server, page)."""
    await visitor.get(f"/g/{slug}")
    async with visitor.client.post(
        f"/g/{slug}/follow-from-home",
        data={"handle": handle, "csrf_token": visitor.token},
        allow_redirects=False,
    ) as response:
        html = await response.text()
    onwards = re.search(r'<a class="button" id="continue-home" href="([^"]*)"', html)
    return response.status, unescape(onwards.group(1)) if onwards else "", html


async def nurse_with_a_group(hospital: RunningNode) -> Browser:
    """The nurse, signed in on the hospital's node, owner of its public group t1d."""
    nurse = await hospital.browser()
    await nurse.register("nurse")
    await create_group(nurse, "t1d", "Type 1 diabetes")
    return nurse


async def test_a_visitor_follows_a_group_from_their_own_healthnode(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    # Given a public group on the hospital's node
    nurse = await nurse_with_a_group(hospital)

    # And the charity's WebFinger advertises where its members follow things from
    ben = await charity.browser()
    await ben.register("ben", display_name="Ben")
    async with ben.client.get(f"/.well-known/webfinger?resource=acct:ben@{charity.domain}") as r:
        links = (await r.json())["links"]
    templates = [link["template"] for link in links if link["rel"] == SUBSCRIBE_REL]
    assert templates == [f"{charity.base_url}{ids.AUTHORIZE_INTERACTION_PATH}?uri={{uri}}"]

    # When a visitor, signed out on the hospital, reads the group's address and gives theirs
    visitor = await hospital.browser()
    page = await visitor.get("/g/t1d")
    assert re.search(
        rf'<input id="group-address" class="address" value="@t1d@{re.escape(hospital.domain)}"'
        r" readonly",
        page.html,
    )
    status, location, _ = await follow_from_home(visitor, "t1d", f"@ben@{charity.domain}")

    # Then they are shown the way to their own server's subscribe page, with the group's IRI
    group_iri = ids.Iris(hospital.base_url).group("t1d")
    assert status == 200
    assert location == (
        f"{charity.base_url}{ids.AUTHORIZE_INTERACTION_PATH}?uri={quote(group_iri, safe='')}"
    )

    # And there, signed in, they confirm and follow the group
    page = await ben.get(location.removeprefix(charity.base_url))
    assert page.status == 200 and f'value="{group_iri}"' in page.html
    page = await ben.post("/groups/follow", {"handle": group_iri})
    assert page.status == 200 and page.path == f"/g/t1d@{hospital.domain}"

    async def accepted() -> Any:
        return await one(
            charity,
            select(func.count())
            .select_from(Membership)
            .where(Membership.state == "active", Membership.follow_activity_id.is_not(None)),
        )

    await eventually(accepted, "the hospital accepting the charity's follow")

    # And their reply to a new thread, sent from the charity, shows on the hospital with
    # their server named
    page = await nurse.post("/g/t1d/new", {"title": "Night hypos", "body": "Anyone else?"})
    assert page.status == 200
    thread_on_charity = await eventually(
        lambda: one(charity, select(Thread.id).where(Thread.title == "Night hypos")),
        "the thread on the charity",
    )
    page = await ben.post(f"/t/{thread_on_charity}/reply", {"body": "Every week."})
    assert page.status == 200, page.text[:500]
    thread_on_hospital = await one(hospital, select(Thread.id).where(Thread.title == "Night hypos"))
    await eventually(
        lambda: one(hospital, select(Post.id).where(Post.source == "Every week.")),
        "the reply on the hospital",
    )
    page = await visitor.get(f"/t/{thread_on_hospital}")
    assert f'<span class="home-server">· {charity.domain}</span>' in page.html


async def test_following_from_home_fails_in_plain_words(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    await nurse_with_a_group(hospital)
    visitor = await hospital.browser()

    # Not an address at all
    status, _, html = await follow_from_home(visitor, "t1d", "just some words")
    assert status == 400 and "That is not an address." in html
    assert 'id="error-summary"' in html and '<a href="#f-handle">' in html

    # A server nobody answers at
    status, _, html = await follow_from_home(visitor, "t1d", "ben@127.0.0.3:9")
    assert status == 400
    assert "We could not reach 127.0.0.3:9." in html
    assert "Errno" not in html and "Connect call" not in html

    # A server that does not know the person
    status, _, html = await follow_from_home(visitor, "t1d", f"nobody@{charity.domain}")
    assert status == 400
    assert f"{charity.domain} does not know the address nobody@{charity.domain}." in html


async def test_a_visitor_may_make_the_node_look_up_servers_only_so_often(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    # Given a public group, and a signed-out visitor who has asked twice, that are counted
    hospital, charity = pair
    await nurse_with_a_group(hospital)
    visitor = await hospital.browser()
    rate = hospital.node.settings.limits.rates.home_follows_per_address
    assert rate is not None and rate.count == 10
    for _ in range(rate.count):
        status, _, _ = await follow_from_home(visitor, "t1d", f"nobody@{charity.domain}")
        assert status == 400
    # (a form that is not an address is refused before anything is counted or fetched)
    status, _, _ = await follow_from_home(visitor, "t1d", "just some words")
    assert status == 400

    # When they ask once more, the node refuses without looking anything up
    fetched = [r.url for r in hospital.recorder.requests]
    assert len([url for url in fetched if "/.well-known/webfinger" in url]) >= rate.count
    status, _, html = await follow_from_home(visitor, "t1d", f"ben@{charity.domain}")
    assert status == 429, html[:300]
    assert "the most this node allows" in html and "Please wait" in html
    assert [r.url for r in hospital.recorder.requests] == fetched


async def test_private_and_partner_groups_have_no_address_to_follow(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, _charity = pair
    nurse = await hospital.browser()
    await nurse.register("nurse")
    for slug, visibility in (("hush", "private"), ("team", "partners")):
        await nurse.get("/groups/new")
        page = await nurse.post(
            "/groups/new",
            {"slug": slug, "name": slug.title(), "visibility": visibility,
             "partners": "127.0.0.3", "join_policy": "request"},
        )  # fmt: skip
        assert page.status == 200, re.findall(r"class=\"error\"[^>]*>([^<]+)", page.html)
        assert "follow-from-home" not in page.html and "group-address" not in page.html
        visitor = await hospital.browser()
        await visitor.get("/")
        status, _, _ = await follow_from_home(visitor, page.path.removeprefix("/g/"), "a@b.c")
        missing_status, _, _ = await follow_from_home(visitor, "nothere", "a@b.c")
        assert status == missing_status == 404
