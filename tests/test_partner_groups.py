"""Partner groups (issue 13): a group shared only with named partner domains.

Three real nodes over HTTP on loopback, each with a host name of its own (127.0.0.1, .2 and
.3): a hospital runs the partner group, a clinic is its partner, a charity is not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy import func, select

from federation.actors import member_key_owner
from federation.client import Signer
from federation.httpsig import sign_cavage
from node import groups, ids, members, posts
from node.partners import partners_of, set_partners
from node.storage.models import (
    ConditionGroup,
    Delivery,
    GroupPartner,
    InboxItem,
    Member,
    Membership,
    OutboxActivity,
    Post,
    Thread,
)
from tests.browser import Browser, Page
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, Sent, eventually, start_node

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
    instance actor when given. Headers that differ for every request whatever it asks (Date,
    X-Request-Id) are left out."""
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
                    if name.lower() not in ("date", "x-request-id")
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


# ---------------------------------------------------------------- follows, delivery, leaks


async def registered(node: RunningNode, username: str) -> Browser:
    browser = await node.browser()
    await browser.register(username)
    return browser


async def follow(browser: Browser, handle: str) -> Page:
    await browser.get("/authorize_interaction")
    return await browser.post("/groups/follow", {"handle": handle})


async def remote_memberships(node: RunningNode, group_id: int) -> int:
    count: int = await one(
        node,
        select(func.count())
        .select_from(Membership)
        .join(Member, Member.id == Membership.member_id)
        .where(
            Membership.group_id == group_id,
            Membership.state == "active",
            Member.domain != "",
        ),
    )
    return count


async def signed_follow(
    follower: RunningNode, username: str, target: RunningNode, slug: str
) -> int:
    """A Follow of `slug` on `target`, sent by `username` of `follower` straight to the
    target's shared inbox, signed by the member's own key: the inbox's answer."""
    async with follower.node.transaction() as session:
        member = await members.find_member(session, username)
        assert member is not None
        actor = f"{follower.base_url}/u/{member.username}"
        signer = await follower.federation.directory.signer(
            session, member_key_owner(member.id), f"{actor}#main-key"
        )
    body = json.dumps(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{follower.base_url}/activities/{ids.new_object_id()}",
            "type": "Follow",
            "actor": actor,
            "object": f"{target.base_url}/g/{slug}",
        }
    ).encode()
    status, _, _ = await follower.federation.client.post_signed(
        target.base_url + ids.SHARED_INBOX_PATH, body, signer, follower.node.clock.now()
    )
    return status


async def settled(nodes: tuple[RunningNode, ...]) -> bool:
    """No delivery waits and no incoming item waits on any node."""
    for running in nodes:
        queued = await one(
            running,
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.state.in_(("queued", "in_flight"))),
        )
        waiting = await one(
            running,
            select(func.count()).select_from(InboxItem).where(InboxItem.state == "queued"),
        )
        if queued or waiting:
            return False
    return True


def sent_to(nodes: tuple[RunningNode, ...], host: str) -> list[Sent]:
    """Every request any node sent to `host` (a host name: any port)."""
    return [
        request
        for node in nodes
        for request in node.recorder.requests
        if (urlsplit(request.url).hostname or "") == host
    ]


async def test_follows_from_partner_domains_only(trio: tuple[RunningNode, ...]) -> None:
    hospital, clinic, charity = trio
    # Given a partner group on the hospital shared with the clinic
    group = await partner_group(hospital, ["127.0.0.2"])
    # When a member of the clinic follows it from the clinic's node
    cal = await registered(clinic, "cal")
    page = await follow(cal, f"{GROUP_SLUG}@{hospital.domain}")
    assert page.status == 200, page.text[:300]
    # Then the hospital accepts: the clinic's member is an active member there
    await eventually(lambda: remote_memberships(hospital, group.id), "the clinic's follow")

    # When a member of the charity asks for it by name from the charity's node
    bea = await registered(charity, "bea")
    page = await follow(bea, f"{GROUP_SLUG}@{hospital.domain}")
    missing_page = await follow(bea, f"{MISSING_SLUG}@{hospital.domain}")
    # Then the charity's node finds nothing, as for a group that does not exist
    assert page.status == missing_page.status == 400
    assert page.text.replace(GROUP_SLUG, MISSING_SLUG) == missing_page.text

    # When the charity's member sends a Follow of the group anyway, and one of a missing group
    answers = [
        await signed_follow(charity, "bea", hospital, slug) for slug in (GROUP_SLUG, MISSING_SLUG)
    ]
    # Then both are answered alike, each with a Reject from the instance actor, and nothing kept
    assert answers[0] == answers[1] == 202

    def rejects() -> list[Sent]:
        return [
            request
            for request in sent_to((hospital,), "127.0.0.3")
            if b'"type":"Reject"' in request.body
        ]

    await eventually(lambda: _at_least(rejects, 2), "two Rejects to the charity")
    for request in rejects():
        assert b'"actor":"' + f"{hospital.base_url}/actor".encode() in request.body
    assert await remote_memberships(hospital, group.id) == 1
    assert not any(b'"type":"Accept"' in request.body for request in sent_to(trio, "127.0.0.3"))


