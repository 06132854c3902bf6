"""Discovery through the real app: WebFinger, NodeInfo, host-meta, and resolving a handle
against another node served on loopback.

The default node's domain is localhost:8080, so its IRIs are http://localhost:8080/...
whatever port the test server listens on; the resolving test serves a node whose domain is the
address it really listens on, because the client follows that domain.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer, unused_port

from federation.client import FederationClient, FetchError
from federation.discovery import (
    LocalName,
    MalformedResource,
    actor_link,
    read_resource,
    resolve_handle,
)
from node.config import Settings
from node.groups import create_group, view_group
from node.ids import Iris, new_object_id
from node.members import create_member
from node.membership import join
from node.policy import Viewer
from node.posts import Draft, delete_post, reply, start_thread
from node.runtime import NodeContext
from node.storage.models import ConditionGroup, Member, Post, Thread
from tests.browser import Browser
from tests.clock import ManualClock
from tests.conftest import NodeFactory
from web.app import create_app

DOMAIN = "localhost:8080"
BASE = f"http://{DOMAIN}"
AS_TYPE = "https://www.w3.org/ns/activitystreams#type"
NODEINFO_REL = "http://nodeinfo.diaspora.software/ns/schema/2.1"
NODEINFO_TYPE = 'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
PASSWORD = "correct horse battery"


# --- seeding through the domain services ---------------------------------------------------


async def add_member(node: NodeContext, username: str) -> Member:
    async with node.transaction() as session:
        return await create_member(
            session,
            node.passwords,
            node.settings.limits,
            username=username,
            password=PASSWORD,
            display_name=username.title(),
            now=node.clock.now(),
        )


async def add_group(node: NodeContext, owner: Member, slug: str, private: bool = False) -> str:
    """The group's address: `slug`, or a random one for a private group."""
    async with node.transaction() as session:
        group = await create_group(
            session,
            node.settings.limits,
            owner_id=owner.id,
            slug=slug,
            name=slug.title(),
            private=private,
            now=node.clock.now(),
        )
    return group.slug


async def add_thread(node: NodeContext, slug: str, author: Member) -> Thread:
    async with node.transaction() as session:
        view = await view_group(session, slug, Viewer(author.id))
        return await start_thread(
            session,
            node.settings.limits,
            view,
            title="Morning readings",
            draft=Draft("Hello"),
            now=node.clock.now(),
        )


async def add_reply(node: NodeContext, thread: Thread, author: Member) -> Post:
    async with node.transaction() as session:
        return await reply(
            session,
            node.settings.limits,
            Viewer(author.id),
            thread_id=thread.id,
            parent_id=None,
            draft=Draft("Same here"),
            now=node.clock.now(),
        )


def remote_member(node: NodeContext, username: str) -> Member:
    """A person another server told us about, sharing a name with nobody here."""
    now = node.clock.now()
    return Member(
        username=username,
        domain="remote.example",
        actor_iri=f"https://remote.example/users/{username}",
        display_name=username.title(),
        password_hash="",
        created_at=now,
        last_active_at=now,
    )


# --- HTTP helpers ---------------------------------------------------------------------------


async def fetch(browser: Browser, path: str, **params: str) -> tuple[int, dict[str, str], str]:
    async with browser.client.get(path, params=params) as response:
        return response.status, dict(response.headers), await response.text()


async def webfinger(browser: Browser, resource: str | None, rel: str | None = None) -> Any:
    query = {} if resource is None else {"resource": resource}
    if rel is not None:
        query["rel"] = rel
    async with browser.client.get("/.well-known/webfinger", params=query) as response:
        return response.status, response.headers, await response.json(content_type=None)


def link(document: dict[str, Any], rel: str) -> dict[str, Any]:
    matches = [item for item in document["links"] if item["rel"] == rel]
    assert len(matches) == 1, document["links"]
    return matches[0]


# --- WebFinger ------------------------------------------------------------------------------


@pytest.fixture
async def people(node: NodeContext) -> NodeContext:
    """alice (a member), heart (her public group), secret (her private group), carol (remote)."""
    alice = await add_member(node, "alice")
    await add_group(node, alice, "heart")
    await add_group(node, alice, "secret", private=True)
    async with node.transaction() as session:
        session.add(remote_member(node, "carol"))
    return node


