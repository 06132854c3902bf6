"""Partner groups (issue 13): a group shared only with named partner domains.

Three real nodes over HTTP on loopback, each with a host name of its own (127.0.0.1, .2 and
.3): a hospital runs the partner group, a clinic is its partner, a charity is not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from federation.client import Signer
from federation.httpsig import sign_cavage
from node import groups, ids, members, posts
from node.partners import partners_of
from node.storage.models import ConditionGroup, GroupPartner, Member
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, start_node

AS2 = "application/activity+json"
# A missing group's slug as long as the partner group's, so that answers can be equal in length.
GROUP_SLUG = "clinicians"
MISSING_SLUG = "cliniciann"


@pytest.fixture
async def trio(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, ...]]:
    nodes = [
        await start_node(make_node, name, host)
        for name, host in (
            ("hospital", "127.0.0.1"),
            ("clinic", "127.0.0.2"),
            ("charity", "127.0.0.3"),
        )
    ]
    yield tuple(nodes)
    for running in nodes:
        await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def partner_group(hospital: RunningNode, partners: list[str]) -> ConditionGroup:
    """A partner group on the hospital, owned by a nurse."""
    async with hospital.node.transaction() as session:
        nurse = await members.create_member(
            session,
            hospital.node.passwords,
            hospital.node.settings.limits,
            username="nurse",
            password="correct horse battery",
            display_name="Nurse",
            now=hospital.node.clock.now(),
        )
        group = await groups.create_group(
            session,
            hospital.node.settings.limits,
            owner_id=nurse.id,
            slug=GROUP_SLUG,
            name="Clinicians across hospitals",
            visibility="partners",
            partners=partners,
            now=hospital.node.clock.now(),
        )
    return group


async def start_thread(hospital: RunningNode, slug: str, title: str, body: str) -> tuple[str, str]:
    """The nurse starts a thread and replies to it: (thread id, reply's post id)."""
    from node.policy import viewer_for

    async with hospital.node.transaction() as session:
        nurse = await members.find_member(session, "nurse")
        assert nurse is not None
        viewer = viewer_for(nurse.id, nurse.role)
        view = await groups.view_group(session, slug, viewer)
        thread = await posts.start_thread(
            session,
            hospital.node.settings.limits,
            view,
            title=title,
            draft=posts.Draft(body=body),
            now=hospital.node.clock.now(),
        )
        reply = await posts.reply(
            session,
            hospital.node.settings.limits,
            viewer,
            thread_id=thread.id,
            parent_id=None,
            draft=posts.Draft(body=body + " (a reply)"),
            now=hospital.node.clock.now(),
        )
    return thread.id, reply.id


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


async def signer_of(node: RunningNode) -> Signer:
    async with node.node.transaction() as session:
        signer: Signer = await node.federation.directory.instance_signer(session)
        return signer


async def fetch(
    target: RunningNode,
    path: str,
    signed_by: RunningNode | None = None,
    accept: str = AS2,
    method: str = "GET",
) -> Answer:
    """One request to `target`, as a server would send it: no cookies, signed by `signed_by`'s
    instance actor when given. Headers that vary by the moment (Date) are left out."""
    url = target.base_url + path
    headers = {"Accept": accept}
    if signed_by is not None:
        signer = await signer_of(signed_by)
        headers |= sign_cavage(
            method=method,
            url=url,
            body=b"{}" if method == "POST" else None,
            key_id=signer.key_id,
            private_key=signer.private_key,
            now=target.node.clock.now(),
        )
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            url,
            headers=headers,
            data=b"{}" if method == "POST" else None,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            kept = tuple(
                sorted(
                    (name, value)
                    for name, value in response.headers.items()
                    if name.lower() not in ("date",)
                )
            )
            return Answer(response.status, body, kept)


def group_paths(slug: str, domain: str) -> dict[str, tuple[str, str, str]]:
    """(path, Accept, method) of everything a group answers to, by name."""
    return {
        "webfinger": (f"{ids.WEBFINGER_PATH}?resource=acct:{slug}@{domain}", "*/*", "GET"),
        "actor": (f"/g/{slug}", AS2, "GET"),
        "outbox": (f"/g/{slug}/outbox", AS2, "GET"),
        "outbox page": (f"/g/{slug}/outbox?page=1", AS2, "GET"),
        "followers": (f"/g/{slug}/followers", AS2, "GET"),
        "moderators": (f"/g/{slug}/moderators", AS2, "GET"),
        "featured": (f"/g/{slug}/featured", AS2, "GET"),
        "page": (f"/g/{slug}", "text/html", "GET"),
        "members page": (f"/g/{slug}/members", "text/html", "GET"),
        "inbox": (f"/g/{slug}/inbox", AS2, "POST"),
    }


def object_paths(thread_id: str, post_id: str) -> dict[str, tuple[str, str, str]]:
    return {
        "thread object": (f"/t/{thread_id}", AS2, "GET"),
        "post object": (f"/p/{post_id}", AS2, "GET"),
        "thread page": (f"/t/{thread_id}", "text/html", "GET"),
        "post page": (f"/p/{post_id}", "text/html", "GET"),
    }


def same_but_for(answer: Answer, missing: Answer, ours: str, theirs: str) -> bool:
    """Equal, byte for byte, once the name asked for is swapped (a missing group's answer may
    repeat what was asked: the address typed is not a secret)."""
    return (
        answer.status == missing.status
        and answer.body.replace(ours.encode(), theirs.encode()) == missing.body
        and answer.headers == missing.headers
    )


async def test_a_partner_group_is_absent_to_all_but_its_partners(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, clinic, charity = trio
    # Given a partner group on the hospital shared with the clinic's domain, with a thread
    await partner_group(hospital, ["127.0.0.2"])
    thread_id, reply_id = await start_thread(
        hospital, GROUP_SLUG, "Shared protocol", "Insulin titration, version 3."
    )
    missing_thread, missing_post = ids.new_object_id(), ids.new_object_id()

    for requester in (None, charity):
        who = "unsigned" if requester is None else "signed by a non-partner"
        # When anyone not of a partner domain asks for the group and its objects
        for name, (path, accept, method) in group_paths(GROUP_SLUG, hospital.domain).items():
            missing_path = path.replace(GROUP_SLUG, MISSING_SLUG)
            answer = await fetch(hospital, path, requester, accept, method)
            missing = await fetch(hospital, missing_path, requester, accept, method)
            # Then each answer is the one a group that does not exist gets
            assert answer.status in (404, 401, 400), (who, name, answer.status)
            assert same_but_for(answer, missing, GROUP_SLUG, MISSING_SLUG), (who, name)
        for name, (path, accept, method) in object_paths(thread_id, reply_id).items():
            missing_path = path.replace(thread_id, missing_thread).replace(reply_id, missing_post)
            answer = await fetch(hospital, path, requester, accept, method)
            missing = await fetch(hospital, missing_path, requester, accept, method)
            assert answer.status == 404, (who, name, answer.status)
            ours, theirs = (
                (thread_id, missing_thread) if "thread" in name else (reply_id, missing_post)
            )
            assert same_but_for(answer, missing, ours, theirs), (who, name)
            assert b"Insulin" not in answer.body and b"Shared protocol" not in answer.body

    # When the partner's node asks, signed
    for name in ("webfinger", "actor", "outbox", "followers", "moderators", "featured"):
        path, accept, method = group_paths(GROUP_SLUG, hospital.domain)[name]
        answer = await fetch(hospital, path, clinic, accept, method)
        # Then it gets the actor and collections, kept from shared caches
        assert answer.status == 200, (name, answer.status, answer.body[:200])
        assert ("Cache-Control", "no-store") in answer.headers, name
    actor = await fetch(hospital, f"/g/{GROUP_SLUG}", clinic)
    document = json.loads(actor.body)
    assert document["type"] == "Group" and document["discoverable"] is False
    assert document["inbox"] == f"{hospital.base_url}{ids.SHARED_INBOX_PATH}"
    # And the objects, addressed to the group's followers, never to the public
    for path in (f"/t/{thread_id}", f"/p/{reply_id}"):
        answer = await fetch(hospital, path, clinic)
        assert answer.status == 200, (path, answer.body[:200])
        obj = json.loads(answer.body)
        assert b"Insulin titration" in answer.body
        followers = f"{hospital.base_url}/g/{GROUP_SLUG}/followers"
        assert followers in obj["to"]
        everyone = obj["to"] + obj.get("cc", [])
        assert not any("Public" in iri for iri in everyone), everyone
    # But the HTML pages stay a private group's: no one signed in here, so not found
    for name in ("page", "members page"):
        path, accept, method = group_paths(GROUP_SLUG, hospital.domain)[name]
        assert (await fetch(hospital, path, clinic, accept, method)).status == 404, name


async def test_a_signature_that_does_not_verify_is_an_unsigned_request(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, clinic, charity = trio
    # Given a partner group shared with the clinic
    await partner_group(hospital, ["127.0.0.2"])
    # When the charity signs with its own key but claims the clinic's key id
    signer = await signer_of(charity)
    clinic_key = (await signer_of(clinic)).key_id
    url = f"{hospital.base_url}/g/{GROUP_SLUG}"
    forged = sign_cavage(
        method="GET", url=url, body=None, key_id=clinic_key,
        private_key=signer.private_key, now=hospital.node.clock.now(),
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": AS2} | forged) as response:
            status, body = response.status, await response.read()
    # Then the group is as absent as to an unsigned request
    missing = await fetch(hospital, f"/g/{MISSING_SLUG}", None)
    assert status == 404 and body == missing.body


async def test_partner_domains_cover_their_subdomains_only(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, _, _ = trio
    group = await partner_group(hospital, ["Example.ORG", "clinic.example"])
    from node.partners import is_covered

    async with hospital.node.transaction() as session:
        assert await partners_of(session, group.id) == ["clinic.example", "example.org"]
        for host, covered in (
            ("example.org", True),
            ("ward.example.org", True),
            ("https://a.b.example.org:8443/actor", True),
            ("badexample.org", False),
            ("example.org.evil", False),
            ("clinic.example", True),
            ("other.example", False),
            ("", False),
        ):
            assert await is_covered(session, group.id, host) is covered, host
    assert await one(hospital, select(func.count()).select_from(GroupPartner)) == 2
    # And a partner group keeps the slug its creator gave (partners follow it by name)
    assert group.slug == GROUP_SLUG and group.join_policy == "request"


async def test_a_partner_group_on_its_own_node_is_a_private_group(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, _, _ = trio
    await partner_group(hospital, ["127.0.0.2"])
    await start_thread(hospital, GROUP_SLUG, "Shared protocol", "Only for clinicians.")
    # Given a member of the hospital who does not belong to the group
    outsider = await hospital.browser()
    await outsider.register("visitor")
    # When they look for it
    for path in (f"/g/{GROUP_SLUG}", "/groups", f"/groups?q={GROUP_SLUG}"):
        page = await outsider.get(path)
        # Then they neither find nor read it
        assert "Clinicians across hospitals" not in page.html, path
        assert "Only for clinicians" not in page.html, path
    assert (await outsider.get(f"/g/{GROUP_SLUG}")).status == 404
    # And no anonymous post is offered there: its posts leave the node for its partners
    owner = await hospital.browser()
    await owner.login("nurse")
    page = await owner.get(f"/g/{GROUP_SLUG}/new")
    assert page.status == 200
    assert 'name="anonymous"' not in page.html
    assert await one(
        hospital,
        select(Member.id).where(Member.username == "nurse"),
    )