async def _at_least(items: Any, minimum: int) -> bool:
    return len(items()) >= minimum


async def test_nothing_of_a_partner_group_reaches_a_non_partner(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, clinic, charity = trio
    # Given a partner group on the hospital shared with the clinic, and a public group
    group = await partner_group(hospital, ["127.0.0.2"])
    nurse = await hospital.browser()
    await nurse.login("nurse")
    await nurse.get("/groups/new")
    page = await nurse.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
    )
    assert page.path == "/g/t1d", page.text[:300]
    # And a clinic member who follows the partner group, a charity member the public one
    cal = await registered(clinic, "cal")
    bea = await registered(charity, "bea")
    assert (await follow(cal, f"{GROUP_SLUG}@{hospital.domain}")).status == 200
    assert (await follow(bea, f"t1d@{hospital.domain}")).status == 200
    await eventually(lambda: remote_memberships(hospital, group.id), "the clinic's follow")
    async with hospital.node.transaction() as session:
        public = await groups.find_group(session, "t1d")
        assert public is not None
    await eventually(lambda: remote_memberships(hospital, public.id), "the charity's follow")

    # When the partner group is busy, and the public one too
    await start_thread(hospital, GROUP_SLUG, "Shared protocol", "Insulin titration, version 3.")
    page = await nurse.post("/g/t1d/new", {"title": "Public hello", "body": "Welcome all."})
    assert page.status == 200

    def delivered_to_clinic() -> bool:
        return any(b"Insulin titration" in r.body for r in sent_to((hospital,), "127.0.0.2"))

    async def done() -> bool:
        charity_got_public = any(b"Public hello" in r.body for r in sent_to(trio, "127.0.0.3"))
        return delivered_to_clinic() and charity_got_public and await settled(trio)

    await eventually(done, "the partner's and the public deliveries, and quiet queues")

    # Then the partner received the posts, addressed to the group's followers, never Public
    to_clinic = [r for r in sent_to((hospital,), "127.0.0.2") if b"Insulin titration" in r.body]
    assert to_clinic and all(b"as:Public" not in r.body for r in to_clinic)
    assert all(b"https://www.w3.org/ns/activitystreams#Public" not in r.body for r in to_clinic)
    # And no request any node sent to the non-partner carries anything of the partner group
    secrets = [GROUP_SLUG, "Clinicians across", "Shared protocol", "Insulin titration"]
    for request in sent_to(trio, "127.0.0.3"):
        blob = request.url + request.body.decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in blob, f"{secret!r} reached the charity: {request.url}"
    # And the charity holds no trace of it
    assert not await one(
        charity, select(func.count()).select_from(Thread).where(Thread.title == "Shared protocol")
    )

    # And on the clinic the thread is shown to the member who follows the group, to no one else
    async def clinic_thread() -> Any:
        return await one(clinic, select(Thread.id).where(Thread.title == "Shared protocol"))

    thread_on_clinic = await eventually(clinic_thread, "the thread on the clinic")
    remote_path = f"/g/{GROUP_SLUG}@{hospital.domain}"
    page = await cal.get(f"/t/{thread_on_clinic}")
    assert page.status == 200 and "Insulin titration" in page.text
    assert "Shared protocol" in (await cal.get(remote_path)).text
    visitor = await clinic.browser()
    for path in (f"/t/{thread_on_clinic}", remote_path, "/groups"):
        page = await visitor.get(path)
        assert "Insulin titration" not in page.html and "Clinicians across" not in page.html, path
    assert (await visitor.get(f"/t/{thread_on_clinic}")).status == 404
    neighbour = await registered(clinic, "dee")
    assert (await neighbour.get(f"/t/{thread_on_clinic}")).status == 404

    # When the clinic's member replies from the clinic
    page = await cal.post(f"/t/{thread_on_clinic}/reply", {"body": "Our ward uses version 2."})
    assert page.status == 200, page.text[:300]

    # Then the reply reaches the group's node, and only the partner's inbox besides
    async def reply_on_hospital() -> Any:
        return await one(hospital, select(Thread.id).join(Post, Post.thread_id == Thread.id)
                         .where(Post.source == "Our ward uses version 2."))  # fmt: skip

    await eventually(reply_on_hospital, "the clinic's reply on the hospital")
    await eventually(lambda: settled(trio), "quiet queues")
    for request in sent_to(trio, "127.0.0.3"):
        assert b"Our ward uses" not in request.body, request.url


