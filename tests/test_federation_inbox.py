"""The inbox edge over real HTTP: what a signed POST must prove before anything is kept.

A fake remote server (a real aiohttp app on a loopback port) publishes actors whose RSA keys
this file generates, and records every request it receives, so the Accept or Reject our node
sends back can be read. The node under test is a real node ("hospital") serving its app on
another loopback port. Requests are signed here, by hand (draft-cavage and RFC 9421), without
federation.httpsig, so that a fault shared by our signer and our verifier cannot hide.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, select

from node.groups import create_group, find_group
from node.storage.models import InboxItem, Member, Post
from tests.federation_harness import eventually
from tests.peers import (
    AS2,
    AS2_JSON,
    MIB,
    PUBLIC,
    FakeRemote,
    Hospital,
    Received,
    assert_nothing_kept,
    assert_refused,
    assert_unverified,
    at_once,
    b64,
    count,
    deliveries_settled,
    encode,
    follow,
    http_date,
    inbox_items,
    join,
    post,
    post_signed,
    processed,
    remote_memberships,
    rfc9421_headers,
    signed,
)

# ---------------------------------------------------------------- requests refused at the edge


async def test_an_unsigned_post_is_refused(hospital: Hospital, remote: FakeRemote) -> None:
    # Given a well-formed Follow with a matching Digest and a current Date, but no signature
    body = encode(follow(remote, "mallory", hospital.group_iri))
    headers = {
        "Date": http_date(hospital.now()),
        "Digest": "SHA-256=" + b64(hashlib.sha256(body).digest()),
    }
    # When it is POSTed to the group's inbox
    answer = await post(hospital.group_inbox, body, headers)
    # Then it is refused as unsigned, and nothing is kept
    assert_refused(answer, 401, "not signed")
    await assert_nothing_kept(hospital)
    assert remote.received == [], "no key should be fetched for an unsigned request"


@pytest.mark.parametrize(
    "signature",
    [
        "this is not a list of pairs",
        'keyId="http://127.0.0.1/users/mallory#main-key",algorithm="rsa-sha256"',
        'keyId="k",headers="(request-target) host date digest",signature="%%not base64%%"',
    ],
    ids=["garbage", "no-signature-value", "bad-base64"],
)
async def test_a_malformed_signature_header_is_a_bad_request(
    hospital: Hospital, remote: FakeRemote, signature: str
) -> None:
    # Given a Follow whose other headers are right, but whose Signature cannot be parsed
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body)
    headers["Signature"] = signature
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the request is malformed: 400, and nothing is kept
    assert_refused(answer, 400, "malformed signature")
    await assert_nothing_kept(hospital)


async def test_a_body_that_is_not_json_is_a_bad_request(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a properly signed request whose body is not JSON
    body = b"Follow me, please: I am not JSON"
    headers = signed(hospital, remote, body)
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then it is a bad request about JSON
    assert_refused(answer, 400, "not json")
    await assert_nothing_kept(hospital)


@pytest.mark.parametrize("missing", ["id", "type", "actor"])
async def test_an_activity_without_id_type_or_actor_is_a_bad_request(
    hospital: Hospital, remote: FakeRemote, missing: str
) -> None:
    # Given a properly signed Follow lacking one of id, type and actor
    document = follow(remote, "mallory", hospital.group_iri)
    del document[missing]
    # When it is POSTed
    answer = await post_signed(hospital, remote, document)
    # Then it is a bad request that names what is missing
    assert_refused(answer, 400, missing)
    await assert_nothing_kept(hospital)


async def test_a_key_whose_owner_is_not_the_actor_is_refused(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a Follow whose actor is trent, validly signed with mallory's published key
    document = follow(remote, "trent", hospital.group_iri)
    # When mallory POSTs it
    answer = await post_signed(hospital, remote, document, signer="mallory")
    # Then the signer is not the actor: 401, and nothing is kept
    assert_unverified(answer, "someone other than the actor")
    await assert_nothing_kept(hospital)
    assert remote.gets("/users/mallory"), "the node should have fetched mallory's key"


async def test_a_signature_by_a_key_mallory_does_not_publish_is_refused_after_one_fetch(
    hospital: Hospital, remote: FakeRemote, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    # Given a Follow by mallory signed with a key that is not the one she publishes
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body, key=keys["impostor"])
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the node fetched her key and refused; it just fetched it, so it does not fetch it
    # again for a rotation (tests/test_inbox_edge.py: not before a minute has passed)
    assert_unverified(answer, "does not verify")
    assert len(remote.gets("/users/mallory")) == 1, [r.path for r in remote.received]
    await assert_nothing_kept(hospital)


async def test_a_body_changed_after_signing_fails_its_digest(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a Follow signed by mallory, whose body is then swapped for another Follow
    signed_body = encode(follow(remote, "mallory", hospital.group_iri))
    sent_body = encode(follow(remote, "mallory", hospital.group_iri))
    headers = signed(hospital, remote, signed_body)
    # When the changed body is POSTed with the original headers
    answer = await post(hospital.group_inbox, sent_body, headers)
    # Then the Digest does not match: 401
    assert_refused(answer, 401, "digest")
    await assert_nothing_kept(hospital)


@pytest.mark.parametrize("offset_hours", [-2, 2])
async def test_a_date_more_than_an_hour_off_is_refused(
    hospital: Hospital, remote: FakeRemote, offset_hours: int
) -> None:
    # Given a Follow signed by mallory with a Date two hours from the node's clock
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body, now=hospital.now() + timedelta(hours=offset_hours))
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the date is refused: 401
    assert_refused(answer, 401, "date")
    await assert_nothing_kept(hospital)


async def test_an_unsigned_created_parameter_does_not_excuse_a_stale_date(
    remote: FakeRemote, hospital: Hospital
) -> None:
    # Given a Follow that mallory signed two hours ago (its Date is covered by the signature)
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body, now=hospital.now() - timedelta(hours=2))
    # And a created parameter claiming "now", appended by someone else (not covered)
    headers["Signature"] += f",created={int(hospital.now().timestamp())}"
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the stale Date still refuses it
    assert_refused(answer, 401, "date")
    await assert_nothing_kept(hospital)


async def test_a_signature_that_does_not_cover_the_digest_is_refused(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a Follow with a correct Digest, signed over (request-target) host date only
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body, covered=("(request-target)", "host", "date"))
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the body is not bound to the signature: 401
    assert_refused(answer, 401, "digest")
    await assert_nothing_kept(hospital)


async def test_an_activity_id_on_another_origin_than_its_actor_is_refused(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given a Follow by mallory whose id lives on a third server
    document = follow(remote, "mallory", hospital.group_iri)
    document["id"] = f"{third.base_url}/follows/{uuid.uuid4().hex}"
    # When mallory signs and POSTs it
    answer = await post_signed(hospital, remote, document)
    # Then the id is not the actor's to mint: 401
    assert_refused(answer, 401, "id is not on its actor's server")
    await assert_nothing_kept(hospital)


async def test_a_key_id_on_a_third_server_is_refused(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given a Follow by mallory (on the remote server) signed with "her" key on a third server
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body, key_id=third.key_id("mallory"))
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the key is not on the actor's server: 401. (The key is asked for before the body
    # is read, so the third server is asked: a sender could as well have named an actor there.)
    assert_refused(answer, 401, "signing key is not on the actor's server")
    await assert_nothing_kept(hospital)


async def test_a_body_over_one_mebibyte_is_refused_before_any_signature_work(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a signed Follow padded to just over 1 MiB
    document = follow(remote, "mallory", hospital.group_iri)
    document["content"] = ""
    padding_size = MIB + 1 - len(encode(document))
    document["content"] = "x" * padding_size
    body = encode(document)
    assert len(body) == MIB + 1
    headers = signed(hospital, remote, body)

    # When it is POSTed with its length declared
    declared = await post(hospital.group_inbox, body, headers)

    # And again streamed in chunks, with no length declared
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    streamed = await post(hospital.group_inbox, chunks(), headers)

    # Then both are too large, and no key was fetched, nothing sent, nothing kept
    for answer in (declared, streamed):
        assert_refused(answer, 413, "over")
    assert remote.received == []
    assert hospital.running.recorder.requests == []
    await assert_nothing_kept(hospital)

    # And a signed body of exactly 1 MiB is not too large: it is verified and accepted
    document["content"] = "x" * (padding_size - 1)
    body = encode(document)
    assert len(body) == MIB
    answer = await post(hospital.group_inbox, body, signed(hospital, remote, body))
    assert answer.status == 202, answer


# ---------------------------------------------------------------- follows


def cavage_verify(request: Received, path: str, public_key: Any) -> str:
    """Check a delivery's draft-cavage signature and Digest; answers the keyId."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', request.headers["signature"]))
    covered = params["headers"].split()
    assert {"(request-target)", "host", "date", "digest"} <= set(covered), covered
    assert request.headers["digest"] == "SHA-256=" + b64(hashlib.sha256(request.body).digest())
    lines = [
        f"{name}: post {path}" if name == "(request-target)" else f"{name}: {request.headers[name]}"
        for name in covered
    ]
    public_key.verify(
        base64.b64decode(params["signature"]),
        "\n".join(lines).encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return params["keyId"]


async def published_key(url: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": AS2_JSON}) as response,
    ):
        assert response.status == 200, url
        document = json.loads(await response.text())
    return serialization.load_pem_public_key(document["publicKey"]["publicKeyPem"].encode())


async def test_a_follow_of_a_public_group_is_accepted_and_answered_with_a_signed_accept(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a Follow of the public group, signed by mallory
    document = follow(remote, "mallory", hospital.group_iri)
    # When she POSTs it to the group's inbox
    answer = await post_signed(hospital, remote, document)
    # Then it is accepted for processing
    assert answer.status == 202, answer
    assert await inbox_items(hospital) == 1

    # And an Accept from the group, embedding her Follow, reaches her inbox
    accepts = await eventually(lambda: at_once(remote.posted("Accept")), "the Accept at mallory")
    accept = accepts[0]
    assert accept["actor"] == hospital.group_iri
    assert isinstance(accept["object"], dict), accept
    assert accept["object"]["id"] == document["id"]
    assert accept["object"]["type"] == "Follow"
    assert accept["object"]["actor"] == remote.actor("mallory")
    assert accept["object"]["object"] == hospital.group_iri
    # And it is signed with the group's published key, over its body
    delivery = next(r for r in remote.received if r.method == "POST")
    key_id = cavage_verify(
        delivery, "/users/mallory/inbox", await published_key(hospital.group_iri)
    )
    assert key_id == hospital.group_iri + "#main-key"
    # And she is now an active member
    assert await remote_memberships(hospital) == 1


@pytest.mark.parametrize(
    "key_known",
    [
        pytest.param(
            False,
            id="first-contact",
        ),
        pytest.param(True, id="key-cached"),
    ],
)
async def test_the_same_follow_delivered_twice_at_once_is_kept_once(
    hospital: Hospital, remote: FakeRemote, key_known: bool
) -> None:
    expected_accepts = 1
    if key_known:
        # Given mallory is known already: an earlier Follow of hers was accepted
        await join(hospital, remote)
        expected_accepts = 2
    # And one signed Follow of the public group
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = signed(hospital, remote, body)
    # When it is POSTed twice concurrently
    answers = await asyncio.gather(
        post(hospital.group_inbox, body, headers), post(hospital.group_inbox, body, headers)
    )
    # Then both deliveries are acknowledged, but one inbox item is kept
    assert [answer.status for answer in answers] == [202, 202], answers
    this_one = select(func.count()).select_from(InboxItem)
    this_one = this_one.where(InboxItem.activity_id == document["id"])
    assert await count(hospital, this_one) == 1
    assert await inbox_items(hospital) == expected_accepts
    # And once processed, she has one membership, and this Follow one Accept
    state = await eventually(lambda: processed(hospital, document["id"]), "the Follow processed")
    assert state == "done"

    async def accepts() -> list[dict[str, Any]] | None:
        found = remote.posted("Accept")
        return found if len(found) >= expected_accepts else None

    await eventually(accepts, "the Accept at mallory")
    assert await remote_memberships(hospital) == 1
    answered = [a for a in remote.posted("Accept") if a["object"]["id"] == document["id"]]
    assert len(answered) == 1, answered


async def test_a_follow_of_a_private_or_missing_group_is_rejected_by_the_instance_actor(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a private group on the node
    node = hospital.running.node
    slug, name = "hushgroup", "Quiet condition circle"
    async with node.transaction() as session:
        owner = (await session.execute(select(Member).where(Member.username == "nurse"))).scalar()
        assert owner is not None
        await create_group(
            session, node.settings.limits, owner_id=owner.id, slug=slug, name=name,
            private=True, now=node.clock.now(),
        )  # fmt: skip
    private_iri = f"{hospital.base_url}/g/{slug}"
    missing_iri = f"{hospital.base_url}/g/nosuchgroup"
    # And its group inbox answers exactly as a missing group's does
    for iri in (private_iri, missing_iri):
        assert (await post(iri + "/inbox", b"{}")).status == 404, iri

    # When mallory Follows the private group, then a group that does not exist
    follows = [follow(remote, "mallory", iri) for iri in (private_iri, missing_iri)]
    for document in follows:
        answer = await post_signed(hospital, remote, document, url=hospital.base_url + "/inbox")
        assert answer.status == 202, answer

    # Then each is answered with a Reject from the instance actor, embedding the Follow
    async def both_rejects() -> list[dict[str, Any]] | None:
        rejects = remote.posted("Reject")
        return rejects if len(rejects) == 2 else None

    rejects = await eventually(both_rejects, "two Rejects at mallory")
    instance = hospital.base_url + "/actor"
    by_follow = {reject["object"]["id"]: reject for reject in rejects}
    assert set(by_follow) == {document["id"] for document in follows}
    for document in follows:
        reject = by_follow[document["id"]]
        assert reject["actor"] == instance
        assert reject["object"]["object"] == document["object"]
    # And the two Rejects are alike but for the Follow they answer: no tell of existence
    assert {key for key in by_follow[follows[0]["id"]]} == {
        key for key in by_follow[follows[1]["id"]]
    }
    for delivery in (r for r in remote.received if r.method == "POST"):
        assert f'keyId="{instance}#main-key"' in delivery.headers["signature"]
    # And nothing of the private group left the node, except mallory's own Follow echoed back
    assert await remote_memberships(hospital) == 0
    sent = hospital.running.recorder.requests
    assert sent, "the node sent nothing"
    for request in sent:
        text = request.body.decode("utf-8", "replace")
        if text.startswith("{"):
            document = json.loads(text)
            if document.get("type") == "Reject" and document["object"] == follows[0]:
                document = {**document, "object": "(mallory's own Follow)"}
            text = json.dumps(document)
        blob = request.url + text
        for secret in (slug, name):
            assert secret not in blob, f"{secret!r} left the node in {request.method} {request.url}"


# ---------------------------------------------------------------- objects from elsewhere


@dataclass
class CrossOriginCreate:
    create: dict[str, Any]
    note_iri: str
    note_path: str
    state: str


async def create_with_forged_copy(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote, origin_serves_it: bool
) -> CrossOriginCreate:
    """mallory joins, then sends a Create embedding her own copy of a Note on a third server,
    whose text differs from what that server serves (or the server has no such Note)."""
    await join(hospital, remote)
    note_path = f"/notes/{uuid.uuid4().hex}"
    note_iri = third.base_url + note_path
    genuine = {
        "@context": AS2,
        "id": note_iri,
        "type": "Note",
        "attributedTo": remote.actor("mallory"),
        "name": "Sleep and sugar",
        "content": "<p>The text its origin serves</p>",
        "to": [hospital.group_iri, PUBLIC],
        "audience": hospital.group_iri,
    }
    if origin_serves_it:
        third.documents[note_path] = genuine
    forged = {key: value for key, value in genuine.items() if key != "@context"}
    forged["content"] = f"<p>{FORGED}</p>"
    create = {
        "@context": AS2,
        "id": f"{remote.actor('mallory')}/activities/{uuid.uuid4().hex}",
        "type": "Create",
        "actor": remote.actor("mallory"),
        "object": forged,
        "to": [PUBLIC],
        "cc": [hospital.group_iri],
        "audience": hospital.group_iri,
    }
    answer = await post_signed(hospital, remote, create)
    assert answer.status == 202, answer
    state = await eventually(lambda: processed(hospital, create["id"]), "the Create processed")
    return CrossOriginCreate(create, note_iri, note_path, state)


FORGED = "A forged text, only embedded"


@pytest.mark.parametrize("origin_serves_it", [True, False], ids=["origin-serves", "origin-404"])
async def test_an_embedded_object_from_another_origin_is_fetched_not_trusted(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote, origin_serves_it: bool
) -> None:
    # Given mallory is a member of the public group
    # When she sends a Create whose embedded Note has its id on a third server, with a text
    # other than the one that server serves (or the server answers 404)
    sent = await create_with_forged_copy(hospital, remote, third, origin_serves_it)

    # Then the node asked the object's own origin for it
    assert third.gets(sent.note_path), [r.path for r in third.received]
    # And what it keeps, if anything, is what the origin served, never the embedded copy
    async with hospital.running.node.transaction() as session:
        posts = list((await session.execute(select(Post))).scalars())
    assert not [p for p in posts if FORGED in p.content_html + p.source], "the copy was kept"
    # And a Note that lives elsewhere than on its author's server is refused, whatever that
    # server serves (an announced one that its author's server serves is kept as served:
    # tests/test_processing_origins.py)
    assert sent.state == "failed"
    assert [post for post in posts if post.ap_id == sent.note_iri] == []


async def test_the_group_does_not_republish_an_embedded_copy_it_did_not_trust(
    hospital: Hospital, remote: FakeRemote, third: FakeRemote
) -> None:
    # Given mallory, a follower of the public group, sends a Create embedding a forged copy
    # of a Note whose origin serves another text
    sent = await create_with_forged_copy(hospital, remote, third, origin_serves_it=True)
    assert sent.state == "failed"  # not on its author's server
    # When the group has delivered what it announces to its followers
    await eventually(lambda: deliveries_settled(hospital), "the deliveries settled")
    # Then no request that left the node carries the forged text
    sent_bodies = [request.body for request in hospital.running.recorder.requests]
    assert sent_bodies, "the node sent nothing"
    leaked = [body[:300] for body in sent_bodies if FORGED.encode() in body]
    assert leaked == [], leaked


# ---------------------------------------------------------------- RFC 9421


async def test_an_rfc9421_signed_follow_is_accepted(hospital: Hospital, remote: FakeRemote) -> None:
    # Given a Follow of the public group that mallory signs per RFC 9421 (no Date, no Digest)
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    headers = rfc9421_headers(
        url=hospital.group_inbox, body=body, key=remote.keys["mallory"],
        key_id=remote.key_id("mallory"), now=hospital.now(),
    )  # fmt: skip
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then it is accepted, kept once, and answered with an Accept
    assert answer.status == 202, answer
    async with hospital.running.node.transaction() as session:
        ids = list((await session.execute(select(InboxItem.activity_id))).scalars())
    assert ids == [document["id"]]
    await eventually(lambda: at_once(remote.posted("Accept")), "the Accept at mallory")


@pytest.mark.parametrize("tampering", ["body swapped", "other target", "other method"])
async def test_a_tampered_rfc9421_signature_is_refused(
    hospital: Hospital, remote: FakeRemote, tampering: str
) -> None:
    # Given an RFC 9421 signature by mallory over one request
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    signed_url = hospital.group_inbox
    if tampering == "other target":
        signed_url = hospital.base_url + "/inbox"
    headers = rfc9421_headers(
        url=signed_url, body=body, key=remote.keys["mallory"],
        key_id=remote.key_id("mallory"), now=hospital.now(),
    )  # fmt: skip
    if tampering == "other method":
        # ... whose base names another method than the POST it travels on
        params = headers["Signature-Input"].removeprefix("sig1=")
        base = "\n".join(
            [
                '"@method": PUT',
                f'"@target-uri": {hospital.group_inbox}',
                f'"content-digest": {headers["Content-Digest"]}',
                f'"@signature-params": {params}',
            ]
        )
        signature = remote.keys["mallory"].sign(base.encode(), padding.PKCS1v15(), hashes.SHA256())
        headers["Signature"] = f"sig1=:{b64(signature)}:"
    if tampering == "body swapped":
        # ... then another Follow is sent instead, with a Content-Digest that matches it
        document = follow(remote, "mallory", hospital.group_iri)
        body = encode(document)
        headers["Content-Digest"] = "sha-256=:" + b64(hashlib.sha256(body).digest()) + ":"
    # When the request is POSTed to the group's inbox
    answer = await post(hospital.group_inbox, body, headers)
    # Then the signature does not verify: 401, and nothing is kept
    assert_unverified(answer, "does not verify")
    await assert_nothing_kept(hospital)


async def test_an_rfc9421_signature_that_does_not_cover_the_content_digest_is_refused(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a Follow with a correct Content-Digest, signed per RFC 9421 over @method and
    # @target-uri only (the base built by hand, section 2.5)
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    params = (
        f'("@method" "@target-uri");created={int(hospital.now().timestamp())}'
        f';keyid="{remote.key_id("mallory")}";alg="rsa-v1_5-sha256"'
    )
    base = f'"@method": POST\n"@target-uri": {hospital.group_inbox}\n"@signature-params": {params}'
    signature = remote.keys["mallory"].sign(base.encode(), padding.PKCS1v15(), hashes.SHA256())
    headers = {
        "Content-Digest": "sha-256=:" + b64(hashlib.sha256(body).digest()) + ":",
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{b64(signature)}:",
    }
    # When it is POSTed
    answer = await post(hospital.group_inbox, body, headers)
    # Then the body is not bound to the signature: 401
    assert_refused(answer, 401, "content-digest")
    await assert_nothing_kept(hospital)


async def test_an_expired_rfc9421_signature_is_refused(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given a Follow signed per RFC 9421 thirty minutes ago, declared to expire after ten
    document = follow(remote, "mallory", hospital.group_iri)
    body = encode(document)
    created = hospital.now() - timedelta(minutes=30)
    headers = rfc9421_headers(
        url=hospital.group_inbox, body=body, key=remote.keys["mallory"],
        key_id=remote.key_id("mallory"), now=created, expires=created + timedelta(minutes=10),
    )  # fmt: skip
    # When it is POSTed twenty minutes after it expired
    answer = await post(hospital.group_inbox, body, headers)
    # Then it is refused as expired
    assert_refused(answer, 401, "expire")
    await assert_nothing_kept(hospital)


async def test_a_burst_from_a_new_actor_fetches_its_key_once(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given an actor the node has never seen
    assert not remote.gets("/users/mallory")
    # When twenty of her activities arrive at once
    answers = await asyncio.gather(
        *(
            post_signed(
                hospital, remote, {**follow(remote, "mallory", hospital.group_iri), "type": "Like"}
            )
            for _ in range(20)
        )
    )
    # Then all are accepted, and her actor document was fetched once
    assert [answer.status for answer in answers] == [202] * 20
    assert len(remote.gets("/users/mallory")) == 1


async def test_the_group_an_activity_came_to_is_carried_to_processing(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory's Follow of the public group, POSTed to the group's own inbox, and her
    # Undo of it, POSTed to the node's shared inbox
    follow_it = follow(remote, "mallory", hospital.group_iri)
    answer = await post_signed(hospital, remote, follow_it)
    assert answer.status == 202, answer
    await eventually(lambda: processed(hospital, follow_it["id"]), "the Follow processed")
    undo = {
        "@context": AS2, "id": f"{remote.actor('mallory')}/undo/{uuid.uuid4().hex}",
        "type": "Undo", "actor": remote.actor("mallory"), "object": follow_it,
    }  # fmt: skip
    answer = await post_signed(hospital, remote, undo, url=hospital.base_url + "/inbox")
    assert answer.status == 202, answer
    await eventually(lambda: processed(hospital, undo["id"]), "the Undo processed")

    # Then the first was stored with the group it came to, the second with none
    async with hospital.running.node.transaction() as session:
        rows = dict(
            (
                await session.execute(
                    select(InboxItem.activity_id, InboxItem.addressed_group_id).where(
                        InboxItem.activity_id.in_([follow_it["id"], undo["id"]])
                    )
                )
            ).all()
        )
        group = await find_group(session, "t1d")
    assert group is not None
    assert rows == {follow_it["id"]: group.id, undo["id"]: None}
