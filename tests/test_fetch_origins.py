"""Origins of fetched documents: a document is trusted for an id only if the id's own origin
served it, redirects included; remote IRIs carry no user information; a follower's shared
inbox is on its own origin; remote people are addressed by the names their servers give them.

Fake remote servers are real aiohttp apps on loopback ports (tests/peers.py): each port is an
origin of its own, so "another server" is another port.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp import web
from sqlalchemy import select

from federation.client import FederationClient, FetchError
from federation.origins import received_origin
from federation.vocab import VocabError, parse_activity, parse_actor, parse_post
from node import groups, members, membership, posts
from node import remote as remote_store
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Delivery, Member, Membership
from tests.browser import Browser
from tests.conftest import BrowserFactory
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    SECURITY_V1,
    FakeRemote,
    Hospital,
    assert_nothing_kept,
    at_once,
    cavage_headers,
    encode,
    json_answer,
    post,
    public_pem,
)

# ---------------------------------------------------------------- the client itself


@pytest.fixture
async def client() -> AsyncIterator[FederationClient]:
    federation_client = FederationClient(allow_loopback=True)
    yield federation_client
    await federation_client.close()


def redirect_to(location: str, status: int = 302) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return answer


def now() -> datetime:
    return datetime.now().astimezone()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_origin_is_not_followed(
    client: FederationClient, remote: FakeRemote, third: FakeRemote, status: int
) -> None:
    # Given a document on one server that redirects to a document on another
    third.documents["/notes/1"] = {"id": remote.base_url + "/notes/1", "type": "Note"}
    remote.routes["/notes/1"] = redirect_to(third.base_url + "/notes/1", status)
    # When the node fetches it, the redirect is refused: the other server is never asked
    with pytest.raises(FetchError) as refused:
        await client.get_json(remote.base_url + "/notes/1", None, now())
    assert refused.value.kind == "refused" and "another origin" in str(refused.value)
    assert third.received == []


async def test_a_redirect_within_the_origin_is_followed(
    client: FederationClient, remote: FakeRemote
) -> None:
    # The control: a server that moved a document on its own origin is followed
    remote.documents["/notes/new"] = {"id": remote.base_url + "/notes/new", "type": "Note"}
    remote.routes["/notes/old"] = redirect_to("/notes/new", 301)
    document = await client.get_json(remote.base_url + "/notes/old", None, now())
    assert document["type"] == "Note"


async def test_redirects_are_bounded(client: FederationClient, remote: FakeRemote) -> None:
    remote.routes["/loop"] = redirect_to("/loop")
    with pytest.raises(FetchError, match="too many redirects"):
        await client.get_json(remote.base_url + "/loop", None, now())
    assert len(remote.gets("/loop")) == 4


@pytest.mark.parametrize("userinfo", ["user@", "user:secret@", ":secret@", "a@b@"])
async def test_a_url_with_user_information_is_never_fetched(
    client: FederationClient, remote: FakeRemote, userinfo: str
) -> None:
    # Given a URL that names a user and password (aiohttp would send them as Basic auth)
    url = f"http://{userinfo}127.0.0.1:{remote.port}/users/mallory"
    # When the node is asked to fetch it, or to deliver to it, it refuses before connecting
    with pytest.raises(FetchError) as refused:
        await client.get_json(url, None, now())
    assert refused.value.kind == "refused" and "user information" in str(refused.value)
    assert remote.received == []


async def test_a_redirect_to_a_url_with_user_information_is_not_followed(
    client: FederationClient, remote: FakeRemote
) -> None:
    remote.routes["/users/old"] = redirect_to(f"http://user:secret@127.0.0.1:{remote.port}/x")
    with pytest.raises(FetchError, match="user information"):
        await client.get_json(remote.base_url + "/users/old", None, now())
    # The redirect was asked for, nothing after it; no request carried credentials
    assert [r.path for r in remote.received] == ["/users/old"]
    assert all("authorization" not in r.headers for r in remote.received)


# ---------------------------------------------------------------- through the inbox


def actor_document(iri: str, key_pem: str, **changes: Any) -> dict[str, Any]:
    document = {
        "@context": [AS2, SECURITY_V1],
        "id": iri,
        "type": "Person",
        "preferredUsername": "mallory",
        "inbox": iri + "/inbox",
        "publicKey": {"id": iri + "#main-key", "owner": iri, "publicKeyPem": key_pem},
    }
    return document | changes


async def follow_as(hospital: Hospital, remote: FakeRemote, actor: str, key_name: str) -> Any:
    """A Follow of the group by `actor`, signed with `key_name`'s key under actor#main-key."""
    parts = urlsplit(actor)
    activity = {
        "@context": AS2,
        "id": f"{parts.scheme}://{parts.netloc}/follows/{uuid.uuid4().hex}",
        "type": "Follow",
        "actor": actor,
        "object": hospital.group_iri,
    }
    body = encode(activity)
    headers = cavage_headers(
        url=hospital.group_inbox, body=body, key=remote.keys[key_name],
        key_id=actor + "#main-key", now=hospital.now(),
    )  # fmt: skip
    return await post(hospital.group_inbox, body, headers)