async def test_a_partner_removed_receives_nothing_more(trio: tuple[RunningNode, ...]) -> None:
    hospital, clinic, _ = trio
    # Given a partner group shared with the clinic and another domain, followed from the clinic
    group = await partner_group(hospital, ["127.0.0.2", "partner.example"])
    cal = await registered(clinic, "cal")
    assert (await follow(cal, f"{GROUP_SLUG}@{hospital.domain}")).status == 200
    await eventually(lambda: remote_memberships(hospital, group.id), "the clinic's follow")
    await eventually(lambda: settled(trio), "quiet queues")
    # And a delivery to the clinic still waiting (its next attempt later)
    group_iri = f"{hospital.base_url}/g/{GROUP_SLUG}"
    later = hospital.node.clock.now() + timedelta(hours=1)
    activity_id = ids.new_object_id()
    async with hospital.node.transaction() as session:
        session.add(
            OutboxActivity(
                id=activity_id, actor_iri=group_iri, signer="group", type="Announce",
                body="{}", created_at=later,
            )
        )  # fmt: skip
        await session.flush()
        session.add(
            Delivery(
                activity_id=activity_id, inbox_url=f"{clinic.base_url}/inbox",
                next_attempt_at=later, created_at=later, updated_at=later,
            )
        )  # fmt: skip

    # When the owner removes the clinic from the partner list
    async with hospital.node.transaction() as session:
        loaded = await session.get(ConditionGroup, group.id)
        assert loaded is not None
        added, removed = await set_partners(
            session, loaded, ["partner.example"], hospital.node.clock.now(),
            group_actor_iri=group_iri,
        )  # fmt: skip
        # Then, in the same transaction, its follow has ended and its delivery is dropped
        assert (added, removed) == ([], ["127.0.0.2"])
        assert await remote_memberships_in(session, group.id) == 0
        state = (
            await session.execute(select(Delivery.state).where(Delivery.activity_id == activity_id))
        ).scalar_one()
        assert state == "abandoned"

    # And nothing of a later post reaches it
    await start_thread(hospital, GROUP_SLUG, "After the removal", "Not for the clinic.")
    await eventually(lambda: settled(trio), "quiet queues")
    assert not any(b"Not for the clinic" in r.body for r in sent_to((hospital,), "127.0.0.2"))
    # And its signed requests no longer find the group
    assert (await fetch(hospital, f"/g/{GROUP_SLUG}", clinic)).status == 404


async def remote_memberships_in(session: Any, group_id: int) -> int:
    count: int = (
        await session.execute(
            select(func.count())
            .select_from(Membership)
            .join(Member, Member.id == Membership.member_id)
            .where(Membership.group_id == group_id, Member.domain != "")
        )
    ).scalar()
    return count


# ---------------------------------------------------------------- the command line


def test_the_command_line_creates_partner_groups(tmp_path: Path) -> None:
    from tests.test_cli import database, healthnode, ok, password_file

    data = tmp_path / "data"
    # Given a node with an admin
    ok(healthnode(tmp_path, "member", "create", "root", "--admin",
                  "--password-file", password_file(tmp_path), "--data-dir", data))  # fmt: skip
    # When a partner group is created with two partner domains
    out = ok(healthnode(
        tmp_path, "group", "create", "clinicians", "--name", "Clinicians",
        "--visibility", "partners", "--partner", "Hospital-B.example",
        "--partner", "clinic.example", "--data-dir", data,
    ))  # fmt: skip
    # Then it keeps its slug, and its partners are kept as parsed
    assert out == "created partners group clinicians shared with clinic.example, hospital-b.example"
    with database(data) as connection:
        rows = connection.execute(
            "SELECT g.slug, g.visibility, g.join_policy, p.domain FROM condition_groups g"
            " JOIN group_partners p ON p.group_id = g.id ORDER BY p.domain"
        ).fetchall()
    assert rows == [
        ("clinicians", "partners", "request", "clinic.example"),
        ("clinicians", "partners", "request", "hospital-b.example"),
    ]
    # And --private stays the shorthand of --visibility private (a random address)
    out = ok(healthnode(tmp_path, "group", "create", "hush", "--name", "Hush", "--private",
                        "--data-dir", data))  # fmt: skip
    assert out.startswith("created private group ") and "hush" not in out
    # When the options are wrong, each says why on one line and nothing is written
    with database(data) as connection:
        before = connection.execute("SELECT count(*) FROM condition_groups").fetchone()
    wrong = (
        (["--visibility", "partners"], "needs at least one --partner DOMAIN"),
        (["--partner", "a.example"], "--partner is only for --visibility partners, not public"),
        (["--private", "--partner", "a.example"], "only for --visibility partners, not private"),
        (["--visibility", "public", "--partner", "a.example"], "not public"),
        (["--private", "--visibility", "partners", "--partner", "a.example"], "contradicts"),
        (["--visibility", "partners", "--partner", "a.example:8080"], "has a port"),
        (["--visibility", "partners", "--partner", "https://a.example/"], "not a domain"),
    )
    for options, reason in wrong:
        result = healthnode(
            tmp_path, "group", "create", "other", "--name", "Other", *options, "--data-dir", data
        )
        assert result.returncode == 1, (options, result.stderr)
        assert reason in result.error_line(), (options, result.stderr)
    result = healthnode(tmp_path, "group", "create", "other", "--name", "Other",
                        "--visibility", "secret", "--data-dir", data)  # fmt: skip
    assert result.returncode == 2 and "invalid choice" in result.stderr
    with database(data) as connection:
        assert connection.execute("SELECT count(*) FROM condition_groups").fetchone() == before


