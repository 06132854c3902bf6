"""Who may say what, over real HTTP against a real node: a group announces posts but never
vouches for their authors, only a group answers a Follow of it, a Delete counts only from
one who may delete, ancestor fetching is bounded, and recipients are capped.

The node under test is the "hospital" of tests/peers.py; the remote servers are FakeRemotes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from node.storage.models import ConditionGroup, Member, Membership, Post
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    PUBLIC,
    SECURITY_V1,
    FakeRemote,
    Hospital,
    cavage_headers,
    encode,
    post,
    public_pem,
)
from tests.test_forgery import (
    Circle,
    followed_circle,
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
