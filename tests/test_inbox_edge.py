"""The inbox's edge under attack: nothing is read from a body before its sender is known.

A node serves over HTTP on loopback; fake remote servers (tests/peers.py) publish keys and
count the requests they get. What is checked: a hostile JSON-LD body whose key never comes
does not stall the pages, and no JSON-LD work is done for it; an authenticated sender's
document is processed within bounds; an unsigned body is not parsed; the 401 after a key
fetch says the same whatever went wrong; badly signed floods cost one key fetch a minute;
and the digest checked is the one that was signed.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from federation.inbox import UNVERIFIED
from tests.federation_harness import free_port
from tests.peers import (
    AS2,
    AS2_JSON,
    INBOX_LOG,
    MIB,
    Answer,
    FakeRemote,
    Hospital,
    assert_nothing_kept,
    assert_refused,
    b64,
    cavage_headers,
    encode,
    follow,
    http_date,
    inbox_items,
    post,
    signed,
)

# ---------------------------------------------------------------- a server that never answers


@dataclass
class SilentServer:
    """Accepts connections on a loopback port and never answers until closed."""

    port: int
    connections: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", self.port)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        await self.released.wait()
        writer.close()

    async def close(self) -> None:
        self.released.set()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[SilentServer]:
    server = SilentServer(free_port())
    await server.start()
    yield server
    await server.close()


# ---------------------------------------------------------------- helpers


def hostile_document(actor: str, target: str, nodes: int = 14_500) -> dict[str, Any]:
    """A Follow in a @vocab context (so not on the plain-ActivityStreams fast path) carrying
    `nodes` small objects: about 870 KiB, seconds of JSON-LD expansion if expanded."""
    return {
        "@context": [AS2, {"@vocab": "http://vocab.example/"}],
        "id": actor + "/follows/hostile",
        "type": "Follow",
        "actor": actor,
        "object": target,
        "filler": [
            {"n": index, "label": "a small node, one of many", "kind": "filler"}
            for index in range(nodes)
        ],
    }


async def page_seconds(hospital: Hospital, path: str = "/g/t1d") -> float:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.get(hospital.base_url + path) as response,
    ):
        await response.read()
        assert response.status == 200, (path, response.status)
    return time.monotonic() - started


async def baseline_seconds(hospital: Hospital, count: int = 10) -> float:
    """The median time of a page here and now, on this machine as loaded as it is."""
    return statistics.median([await page_seconds(hospital) for _ in range(count)])


async def raw_answer(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and body bytes, exactly as sent."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": AS2_JSON, **headers}) as response,
    ):
        return response.status, await response.read()


# ---------------------------------------------------------------- authenticate first


async def test_a_hostile_json_ld_body_whose_key_never_comes_leaves_the_pages_answering(
    hospital: Hospital, keys: dict[str, rsa.RSAPrivateKey], silent: SilentServer
) -> None:
    # Given how long the group page takes on this machine now
    baseline = await baseline_seconds(hospital)
    # And three unauthenticated POSTs of a hostile JSON-LD body (a @vocab context, 14 500
    # nodes, ~870 KiB) with a correct Digest and Date, signed by a key on a server that
    # accepts connections and never answers
    actor = f"http://127.0.0.1:{silent.port}/users/eve"
    body = encode(hostile_document(actor, hospital.group_iri))
    assert 800 * 1024 < len(body) < MIB
    headers = cavage_headers(url=hospital.group_inbox, body=body, key=keys["mallory"],
                             key_id=actor + "#main-key", now=hospital.now())  # fmt: skip
    hostile = [asyncio.create_task(post(hospital.group_inbox, body, headers)) for _ in "abc"]
    # When pages are asked for meanwhile, until the node has gone for the key
    during: list[float] = []
    deadline = time.monotonic() + 60
    while len(during) < 8 or (silent.connections == 0 and time.monotonic() < deadline):
        during.append(await page_seconds(hospital))
    # Then every page answered promptly (the body waits for its key, unread)
    assert silent.connections >= 1, "the node never asked for the key"
    assert max(during) < max(2.0, 20 * baseline), (baseline, during)
    assert not any(task.done() for task in hostile)
    # And when the key's server hangs up, each is refused with the one fixed answer: had its
    # JSON-LD been read, the answer would be about the document (a 400), not the key
    await silent.close()
    answers = await asyncio.gather(*hostile)
    assert answers == [Answer(401, UNVERIFIED)] * 3
    await assert_nothing_kept(hospital)


async def test_an_authenticated_sender_s_hostile_json_ld_is_refused_within_bounds(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory, whose key the node can fetch, signs the hostile JSON-LD body
    body = encode(hostile_document(remote.actor("mallory"), hospital.group_iri))
    # When she POSTs it
    answer = await post(hospital.group_inbox, body, signed(hospital, remote, body))
    # Then it is refused as too much JSON-LD work (the count of values, not a clock, stopped
    # it: a busy machine gives the same answer), and nothing is kept
    assert_refused(answer, 400, "JSON-LD processing", "values")
    assert await inbox_items(hospital) == 0
    # While the same activity in a small document is still read through JSON-LD and kept
    small = encode(hostile_document(remote.actor("mallory"), hospital.group_iri, nodes=3))
    answer = await post(hospital.group_inbox, small, signed(hospital, remote, small))
    assert answer.status == 202, answer


async def test_unsigned_bodies_of_a_mebibyte_of_tokens_are_refused_unparsed(
    hospital: Hospital,
) -> None:
    # Given 50 unsigned bodies of 1 MiB of small JSON tokens, broken at the very end, so that
    # parsing one would answer "not JSON"
    tokens = b"[" + b"0," * ((MIB - 16) // 2)
    body = tokens + b"!"
    assert MIB - 32 < len(body) <= MIB
    # When they are POSTed at once
    answers = await asyncio.gather(*(post(hospital.group_inbox, body) for _ in range(50)))
    # Then each is refused for its missing signature: the body was never parsed
    for answer in answers:
        assert_refused(answer, 401, "not signed")
    assert await page_seconds(hospital) < 5


# ---------------------------------------------------------------- one answer for every fetch fault


async def test_the_401_after_a_key_fetch_is_the_same_whatever_went_wrong(
    hospital: Hospital, remote: FakeRemote, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    # Given keyIds whose fetch fails in as many ways as an anonymous sender could probe, and
    # one that is fetched and does not verify
    closed = f"http://127.0.0.1:{free_port()}"
    remote.documents["/notes/1"] = {"@context": AS2, "id": remote.base_url + "/notes/1",
                                    "type": "Note", "content": "not an actor"}  # fmt: skip
    faults = {
        "a private address": "http://169.254.169.254/users/eve#main-key",
        "a closed port": f"{closed}/users/eve#main-key",
        "not found": remote.actor("nobody") + "#main-key",
        "not an actor": remote.base_url + "/notes/1#main-key",
        "a key the actor does not publish": remote.actor("mallory") + "#other-key",
        "a signature that does not verify": remote.key_id("mallory"),
    }
    answers: dict[str, tuple[int, bytes]] = {}
    reasons: dict[str, str] = {}
    for fault, key_id in faults.items():
        actor = key_id.split("#")[0]
        body = encode(follow(remote, "mallory", hospital.group_iri) | {"actor": actor})
        key = keys["impostor"] if fault == "a signature that does not verify" else keys["mallory"]
        headers = cavage_headers(url=hospital.group_inbox, body=body, key=key, key_id=key_id,
                                 now=hospital.now())  # fmt: skip
        # When each is POSTed
        answers[fault] = await raw_answer(hospital.group_inbox, body, headers)
        reasons[fault] = INBOX_LOG.messages[-1] if INBOX_LOG.messages else ""
    # Then every answer is the same 401, byte for byte, with a fixed message
    assert {answer for answer in answers.values()} == {answers["a closed port"]}, answers
    status, text = answers["a closed port"]
    assert status == 401 and UNVERIFIED.encode() in text, answers
    # And the reasons, which differ, are in the node's log only
    assert "private address" in reasons["a private address"], reasons
    assert "cannot reach" in reasons["a closed port"], reasons
    assert "does not verify" in reasons["a signature that does not verify"], reasons
    assert len(set(reasons.values())) == len(faults), reasons
    await assert_nothing_kept(hospital)


# ---------------------------------------------------------------- key refetching


async def test_a_hundred_badly_signed_posts_cost_one_key_fetch(
    hospital: Hospital, remote: FakeRemote, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    # Given 100 Follows "by mallory" signed with a key she does not publish
    for _ in range(100):
        body = encode(follow(remote, "mallory", hospital.group_iri))
        headers = signed(hospital, remote, body, key=keys["impostor"])
        # When each is POSTed
        answer = await post(hospital.group_inbox, body, headers)
        assert (answer.status, answer.reason) == (401, UNVERIFIED), answer
    # Then her key was fetched once, not once a POST
    assert len(remote.gets("/users/mallory")) == 1, len(remote.gets("/users/mallory"))
    # And 100 POSTs signed with a key whose actor does not exist cost one request too
    for _ in range(100):
        body = encode(follow(remote, "nobody", hospital.group_iri))
        headers = signed(hospital, remote, body, key_id=remote.key_id("nobody"))
        answer = await post(hospital.group_inbox, body, headers)
        assert (answer.status, answer.reason) == (401, UNVERIFIED), answer
    assert len(remote.gets("/users/nobody")) == 1, len(remote.gets("/users/nobody"))
    await assert_nothing_kept(hospital)


async def test_a_rotated_key_is_fetched_again_once_the_interval_has_passed(
    hospital: Hospital, remote: FakeRemote
) -> None:
    # Given mallory's key was fetched for a Follow the node accepted
    body = encode(follow(remote, "mallory", hospital.group_iri))
    assert (await post(hospital.group_inbox, body, signed(hospital, remote, body))).status == 202
    # And she rotates her key
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    remote.keys["mallory"] = new_key
    # When she signs with the new key within the minute, the node does not fetch it again
    body = encode(follow(remote, "mallory", hospital.group_iri))
    answer = await post(hospital.group_inbox, body, signed(hospital, remote, body, key=new_key))
    assert (answer.status, answer.reason) == (401, UNVERIFIED), answer
    assert len(remote.gets("/users/mallory")) == 1
    # Then once a minute has passed, the next such request fetches the key once, and is kept
    hospital.running.node.clock.advance(timedelta(seconds=61))
    body = encode(follow(remote, "mallory", hospital.group_iri))
    answer = await post(hospital.group_inbox, body, signed(hospital, remote, body, key=new_key))
    assert answer.status == 202, answer
    assert len(remote.gets("/users/mallory")) == 2


# ---------------------------------------------------------------- the digest that was signed


def sha384_content_digest(body: bytes) -> str:
    return f"sha-384=:{b64(hashlib.sha384(body).digest())}:"


def rfc9421_over(url: str, content_digest: str, key: rsa.RSAPrivateKey, key_id: str,
                 created: int) -> dict[str, str]:  # fmt: skip
    """An RFC 9421 signature over @method, @target-uri and the Content-Digest given."""
    params = (f'("@method" "@target-uri" "content-digest");created={created}'
              f';keyid="{key_id}";alg="rsa-v1_5-sha256"')  # fmt: skip
    base = "\n".join([
        '"@method": POST', f'"@target-uri": {url}', f'"content-digest": {content_digest}',
        f'"@signature-params": {params}',
    ])  # fmt: skip
    signature = key.sign(base.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {"Content-Digest": content_digest, "Signature-Input": f"sig1={params}",
            "Signature": f"sig1=:{b64(signature)}:"}  # fmt: skip


def cavage_over(url: str, digest: str, key: rsa.RSAPrivateKey, key_id: str,
                date: str) -> dict[str, str]:  # fmt: skip
    """A draft-cavage signature over (request-target), host, date and the Digest given."""
    parts = urlsplit(url)
    text = "\n".join([f"(request-target): post {parts.path}", f"host: {parts.netloc}",
                      f"date: {date}", f"digest: {digest}"])  # fmt: skip
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {"Host": parts.netloc, "Date": date, "Digest": digest,
            "Signature": f'keyId="{key_id}",algorithm="rsa-sha256",'
                         f'headers="(request-target) host date digest",'
                         f'signature="{b64(signature)}"'}  # fmt: skip


@pytest.mark.parametrize("family", ["rfc9421", "draft-cavage"])
async def test_a_signed_sha384_digest_is_not_passed_over_for_an_unsigned_one(
    hospital: Hospital, remote: FakeRemote, family: str
) -> None:
    # Given mallory signed a Follow whose signed digest is SHA-384 only (which we do not check)
    url, key, key_id = hospital.group_inbox, remote.keys["mallory"], remote.key_id("mallory")
    signed_body = encode(follow(remote, "mallory", hospital.group_iri))
    if family == "rfc9421":
        headers = rfc9421_over(url, sha384_content_digest(signed_body), key, key_id,
                               int(hospital.now().timestamp()))  # fmt: skip
    else:
        sha384 = "SHA-384=" + b64(hashlib.sha384(signed_body).digest())
        headers = cavage_over(url, sha384, key, key_id, http_date(hospital.now()))
    # And someone swaps the body, adding an unsigned SHA-256 digest header of the new body
    forged = follow(remote, "mallory", hospital.group_iri) | {"type": "Like"}
    forged_body = encode(forged)
    sha256 = b64(hashlib.sha256(forged_body).digest())
    if family == "rfc9421":
        headers["Digest"] = "SHA-256=" + sha256
    else:
        headers["Content-Digest"] = f"sha-256=:{sha256}:"
    # When it is POSTed
    answer = await post(url, forged_body, headers)
    # Then it is refused: the digest that was signed cannot be checked, and no other counts
    assert_refused(answer, 401, "no SHA-256 or SHA-512")
    await assert_nothing_kept(hospital)
    # While the original body with its SHA-256 digest signed is accepted
    if family == "rfc9421":
        sha256_signed = f"sha-256=:{b64(hashlib.sha256(signed_body).digest())}:"
        headers = rfc9421_over(url, sha256_signed, key, key_id, int(hospital.now().timestamp()))
    else:
        headers = signed(hospital, remote, signed_body)
    answer = await post(url, signed_body, headers)
    assert answer.status == 202, answer