# ---------------------------------------------------------------- the settings page


async def test_the_owner_edits_the_partner_list_on_the_settings_page(
    trio: tuple[RunningNode, ...],
) -> None:
    hospital, clinic, _ = trio
    # Given a partner group followed from the clinic
    group = await partner_group(hospital, ["127.0.0.2"])
    cal = await registered(clinic, "cal")
    assert (await follow(cal, f"{GROUP_SLUG}@{hospital.domain}")).status == 200
    await eventually(lambda: remote_memberships(hospital, group.id), "the clinic's follow")
    owner = await hospital.browser()
    await owner.login("nurse")
    page = await owner.get(f"/g/{GROUP_SLUG}/settings")
    assert page.status == 200 and "127.0.0.2" in page.html
    fields = {
        "name": "Clinicians across hospitals", "description": "", "rules": "", "tags": "",
        "join_policy": "request", "hold_first_posts": "0",
    }  # fmt: skip

    # When the owner gives a domain with a port
    page = await owner.post(
        f"/g/{GROUP_SLUG}/settings", fields | {"partners": "127.0.0.2\nward.example:8443"}
    )
    # Then the page says why, and nothing changed
    assert page.status == 400 and "has a port" in page.text
    async with hospital.node.transaction() as session:
        assert await partners_of(session, group.id) == ["127.0.0.2"]

    # When the owner replaces the clinic by another domain
    page = await owner.post(f"/g/{GROUP_SLUG}/settings", fields | {"partners": "Ward.Example"})
    # Then the list is saved, the clinic's follow has ended, and the clinic finds nothing more
    assert page.status == 200 and "partner domains changed" in page.text
    async with hospital.node.transaction() as session:
        assert await partners_of(session, group.id) == ["ward.example"]
    assert await remote_memberships(hospital, group.id) == 0
    assert (await fetch(hospital, f"/g/{GROUP_SLUG}", clinic)).status == 404

    # And an empty list is refused: a partner group needs a partner
    page = await owner.post(f"/g/{GROUP_SLUG}/settings", fields | {"partners": " "})
    assert page.status == 400 and "at least one partner domain" in page.text

    # And no one but the owner may change it
    visitor = await registered(hospital, "visitor")
    page = await visitor.post(f"/g/{GROUP_SLUG}/settings", fields | {"partners": "evil.example"})
    assert page.status in (403, 404)
    async with hospital.node.transaction() as session:
        assert await partners_of(session, group.id) == ["ward.example"]


async def test_a_partner_group_is_created_with_the_form(browser: Browser, node: Any) -> None:
    # Given a signed-in member on the new group form
    await browser.register("nurse")
    await browser.get("/groups/new")
    fields = {"slug": "clinicians", "name": "Clinicians", "visibility": "partners",
              "join_policy": "invite"}  # fmt: skip
    # When they ask for a partner group without a partner, or with a port
    for partners, reason in (("", "at least one partner domain"), ("b.example:80", "has a port")):
        page = await browser.post("/groups/new", fields | {"partners": partners})
        # Then the form says why, and no group is made
        assert page.status == 400 and reason in page.text, partners
    async with node.transaction() as session:
        assert await groups.find_group(session, "clinicians") is None
    # When they name two partner domains
    page = await browser.post("/groups/new", fields | {"partners": "B.example\nclinic.example"})
    # Then the group keeps its address, and its partners
    assert page.status == 200 and page.path == "/g/clinicians", page.text[:300]
    async with node.transaction() as session:
        group = await groups.find_group(session, "clinicians")
        assert group is not None and group.visibility == "partners"
        assert await partners_of(session, group.id) == ["b.example", "clinic.example"]