async def test_member_webfinger_names_the_actor_iri(people: NodeContext, browser: Browser) -> None:
    iri = Iris(people.settings.base_url).member("alice")
    assert iri == f"{BASE}/u/alice"

    status, headers, document = await webfinger(browser, f"acct:alice@{DOMAIN}")

    assert status == 200
    assert headers["Content-Type"] == "application/jrd+json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cache-Control"] == "public, max-age=3600"
    assert "Set-Cookie" not in headers
    assert document["subject"] == f"acct:alice@{DOMAIN}"
    assert document["aliases"] == [iri]
    assert link(document, "self") == {
        "rel": "self",
        "type": "application/activity+json",
        "href": iri,
        "properties": {AS_TYPE: "Person"},
    }
    assert link(document, "http://webfinger.net/rel/profile-page") == {
        "rel": "http://webfinger.net/rel/profile-page",
        "type": "text/html",
        "href": iri,
    }
    assert link(document, "http://ostatus.org/schema/1.0/subscribe")["template"] == (
        f"{BASE}/authorize_interaction?uri={{uri}}"
    )
    assert actor_link(document) == iri


@pytest.mark.parametrize(
    "resource",
    [
        f"acct:Alice@{DOMAIN}",
        f"ACCT:alice@{DOMAIN.upper()}",
        f"alice@{DOMAIN}",
        f"@ALICE@{DOMAIN}",
        f"{BASE}/u/alice",
        f"{BASE}/u/Alice",
    ],
)
async def test_member_webfinger_accepts_every_spelling(
    people: NodeContext, browser: Browser, resource: str
) -> None:
    status, _, document = await webfinger(browser, resource)
    assert status == 200
    assert document["subject"] == f"acct:alice@{DOMAIN}"
    assert link(document, "self")["href"] == f"{BASE}/u/alice"


async def test_public_group_webfinger(people: NodeContext, browser: Browser) -> None:
    for resource in (f"acct:Heart@{DOMAIN}", f"!heart@{DOMAIN}", f"{BASE}/g/heart"):
        status, headers, document = await webfinger(browser, resource)
        assert status == 200, resource
        assert headers["Content-Type"] == "application/jrd+json"
        assert document["subject"] == f"acct:heart@{DOMAIN}"
        assert document["aliases"] == [f"{BASE}/g/heart"]
        self_link = link(document, "self")
        assert self_link["href"] == Iris(people.settings.base_url).group("heart")
        assert self_link["type"] == "application/activity+json"
        assert self_link["properties"] == {AS_TYPE: "Group"}


async def test_rel_parameter_narrows_the_links(people: NodeContext, browser: Browser) -> None:
    status, _, document = await webfinger(browser, f"acct:alice@{DOMAIN}", rel="self")
    assert status == 200
    assert [item["rel"] for item in document["links"]] == ["self"]


async def test_instance_actor_webfinger(people: NodeContext, browser: Browser) -> None:
    for resource in (f"acct:{DOMAIN}@{DOMAIN}", f"{BASE}/actor"):
        status, _, document = await webfinger(browser, resource)
        assert status == 200, resource
        assert document["subject"] == f"acct:{DOMAIN}@{DOMAIN}"
        assert document["aliases"] == [f"{BASE}/actor"]
        assert link(document, "self")["properties"] == {AS_TYPE: "Application"}
        assert link(document, "self")["href"] == Iris(people.settings.base_url).instance_actor()
        rels = {item["rel"] for item in document["links"]}
        assert "http://ostatus.org/schema/1.0/subscribe" not in rels


async def test_what_is_not_here_is_not_found(people: NodeContext, browser: Browser) -> None:
    status, headers, unknown = await webfinger(browser, f"acct:nobody@{DOMAIN}")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert "Cache-Control" not in headers
    assert set(unknown) == {"error"}
    for resource in (
        # A private group answers exactly like a name that does not exist.
        f"acct:secret@{DOMAIN}",
        f"{BASE}/g/secret",
        # A member is not a group, nor a group a member, whatever the IRI claims.
        f"{BASE}/g/alice",
        f"{BASE}/u/heart",
        # Remote people are known here but are not ours to answer for.
        f"acct:carol@{DOMAIN}",
        # Other servers' names, including our own names there.
        "acct:alice@remote.example",
        "acct:alice@localhost:8081",
        "https://localhost:8080/u/alice",
        "http://remote.example/u/alice",
        f"{BASE}/t/{new_object_id()}",
        "acct:no.such.name@localhost:8080",
    ):
        status, _, body = await webfinger(browser, resource)
        assert (status, body) == (404, unknown), resource


