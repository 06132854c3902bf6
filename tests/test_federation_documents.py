"""What other servers read from a node: actor and object documents, collections, blocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from federation.httpsig import sign_cavage
from node import groups, members, posts
from node.policy import Viewer
from node.runtime import NodeContext
from tests.browser import DEFAULT_PASSWORD
from tests.conftest import NodeFactory
from web.app import create_app

AS2 = {"Accept": "application/activity+json"}


async def seeded(node: NodeContext) -> dict[str, str]:
    now = node.clock.now()
    async with node.transaction() as session:
        owner = await members.create_member(
            session, node.passwords, node.settings.limits, username="nurse",
            password=DEFAULT_PASSWORD, display_name="Nurse", now=now,
        )  # fmt: skip
        await groups.create_group(
            session, node.settings.limits, owner_id=owner.id, slug="t1d",
            name="Type 1 diabetes", now=now,
        )  # fmt: skip
        hush = await groups.create_group(
            session, node.settings.limits, owner_id=owner.id, slug="hush",
            name="Quiet", private=True, now=now,
        )  # fmt: skip
        public = await posts.start_thread(
            session, node.settings.limits,
            await groups.view_group(session, "t1d", Viewer(owner.id)),
            title="Open", draft=posts.Draft("Public words"), now=now,
        )  # fmt: skip
        private = await posts.start_thread(
            session, node.settings.limits,
            await groups.view_group(session, hush.slug, Viewer(owner.id)),
            title="Closed", draft=posts.Draft("Private words"), now=now,
        )  # fmt: skip
    return {"public": public.id, "private": private.id, "hush": hush.slug}


async def served(node: NodeContext) -> TestClient:
    client = TestClient(TestServer(create_app(node, run_workers=False)))
    await client.start_server()
    return client


async def test_documents_for_public_things_and_nothing_for_private_ones(
    make_node: NodeFactory,
) -> None:
    node = await make_node("hospital", domain="hospital.example")
    threads = await seeded(node)
    client = await served(node)
    try:
        # Given a public group, a private one, and a thread in each
        async with client.get("/g/t1d", headers=AS2) as response:
            assert response.status == 200
            assert response.content_type == "application/activity+json"
            group = json.loads(await response.read())
        assert group["type"] == "Group"
        assert group["id"] == "https://hospital.example/g/t1d"
        assert group["publicKey"]["owner"] == group["id"]
        assert group["attributedTo"] == group["id"] + "/moderators"
        assert group["endpoints"]["sharedInbox"] == "https://hospital.example/inbox"

        async with client.get(f"/t/{threads['public']}", headers=AS2) as response:
            page = json.loads(await response.read())
        assert page["type"] == "Page"
        assert page["name"] == "Open"
        assert page["audience"] == group["id"]
        assert page["context"] == page["id"]

        async with client.get("/g/t1d/followers", headers=AS2) as response:
            followers = json.loads(await response.read())
        assert followers["totalItems"] == 1
        assert followers.get("items", []) == [] and "orderedItems" not in followers

        async with client.get("/g/t1d/moderators", headers=AS2) as response:
            moderators = json.loads(await response.read())
        assert moderators["orderedItems"] == ["https://hospital.example/u/nurse"]

        # Then the private group and its thread have no documents at all
        hush = threads["hush"]
        for path in (
            f"/g/{hush}",
            f"/g/{hush}/outbox",
            f"/g/{hush}/followers",
            f"/t/{threads['private']}",
        ):
            async with client.get(path, headers=AS2) as response:
                body = await response.text()
                assert response.status == 404, path
                assert "Quiet" not in body and "Private words" not in body
    finally:
        await client.close()


async def test_signed_fetches_and_activities_from_a_blocked_server_are_refused(
    make_node: NodeFactory,
) -> None:
    node = await make_node(
        "hospital", domain="hospital.example", blocked_domains=frozenset({"evil.example"})
    )
    await seeded(node)
    client = await served(node)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    try:
        url = str(client.make_url("/g/t1d"))
        signed = sign_cavage(
            method="GET", url=url, body=None, key_id="https://evil.example/actor#main-key",
            private_key=key, now=now,
        )  # fmt: skip
        async with client.get("/g/t1d", headers=AS2 | signed) as response:
            assert response.status == 403
        async with client.get("/g/t1d", headers=AS2) as response:
            assert response.status == 200  # unsigned public fetches are answered
        async with client.get(
            "/g/t1d", headers=AS2 | {"Signature": 'keyId="x",signature="not base64!"'}
        ) as response:
            assert response.status == 400

        # And an activity claiming an actor there (however its host is spelled) is refused
        # before any key is fetched
        for actor in ("https://evil.example/u/m", "https://EVIL.example.:443/u/m"):
            body = json.dumps(
                {"id": actor + "/a/1", "type": "Follow", "actor": actor,
                 "object": "https://hospital.example/g/t1d"}
            ).encode()  # fmt: skip
            inbox_url = str(client.make_url("/inbox"))
            headers = sign_cavage(
                method="POST", url=inbox_url, body=body, key_id=actor + "#main-key",
                private_key=key, now=node.clock.now(),
            )  # fmt: skip
            headers["Host"] = "hospital.example"
            async with client.post("/inbox", data=body, headers=headers) as response:
                assert response.status == 403, await response.text()
                assert "refused" in (await response.json())["error"]
    finally:
        await client.close()