async def test_an_actor_served_through_an_open_redirect_cannot_join(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given a server (remote) with an open redirect, and an attacker's server (third) that
    # serves, behind it, an actor document naming the redirect as its id, with its own key
    victim_iri = f"{remote.base_url}/go?to={quote(third.base_url + '/fake', safe='')}"
    third.documents["/fake"] = actor_document(victim_iri, public_pem(third.keys["mallory"]))

    async def open_redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": request.query["to"]})

    remote.routes["/go"] = open_redirect
    # When the attacker follows the group in the name of the redirect's IRI
    answer = await follow_as(hospital, third, victim_iri, "mallory")
    # Then the key is not taken from the other origin: refused, and no one became a member
    assert answer.status == 401, answer
    assert third.received == []
    await assert_nothing_kept(hospital)


async def test_an_actor_iri_with_user_information_is_refused(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given an actor document whose ids carry user information on the remote's host
    iri = f"http://someone@127.0.0.1:{remote.port}/users/someone"
    remote.routes["/users/someone"] = at_path(actor_document(iri, public_pem(remote.keys["trent"])))
    # When it follows the group
    answer = await follow_as(hospital, remote, iri, "trent")
    # Then it is refused before any fetch, and nothing is stored under such a domain
    assert answer.status in (400, 401), answer
    assert remote.received == []
    await assert_nothing_kept(hospital)
    async with hospital.running.node.transaction(reading=True) as session:
        domains = (await session.execute(select(Member.domain))).scalars().all()
    assert not any("@" in domain for domain in domains)


def at_path(document: dict[str, Any]) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        return json_answer(document)

    return answer


@pytest.mark.parametrize(
    "field", ["id", "actor", "object.id", "object.attributedTo", "object.inReplyTo", "target"]
)
def test_activities_naming_iris_with_user_information_are_refused(field: str) -> None:
    activity: dict[str, Any] = {
        "id": "https://peer.example/activities/1",
        "type": "Create",
        "actor": "https://peer.example/users/a",
        "object": {
            "id": "https://peer.example/notes/1",
            "type": "Note",
            "attributedTo": "https://peer.example/users/a",
            "inReplyTo": "https://peer.example/notes/0",
        },
        "target": "https://peer.example/collections/1",
    }
    container, _, key = field.rpartition(".")
    holder = activity[container] if container else activity
    holder[key] = holder[key].replace("https://", "https://user:pw@")
    with pytest.raises(VocabError, match="user information"):
        parse_post(parse_activity(activity).object)


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "https://x@peer.example/users/a"},
        {"inbox": "https://x@peer.example/users/a/inbox"},
        {"endpoints": {"sharedInbox": "https://x@peer.example/inbox"}},
    ],
)
def test_actors_naming_iris_with_user_information_are_refused(changes: dict[str, Any]) -> None:
    document = actor_document("https://peer.example/users/a", PEM) | changes
    if "id" in changes:
        document["publicKey"] = {"id": changes["id"] + "#main-key", "publicKeyPem": PEM}
    with pytest.raises(VocabError, match="user information"):
        parse_actor(document)