@pytest.mark.parametrize(
    "resource",
    [
        "alice",
        "acct:alice",
        f"acct:@{DOMAIN}",
        "acct:alice@",
        "acct:alice@bad domain",
        "acct:alice@exa_mple..com",
        f"acct:a/b@{DOMAIN}",
        "mailto:alice",
        "x" * 600 + f"@{DOMAIN}",
    ],
)
async def test_malformed_resource_is_a_400_json(
    people: NodeContext, browser: Browser, resource: str
) -> None:
    status, headers, body = await webfinger(browser, resource)
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert isinstance(body["error"], str) and body["error"]


async def test_missing_resource_is_a_400_json(people: NodeContext, browser: Browser) -> None:
    for resource in (None, ""):
        status, _, body = await webfinger(browser, resource)
        assert status == 400
        assert "resource" in body["error"]


def test_read_resource_names_only_what_is_on_this_node() -> None:
    settings = Settings(domain="Forum.Example")
    assert read_resource("acct:Alice@forum.example", settings) == LocalName("alice", None)
    assert read_resource("alice@FORUM.EXAMPLE", settings) == LocalName("alice", None)
    assert read_resource("https://forum.example/g/Heart", settings) == LocalName("heart", "group")
    assert read_resource("http://forum.example/u/alice", settings) is None  # not our scheme
    assert read_resource("acct:alice@other.example", settings) is None
    with pytest.raises(MalformedResource):
        read_resource("acct:alice", settings)
    dev = Settings(domain="127.0.0.1:8080")
    assert read_resource("acct:bob@127.0.0.1:8080", dev) == LocalName("bob", None)
    assert read_resource("http://127.0.0.1:8080/u/bob", dev) == LocalName("bob", "member")
    assert read_resource("acct:bob@127.0.0.1", dev) is None  # another port is another node


def test_actor_link_takes_the_last_activitypub_self_link() -> None:
    ld = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
    jrd = {
        "links": [
            {"rel": "self", "type": "application/activity+json", "href": "https://a.example/p"},
            {"rel": "self", "type": ld, "href": "https://a.example/g"},
            {"rel": "self", "type": "text/html", "href": "https://a.example/html"},
            {"rel": "self", "type": "application/ld+json", "href": "https://a.example/ld"},
            {"rel": "profile", "type": "application/activity+json", "href": "https://a.example/x"},
            {"rel": "self", "type": "application/activity+json", "href": "javascript:alert(1)"},
            {"rel": "self", "type": "application/activity+json", "href": "https://[::1/"},
        ]
    }
    assert actor_link(jrd) == "https://a.example/g"
    assert actor_link({"links": jrd["links"][2:]}) is None
    assert actor_link(["not", "a", "jrd"]) is None


# --- NodeInfo -------------------------------------------------------------------------------


async def test_nodeinfo_discovery_links(node: NodeContext, browser: Browser) -> None:
    status, headers, text = await fetch(browser, "/.well-known/nodeinfo")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(text) == {
        "links": [
            {"rel": NODEINFO_REL, "href": f"{BASE}/nodeinfo/2.1"},
            {
                "rel": "https://www.w3.org/ns/activitystreams#Application",
                "href": f"{BASE}/actor",
            },
        ]
    }


