"""Who may say what, over real HTTP against a real node: a group announces posts but never
vouches for their authors, only a group answers a Follow of it, a Delete counts only from
one who may delete, ancestor fetching is bounded, and recipients are capped.

The node under test is the "hospital" of tests/peers.py; the remote servers are FakeRemotes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import event, func, select, update

from federation.processing import MAX_ANCESTOR_FETCHES
from federation.vocab import MAX_RECIPIENTS
from node.remote import TOMBSTONES_KEPT
from node.storage.models import ConditionGroup, DeletedObject, Member, Membership, Post
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    PUBLIC,
    SECURITY_V1,
    FakeRemote,
    Hospital,
    assert_refused,
    cavage_headers,
    encode,
    join,
    post,
    post_signed,
    public_pem,
)
from tests.test_forgery import (
    Circle,
    create_of,
    followed_circle,
    member_joins,
    page_by,
    post_as_circle,
    quiet_deliveries,
    tried,
)


async def post_kept(hospital: Hospital, ap_id: str) -> Post | None:
    async with hospital.running.node.transaction(reading=True) as session:
        found: Post | None = (
            await session.execute(select(Post).where(Post.ap_id == ap_id))
        ).scalar_one_or_none()
        return found


async def circle_followed(hospital: Hospital, remote: FakeRemote) -> Circle:
    circle = await followed_circle(hospital, remote)
    await eventually(lambda: quiet_deliveries(hospital), "the Follow delivered")
    return circle


# ---------------------------------------------------------------- posts live with their authors


@pytest.mark.parametrize("shape", ["Announce{Create{Page}}", "Announce{Page}"])
async def test_a_group_cannot_announce_a_post_in_the_name_of_a_person_on_another_server(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote, shape: str
) -> None:
    # Given nurse follows a remote group, and mallory has an account on a third server
    circle = await circle_followed(hospital, remote)
    author = third.actor("mallory")

    def announced(page: dict[str, Any]) -> dict[str, Any]:
        if shape == "Announce{Page}":
            return circle.announce(page)
        return circle.announce(circle.inner("Create", author, page))

    # When the group announces a Page that lives on the group's server but names her as
    # its author (and the group's server serves it so, when asked)
    path = f"/post/{uuid.uuid4().hex}"
    forged = {"id": remote.base_url + path, "type": "Page", "attributedTo": author,
              "name": "Not hers", "content": "<p>Words put in her mouth</p>",
              "to": [PUBLIC], "audience": circle.iri}  # fmt: skip
    remote.documents[path] = {"@context": AS2, **forged}
    document = announced(forged)
    answer = await post_as_circle(hospital, circle, document)
    assert answer.status == 202, answer
    # Then it is refused for good, and no thread is hers
    assert await tried(hospital, document["id"]) == (
        "failed",
        "a post is taken only from its author's server",
    )
    assert await post_kept(hospital, forged["id"]) is None

    # And a Page of hers that lives on her server, announced with an altered copy, is kept
    # as her server gives it
    path = f"/pages/{uuid.uuid4().hex}"
    genuine = {"id": third.base_url + path, "type": "Page", "attributedTo": author,
               "name": "Hers", "content": "<p>What she wrote</p>", "to": [PUBLIC],
               "audience": circle.iri}  # fmt: skip
    third.documents[path] = {"@context": AS2, **genuine}
    document = announced({**genuine, "content": "<p>Altered on the way</p>"})
    answer = await post_as_circle(hospital, circle, document)
    assert answer.status == 202, answer
    assert await tried(hospital, document["id"]) == ("done", "")
    kept = await post_kept(hospital, genuine["id"])
    assert kept is not None and "What she wrote" in kept.content_html
    assert third.gets(path)


# ---------------------------------------------------------------- only the group answers


async def nurse_in_circle(hospital: Hospital, circle: Circle) -> str | None:
    async with hospital.running.node.transaction(reading=True) as session:
        state: str | None = (
            await session.execute(
                select(Membership.state)
                .join(Member, Member.id == Membership.member_id)
                .join(ConditionGroup, ConditionGroup.id == Membership.group_id)
                .where(Member.username == "nurse", ConditionGroup.actor_iri == circle.iri)
            )
        ).scalar_one_or_none()
        return state


def answer_to_nurse(hospital: Hospital, circle: Circle, kind: str, actor: str) -> dict[str, Any]:
    nurse = hospital.base_url + "/u/nurse"
    return {"@context": AS2, "id": f"{actor}/answers/{uuid.uuid4().hex}", "type": kind,
            "actor": actor, "object": {"id": f"{nurse}/follows/1", "type": "Follow",
                                       "actor": nurse, "object": circle.iri}}  # fmt: skip


@pytest.mark.parametrize("answering", ["another account", "the instance actor"])
async def test_only_the_group_itself_answers_our_members_follow(
    hospital: Hospital, remote: FakeRemote, keys: dict[str, rsa.RSAPrivateKey], answering: str
) -> None:
    # Given nurse asked to follow a remote group, which has not answered yet
    circle = await circle_followed(hospital, remote)
    assert await nurse_in_circle(hospital, circle) == "pending"
    # And another actor of the group's server: a person, or the server's instance actor
    if answering == "another account":
        actor, key, key_id = remote.actor("mallory"), remote.keys["mallory"], None
    else:
        actor, key = remote.base_url + "/actor", keys["impostor"]
        remote.documents["/actor"] = {
            "@context": [AS2, SECURITY_V1], "id": actor, "type": "Application",
            "preferredUsername": "instance", "inbox": actor + "/inbox",
            "publicKey": {"id": actor + "#main-key", "owner": actor,
                          "publicKeyPem": public_pem(key)},
        }  # fmt: skip
        key_id = actor + "#main-key"

    async def answer(document: dict[str, Any]) -> tuple[str, str]:
        url = hospital.base_url + "/inbox"
        body = encode(document)
        headers = cavage_headers(url=url, body=body, key=key, key_id=key_id or actor + "#main-key",
                                 now=hospital.now())  # fmt: skip
        sent = await post(url, body, headers)
        assert sent.status == 202, sent
        return await tried(hospital, document["id"])

    # When that actor accepts nurse's Follow in the group's name
    await answer(answer_to_nurse(hospital, circle, "Accept", actor))
    # Then she is still waiting for the group's answer
    assert await nurse_in_circle(hospital, circle) == "pending"
    # And a Reject counts only from the instance actor (a healthnode node refuses a Follow
    # of a group it does not show from there)
    await answer(answer_to_nurse(hospital, circle, "Reject", actor))
    if answering == "another account":
        assert await nurse_in_circle(hospital, circle) == "pending"
        # And the group's own Accept makes her a member
        accept = answer_to_nurse(hospital, circle, "Accept", circle.iri)
        assert (await post_as_circle(hospital, circle, accept)).status == 202
        assert await tried(hospital, accept["id"]) == ("done", "")
        assert await nurse_in_circle(hospital, circle) == "active"
    else:
        assert await nurse_in_circle(hospital, circle) is None


# ---------------------------------------------------------------- Deletes and tombstones


def delete_by(remote: FakeRemote, name: str, object_id: str) -> dict[str, Any]:
    actor = remote.actor(name)
    return {"@context": AS2, "id": f"{actor}/deletes/{uuid.uuid4().hex}", "type": "Delete",
            "actor": actor, "object": object_id, "to": [PUBLIC]}  # fmt: skip


async def sent_by(
    hospital: Hospital, remote: FakeRemote, name: str, document: dict[str, Any]
) -> None:
    """`name` sends the document to the group's inbox, and it is applied."""
    answer = await post_signed(hospital, remote, document, signer=name)
    assert answer.status == 202, answer
    assert await tried(hospital, document["id"]) == ("done", "")