# ---------------------------------------------------------------- shared inboxes


PEM = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"


def test_a_shared_inbox_on_another_origin_is_ignored() -> None:
    iri = "https://peer.example/users/a"
    foreign = parse_actor(
        actor_document(iri, PEM, endpoints={"sharedInbox": "https://evil.example/inbox"})
    )
    assert foreign.shared_inbox is None
    assert foreign.inbox == iri + "/inbox"  # the actor stays usable, reached at its own inbox
    own = parse_actor(
        actor_document(iri, PEM, endpoints={"sharedInbox": "https://PEER.example/inbox"})
    )
    assert own.shared_inbox == "https://PEER.example/inbox"


async def test_a_follower_naming_a_foreign_shared_inbox_is_reached_at_its_own_inbox(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given mallory, whose actor document names a shared inbox on another server
    document = remote.actor_document("mallory")
    document["endpoints"] = {"sharedInbox": third.base_url + "/inbox"}
    remote.routes["/users/mallory"] = at_path(document)
    answer = await follow_as(hospital, remote, remote.actor("mallory"), "mallory")
    assert answer.status == 202, answer
    await eventually(lambda: at_once(remote.posted("Accept")), "the Accept at mallory")
    # When nurse starts a thread in the group
    await start_thread(hospital)
    # Then the announces go to mallory's own inbox, never to the other server
    await eventually(lambda: at_once(remote.posted("Announce")), "an Announce at mallory")
    assert third.received == []


async def test_a_stored_foreign_shared_inbox_gets_no_delivery(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given a follower stored before shared inboxes were checked, naming one on another origin
    node = hospital.running.node
    now = hospital.now()
    iri = remote.actor("mallory")
    async with node.transaction() as session:
        group = await groups.find_group(session, "t1d")
        assert group is not None
        facts = remote_facts(iri, "mallory", shared_inbox=third.base_url + "/inbox")
        follower = await remote_store.upsert_remote_member(session, facts, now)
        follow_activity = {"id": iri + "#follow", "type": "Follow", "actor": iri}
        await remote_store.accept_remote_follow(
            session, group, follower, received_origin(session, follow_activity), now
        )
    # When nurse starts a thread
    await start_thread(hospital)
    # Then every announce goes to the follower's own inbox, none to the other server
    await eventually(lambda: at_once(len(remote.posted("Announce")) == 2), "two Announces")
    assert third.received == []
    async with node.transaction(reading=True) as session:
        inboxes = set((await session.execute(select(Delivery.inbox_url))).scalars())
    assert third.base_url + "/inbox" not in inboxes


async def start_thread(hospital: Hospital) -> None:
    node = hospital.running.node
    async with node.transaction() as session:
        nurse = await members.find_member(session, "nurse")
        assert nurse is not None
        view = await groups.view_group(session, "t1d", Viewer(nurse.id))
        await posts.start_thread(
            session, node.settings.limits, view, title="Pumps",
            draft=posts.Draft("Which pump do you use?"), now=hospital.now(),
        )  # fmt: skip


def remote_facts(
    iri: str, name: str, shared_inbox: str | None = None
) -> remote_store.RemoteActorFacts:
    return remote_store.RemoteActorFacts(
        iri=iri, username=name, domain=urlsplit(iri).netloc, display_name=name, summary="",
        inbox=iri + "/inbox", shared_inbox=shared_inbox, profile_url=None,
    )  # fmt: skip


# ---------------------------------------------------------------- remote people by name


NAMES = ["CamelCase", "mallory@home", "Ünïcode", "dots.and-dashes"]


async def remote_person(node: NodeContext, name: str) -> Member:
    facts = remote_facts(f"https://peer.example/people/{quote(name, safe='')}", name)
    async with node.transaction() as session:
        return await remote_store.upsert_remote_member(session, facts, node.clock.now())


async def moderating_nurse(node: NodeContext, browser_factory: BrowserFactory) -> Browser:
    nurse = await browser_factory()
    await nurse.register("nurse")
    async with node.transaction() as session:
        owner = await members.find_member(session, "nurse")
        assert owner is not None
        await groups.create_group(
            session, node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1 diabetes", now=node.clock.now(),
        )  # fmt: skip
    return nurse


async def state_of(node: NodeContext, member_id: int) -> tuple[str, str] | None:
    async with node.transaction(reading=True) as session:
        group = await groups.find_group(session, "t1d")
        assert group is not None
        row = await session.get(Membership, (group.id, member_id))
        return (row.state, row.role) if row else None


async def act(nurse: Browser, action: str, handle: str) -> None:
    # A ban gives a reason and ticks its confirmation (docs/POLICY.md).
    reasoned = {"reason": "Spam", "confirm": "yes"} if action == "ban" else {}
    page = await nurse.post(f"/g/t1d/moderation/{action}", {"username": handle, **reasoned})
    assert page.status == 200 and page.path == "/g/t1d/moderation", (action, page.text[:400])


@pytest.mark.parametrize("name", NAMES)
async def test_a_remote_member_is_moderated_by_the_name_its_server_gives(
    node: NodeContext, browser_factory: BrowserFactory, name: str
) -> None:
    # Given a remote person whose preferredUsername has capitals, "@" or other characters
    person = await remote_person(node, name)
    handle = members.handle_of(person)
    assert handle == f"{name}@peer.example"
    nurse = await moderating_nurse(node, browser_factory)
    # When nurse invites them, by the handle the moderation page shows
    await act(nurse, "invite", handle)
    assert await state_of(node, person.id) == ("invited", "member")
    # And approves them once they ask (their request arrives as a pending row)
    async with node.transaction() as session:
        group = await groups.find_group(session, "t1d")
        assert group is not None
        row = await session.get(Membership, (group.id, person.id))
        now = node.clock.now()
        await membership.put_membership(session, row, group.id, person.id, "pending", now)
    page = await nurse.get("/g/t1d/moderation")
    assert handle in page.text
    await act(nurse, "approve", handle)
    assert await state_of(node, person.id) == ("active", "member")
    # And promotes, then bans them, as written with a leading "@"
    await act(nurse, "promote", handle)
    assert await state_of(node, person.id) == ("active", "moderator")
    await act(nurse, "ban", "@" + handle)
    assert (await state_of(node, person.id) or ("",))[0] == "banned"


async def test_a_handle_in_other_case_finds_the_one_remote_member(node: NodeContext) -> None:
    person = await remote_person(node, "CamelCase")
    async with node.transaction(reading=True) as session:
        found = await members.find_member_by_handle(session, "camelcase@PEER.example")
        assert found is not None and found.id == person.id
        assert await members.find_member_by_handle(session, "CamelCase@other.example") is None
        assert await members.find_member_by_handle(session, "Camel\x00Case@peer.example") is None


async def test_two_remote_members_differing_in_case_are_told_apart(node: NodeContext) -> None:
    upper = await remote_person(node, "Sam")
    lower = await remote_person(node, "sam")
    async with node.transaction(reading=True) as session:
        for person in (upper, lower):
            found = await members.find_member_by_handle(session, members.handle_of(person))
            assert found is not None and found.id == person.id


async def test_a_remote_group_is_found_by_its_name_whatever_its_case(node: NodeContext) -> None:
    facts = remote_facts("https://peer.example/groups/Diabetes", "DiabetesCircle")
    async with node.transaction() as session:
        group = await remote_store.upsert_remote_group(session, facts, node.clock.now())
    async with node.transaction(reading=True) as session:
        for address in ("DiabetesCircle@peer.example", "diabetescircle@Peer.Example"):
            found = await groups.find_group_by_address(session, address)
            assert found is not None and found.id == group.id, address