async def test_nodeinfo_counts_only_what_strangers_may_see(
    node: NodeContext, browser: Browser
) -> None:
    now = node.clock.now()
    alice = await add_member(node, "alice")
    bob = await add_member(node, "bob")
    dormant = await add_member(node, "dormant")
    gone = await add_member(node, "gone")
    await add_group(node, alice, "heart")
    secret = await add_group(node, alice, "secret", private=True)
    async with node.transaction() as session:
        await join(session, await view_group(session, "heart", Viewer(bob.id)), now)
    counted = await add_thread(node, "heart", alice)  # 1
    await add_reply(node, counted, bob)  # 2
    deleted = await add_reply(node, counted, bob)
    async with node.transaction() as session:
        await delete_post(session, Viewer(bob.id), post_id=deleted.id, now=now)
    await add_thread(node, secret, alice)  # a private group's posts are never counted
    async with node.transaction() as session:
        for member, idle_days in ((dormant, 100), (gone, 200)):
            row = await session.get(Member, member.id)
            assert row is not None
            row.last_active_at = now - timedelta(days=idle_days)
        carol = remote_member(node, "carol")
        session.add(carol)
        elsewhere = ConditionGroup(
            slug="lungs",
            domain="remote.example",
            actor_iri="https://remote.example/c/lungs",
            name="Lungs",
            visibility="public",
            join_policy="open",
            join_code="x",
            created_at=now,
            last_activity_at=now,
        )
        session.add(elsewhere)
        await session.flush()
        # A remote person's reply in our public group, and alice's thread in a remote group.
        session.add(post_row(counted.id, carol.id, now))
        remote_thread = Thread(
            id=new_object_id(),
            group_id=elsewhere.id,
            title="Elsewhere",
            author_id=alice.id,
            created_at=now,
            last_activity_at=now,
        )
        session.add(remote_thread)
        await session.flush()
        session.add(post_row(remote_thread.id, alice.id, now))

    status, headers, text = await fetch(browser, "/nodeinfo/2.1")
    assert status == 200
    assert headers["Content-Type"] == NODEINFO_TYPE
    document = json.loads(text)

    assert document["usage"] == {
        "users": {"total": 4, "activeMonth": 2, "activeHalfyear": 3},
        "localPosts": 2,
    }
    # Schema 2.1 forbids unknown keys everywhere but in `metadata`.
    assert set(document) == {
        "version",
        "software",
        "protocols",
        "services",
        "openRegistrations",
        "usage",
        "metadata",
    }
    assert document["version"] == "2.1"
    assert document["software"]["name"] == "healthnode"
    assert re.fullmatch(r"[a-z0-9-]+", document["software"]["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", document["software"]["version"])
    assert set(document["software"]) <= {"name", "version", "repository", "homepage"}
    assert document["protocols"] == ["activitypub"]
    assert document["services"] == {"inbound": [], "outbound": []}
    assert document["openRegistrations"] is True
    # The node's name as Mastodon and Misskey publish theirs (the configured default here).
    assert document["metadata"] == {"nodeName": "healthnode", "nodeDescription": ""}


def post_row(thread_id: str, author_id: int, now: datetime) -> Post:
    return Post(
        id=new_object_id(),
        thread_id=thread_id,
        author_id=author_id,
        source="From afar",
        content_html="<p>From afar</p>",
        created_at=now,
    )


# --- host-meta ------------------------------------------------------------------------------


async def test_host_meta_xml_and_json(node: NodeContext, browser: Browser) -> None:
    template = f"{BASE}/.well-known/webfinger?resource={{uri}}"
    status, headers, text = await fetch(browser, "/.well-known/host-meta")
    assert status == 200
    assert headers["Content-Type"] == "application/xrd+xml"
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{XRD}XRD"
    links = root.findall(f"{XRD}Link")
    assert [(item.get("rel"), item.get("template")) for item in links] == [("lrdd", template)]

    async with browser.client.get("/.well-known/host-meta.json") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        document = await response.json()
    assert document == {"links": [{"rel": "lrdd", "template": template}]}


# --- resolving handles against a served node -----------------------------------------------


@pytest.fixture
async def served_remote(make_node: NodeFactory) -> AsyncIterator[NodeContext]:
    """A node whose domain is the loopback address and port it is served at."""
    port = unused_port()
    remote = await make_node("remote", domain=f"127.0.0.1:{port}")
    server = TestServer(create_app(remote), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield remote
    finally:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[FederationClient]:
    federation_client = FederationClient(allow_loopback=True)
    try:
        yield federation_client
    finally:
        await federation_client.close()


async def test_resolve_handle_against_a_served_node(
    served_remote: NodeContext, client: FederationClient
) -> None:
    domain = served_remote.settings.domain
    iris = Iris(served_remote.settings.base_url)
    dana = await add_member(served_remote, "dana")
    await add_group(served_remote, dana, "asthma")
    await add_group(served_remote, dana, "hidden", private=True)
    now = served_remote.clock.now()

    assert await resolve_handle(client, f"dana@{domain}", now) == iris.member("dana")
    assert await resolve_handle(client, f"@dana@{domain}", now) == f"http://{domain}/u/dana"
    assert await resolve_handle(client, f"!asthma@{domain}", now) == iris.group("asthma")
    url = "https://elsewhere.example/users/x"
    assert await resolve_handle(client, url, now) == url

    for missing in (f"nobody@{domain}", f"!hidden@{domain}"):
        with pytest.raises(FetchError) as caught:
            await resolve_handle(client, missing, now)
        assert (caught.value.kind, caught.value.status) == ("not_found", 404), missing


@pytest.mark.parametrize(
    "handle", ["dana", "@dana", "dana@", "@@dana@127.0.0.1", "dana@bad host", "dana@a@b", ""]
)
async def test_resolve_handle_refuses_malformed_handles(
    client: FederationClient, handle: str
) -> None:
    with pytest.raises(FetchError) as caught:
        await resolve_handle(client, handle, ManualClock().now())
    assert caught.value.kind == "invalid"