async def test_a_delete_counts_before_the_post_only_from_one_who_may_delete_it(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory and trent, two accounts of one server, are members of the public group
    await join(hospital, remote)
    await member_joins(hospital, remote, "trent")
    group = hospital.group_iri
    # When trent deletes the id of a post of mallory's that has not arrived yet, and then
    # her Create of it arrives
    page = page_by(remote, "mallory", group, "Mine to delete")
    await sent_by(hospital, remote, "trent", delete_by(remote, "trent", page["id"]))
    await sent_by(hospital, remote, "mallory", create_of(remote, "mallory", page, group))
    # Then her thread is there
    assert await post_kept(hospital, page["id"]) is not None

    # And her own Delete before her Create still keeps her post out
    page = page_by(remote, "mallory", group, "Changed my mind")
    await sent_by(hospital, remote, "mallory", delete_by(remote, "mallory", page["id"]))
    await sent_by(hospital, remote, "mallory", create_of(remote, "mallory", page, group))
    assert await post_kept(hospital, page["id"]) is None

    # And so does one by a moderator of the group the post comes to
    async with hospital.running.node.transaction() as session:
        trent = select(Member.id).where(Member.actor_iri == remote.actor("trent"))
        await session.execute(
            update(Membership).where(Membership.member_id == trent.scalar_subquery())
            .values(role="moderator")
        )  # fmt: skip
    page = page_by(remote, "mallory", group, "Moderated away")
    await sent_by(hospital, remote, "trent", delete_by(remote, "trent", page["id"]))
    await sent_by(hospital, remote, "mallory", create_of(remote, "mallory", page, group))
    assert await post_kept(hospital, page["id"]) is None


async def tombstones(hospital: Hospital) -> set[str]:
    async with hospital.running.node.transaction(reading=True) as session:
        return set((await session.execute(select(DeletedObject.ap_id))).scalars())


async def test_tombstones_of_posts_deleted_before_they_arrived_expire(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory deleted a post of hers before it reached the node
    await join(hospital, remote)
    first = page_by(remote, "mallory", hospital.group_iri, "Gone")
    await sent_by(hospital, remote, "mallory", delete_by(remote, "mallory", first["id"]))
    assert await tombstones(hospital) == {first["id"]}
    # When the tombstone's retention passes and the inbox worker runs again
    hospital.running.node.clock.advance(TOMBSTONES_KEPT + timedelta(hours=1))  # type: ignore[attr-defined]
    second = page_by(remote, "mallory", hospital.group_iri, "Also gone")
    await sent_by(hospital, remote, "mallory", delete_by(remote, "mallory", second["id"]))
    # Then the old tombstone is pruned, and the new one kept
    assert await tombstones(hospital) == {second["id"]}


# ---------------------------------------------------------------- ancestors, bounded


@pytest.mark.parametrize("chain", ["a cycle", "too long"])
async def test_an_announced_reply_above_a_looping_or_endless_chain_fails_for_good(
    hospital: Hospital, remote: FakeRemote, chain: str
) -> None:
    # Given nurse follows a remote group, whose server serves a chain of replies by mallory:
    # two that answer each other, or more than the node fetches above one reply
    circle = await circle_followed(hospital, remote)
    mallory = remote.actor("mallory")
    tag = uuid.uuid4().hex
    paths = [f"/notes/{tag}-{n}" for n in range(2 if chain == "a cycle" else 8)]
    for n, path in enumerate(paths):
        parent = paths[(n + 1) % len(paths)]
        remote.documents[path] = {
            "@context": AS2, "id": remote.base_url + path, "type": "Note",
            "attributedTo": mallory, "content": f"<p>{n}</p>",
            "inReplyTo": remote.base_url + parent, "to": [PUBLIC], "cc": [circle.iri],
            "audience": circle.iri,
        }  # fmt: skip
    if chain == "too long":
        opening = remote.documents[paths[-1]]
        opening.update(type="Page", name="The start")
        del opening["inReplyTo"]
    # When the group announces a reply to the first of them
    reply = {"id": f"{mallory}/notes/{tag}-reply", "type": "Note", "attributedTo": mallory,
             "content": "<p>A reply</p>", "inReplyTo": remote.base_url + paths[0],
             "to": [PUBLIC], "cc": [circle.iri], "audience": circle.iri}  # fmt: skip
    document = circle.announce(circle.inner("Create", mallory, reply))
    assert (await post_as_circle(hospital, circle, document)).status == 202
    # Then the item fails for good, after a few fetches, each post fetched once at most
    state, error = await tried(hospital, document["id"])
    expected = (
        "the posts this replies to answer each other in a cycle"
        if chain == "a cycle"
        else f"more than {MAX_ANCESTOR_FETCHES} posts above this reply are missing"
    )
    assert (state, error) == ("failed", expected)
    fetches = [len(remote.gets(path)) for path in paths]
    assert max(fetches) == 1 and sum(fetches) <= MAX_ANCESTOR_FETCHES, fetches
    # And nothing of the chain was kept
    for path in paths:
        assert await post_kept(hospital, remote.base_url + path) is None


# ---------------------------------------------------------------- recipients


def create_addressed_to(
    hospital: Hospital, remote: FakeRemote, addresses: list[str]
) -> dict[str, Any]:
    page = page_by(remote, "mallory", hospital.group_iri, "Hello everyone")
    page["cc"] = addresses
    return create_of(remote, "mallory", page, hospital.group_iri)


async def test_an_activity_addressed_to_too_many_recipients_is_refused_at_the_inbox(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory is a member of the public group
    await join(hospital, remote)
    # When she sends a Create whose object names more local-looking addresses than the cap
    many = [f"{hospital.base_url}/g/g{n}" for n in range(MAX_RECIPIENTS + 1)]
    answer = await post_signed(hospital, remote, create_addressed_to(hospital, remote, many))
    # Then it is refused with the reason, and nothing is kept
    assert_refused(answer, 400, f"at most {MAX_RECIPIENTS}")
    async with hospital.running.node.transaction(reading=True) as session:
        assert (await session.execute(select(func.count()).select_from(Post))).scalar() == 0


async def test_the_groups_an_activity_is_addressed_to_are_found_with_one_query(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory is a member of the public group
    await join(hospital, remote)
    # When she sends, to the shared inbox, a Create whose object is addressed to many
    # local-looking groups that do not exist before the one that does (within the cap)
    addresses = [f"{hospital.base_url}/g/g{n}" for n in range(300)] + [hospital.group_iri]
    document = create_addressed_to(hospital, remote, addresses)
    document["cc"] = []
    del document["audience"], document["object"]["audience"]
    document["object"]["to"] = [PUBLIC]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "condition_groups" in statement:
            statements.append(statement)

    engine = hospital.running.node.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        answer = await post_signed(hospital, remote, document, url=hospital.base_url + "/inbox")
        assert answer.status == 202, answer
        assert await tried(hospital, document["id"]) == ("done", "")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # Then the thread is in the group, and the groups were looked up a few times, not 300
    assert await post_kept(hospital, document["object"]["id"]) is not None
    assert len(statements) < 20, len(statements)
