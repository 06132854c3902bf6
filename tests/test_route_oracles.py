"""No route tells a private group, thread, post or report from one that does not exist.

Every route the app registers whose address names a group, thread, post, report, join code or
member (and a few addresses that name one in their query or form) is asked, by each kind of
outsider, for a private thing and for a missing twin of the same shape: the two answers must
be the same in status, headers and bytes, and cost the same SQL statements. The routes come
from the app's router, so a new route is checked without being listed here. Private groups
and partner groups are both checked.

Outsiders: someone signed out; a member of a public group only; the owner of another private
group; a former member; a member banned from the group; someone invited and someone whose
request to join waits (who may know the group's name and their own standing, so only its
threads, posts and reports are compared for them); another server, with no cookies; another
server whose signatures verify, but no partner of the group.

Then: a new private group, with a thread, a reply and a report, changes nothing an outsider
is shown at the addresses that name nothing (the directory, NodeInfo, robots.txt...).
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from federation.client import Signer
from federation.httpsig import sign_cavage
from node import groups, members, membership, moderation, notifications, posts
from node.clock import Clock
from node.ids import new_object_id
from node.policy import PARTNERS, PRIVATE, Viewer
from node.runtime import NodeContext
from node.storage.models import Notification
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, free_port, start_node
from tests.sql_statements import statements_of
from web.app import create_app

AS2 = {"Accept": "application/activity+json"}
PLACEHOLDER = re.compile(r"\{([^}]+)\}")
# Placeholders that name a private thing; a route with none of them is not compared.
PRIVATE_PARTS = (
    "slug", "thread_id", "post_id", "report_id", "code", "username", "word", "notification_id"
)  # fmt: skip
# The other placeholders of those routes, filled alike for both twins.
FIXED_PARTS = {"action": "approve", "decision": "approve"}
# Addresses that name a private thing in their query or their form, not in their path.
QUERY_CASES: list[tuple[str, str, dict[str, str] | None]] = [
    ("GET", "/?q={slug}", None),
    ("GET", "/?q={word}", None),
    ("GET", "/search?q={word}", None),
    ("GET", "/search?q={slug}", None),
    ("GET", "/.well-known/webfinger?resource=acct:{slug}@{domain}", None),
    ("GET", "/.well-known/webfinger?resource=https://{domain}/g/{slug}", None),
    ("GET", "/.well-known/webfinger?resource=acct:{username}@{domain}", None),
    ("GET", "/authorize_interaction?uri={slug}@{domain}", None),
    ("GET", "/authorize_interaction?uri=https://{domain}/g/{slug}", None),
    ("GET", "/authorize_interaction?uri=https://{domain}/t/{thread_id}", None),
    ("POST", "/groups/follow", {"handle": "{slug}@{domain}"}),
    ("POST", "/groups/follow", {"handle": "https://{domain}/g/{slug}"}),
    ("POST", "/groups/follow", {"handle": "https://{domain}/t/{thread_id}"}),
    ("POST", "/g/{slug}/moderation/invite", {"username": "{username}"}),
    # A public thread's reply form, answering a private post
    ("GET", "/t/{public_thread}?reply_to={post_id}", None),
    ("POST", "/t/{public_thread}/reply", {"parent": "{post_id}", "body": "Me too"}),
]
# A form as full as any route's, so that each gets as far as its checks let it.
FIELDS = {
    "title": "Hello",
    "body": "Words",
    "reason": "Because",
    "username": "otto",
    "category": "spam",
    "comment": "Looks odd",
    "option": "1",
    "handle": "someone@example.org",
    "subscription": "watch",
    "details_seen": "yes",
}
# The variants whose statements are compared too (the others repeat their work).
SAME_WORK_VARIANTS = ("html", "form", "no token", "json")
# Each answer's own, whatever is asked: left out of the comparison.
PER_REQUEST_HEADERS = ("date", "x-request-id")
# A new visitor's form-token seed is random for each answer: its value is masked (its being
# set, and how, is still compared).
FRESH_SEED = re.compile(r"^(hn_csrf=)[^;]*")
# Shorter parts (a report's number) could stand for any digits of an answer: left unmasked,
# their twins have the same length, so an answer that repeats one differs only by it.
MASKED_LENGTH = 8
PUBLIC_KEY = re.compile(rb"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.DOTALL)


@dataclass(frozen=True)
class Twins:
    """Each private thing's address part, with its missing twin of the same length."""

    pairs: dict[str, tuple[str, str]]

    def addresses(self, pattern: str) -> tuple[str, str] | None:
        """`pattern` for the private things and for their twins; None when it names none,
        or names something else."""
        names = PLACEHOLDER.findall(pattern)
        if not any(name in PRIVATE_PARTS and name in self.pairs for name in names):
            return None
        if any(name not in self.pairs and name not in FIXED_PARTS for name in names):
            return None
        return self.fill(pattern, private=True), self.fill(pattern, private=False)

    def fill(self, pattern: str, private: bool) -> str:
        def part(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in FIXED_PARTS:
                return FIXED_PARTS[name]
            return self.pairs[name][0 if private else 1]

        return PLACEHOLDER.sub(part, pattern)

    def masked(self, data: bytes, private: bool, path: str) -> bytes:
        """`data` with its own address, and each private part (or each twin), replaced by
        one mark: an answer may repeat its own address back."""
        for form in (path, quote(path, safe="/"), quote(path, safe="/?")):
            data = data.replace(form.encode(), b"{path}")
        # Each member has a key of their own; it says nothing about their groups.
        data = PUBLIC_KEY.sub(b"{public key}", data)
        for name, (private_part, missing_part) in self.pairs.items():
            part = private_part if private else missing_part
            if len(part) >= MASKED_LENGTH:
                data = data.replace(part.encode(), b"{%s}" % name.encode())
        return data


# Names of the same length, each its own display name, so the twins' pages are masked alike.
MIA, NOBODY = "mia_in_private", "zed_in_nothing"
# A word of the private thread's title, and a word of its length that is in nothing.
WORD, NO_WORD = "pancreatitis", "xylophonists"  # as searches echo them


@pytest.fixture
async def web_node(make_node: NodeFactory) -> NodeContext:
    """Served at the address it names, so that another server's signatures verify."""
    return await make_node("hospital", domain=f"127.0.0.1:{free_port()}")


@pytest.fixture
async def charity(make_node: NodeFactory) -> AsyncIterator[RunningNode]:
    """Another server, which signs what it asks with its instance actor's key."""
    running = await start_node(make_node, "charity", "127.0.0.3")
    yield running
    await running.close()


@dataclass(frozen=True)
class Seeded:
    twins: Twins
    knowing_twins: Twins  # what the invited, and those who asked to join, may not see


def _same_shape(text: str) -> str:
    """A random twin of `text`, letter for letter and the rest kept, that names nothing."""
    return "".join(secrets.choice(string.ascii_lowercase) if c.isalpha() else c for c in text)


# A partner group is, to anyone but its members and its partners' actors, a private group.
@pytest.fixture(params=[PRIVATE, PARTNERS])
async def seeded(web_node: NodeContext, request: pytest.FixtureRequest) -> Seeded:
    """nurse owns a private (or partner) group joined by request, with a thread, MIA's reply,
    and her report of it; fern left it, bruno was banned from it, pat asked to join it, ivy
    is invited; olga owns another private group; otto belongs to a public group only, with a
    thread of its own, and NOBODY to nothing."""
    node, now = web_node, web_node.clock.now()
    limits = node.settings.limits
    async with node.transaction() as session:
        ids = {}
        for username in ("nurse", "fern", "bruno", "pat", "ivy", "olga", "otto", MIA, NOBODY):
            member = await members.create_member(
                session, node.passwords, limits, username=username, password=DEFAULT_PASSWORD,
                display_name=username, now=now,
            )  # fmt: skip
            ids[username] = member.id
        private = await groups.create_group(
            session, limits, owner_id=ids["nurse"], slug="hivcircles", name="HIV support",
            visibility=request.param, join_policy="request", now=now,
            partners=["partner.example"] if request.param == PARTNERS else (),
        )  # fmt: skip
        await groups.create_group(
            session, limits, owner_id=ids["olga"], slug="olgas_room", name="Olga's room",
            private=True, now=now,
        )  # fmt: skip
        owner_view = await groups.view_group(session, private.slug, Viewer(ids["nurse"]))
        for username in ("fern", "bruno", MIA):
            await membership.invite(session, owner_view, username, now)
            view = await groups.view_group(session, private.slug, Viewer(ids[username]))
            await membership.join(session, view, now)
        await membership.invite(session, owner_view, "ivy", now)
        public = await groups.create_group(
            session, limits, owner_id=ids["nurse"], slug="open_room", name="Open room", now=now
        )
        otto_view = await groups.view_group(session, public.slug, Viewer(ids["otto"]))
        await membership.join(session, otto_view, now)
        otto_view = await groups.view_group(session, public.slug, Viewer(ids["otto"]))
        public_thread = await posts.start_thread(
            session, limits, otto_view, title="Hello all", draft=posts.Draft("Hi"), now=now
        )
        fern_view = await groups.view_group(session, private.slug, Viewer(ids["fern"]))
        await membership.leave(session, fern_view)
        await membership.ban(session, owner_view, "bruno", now)
        await membership.request_to_join(
            session, private.slug, private.join_code, Viewer(ids["pat"]), now
        )
        thread = await posts.start_thread(
            session, limits, owner_view, title=f"{WORD} results", draft=posts.Draft("Words"),
            now=now,
        )  # fmt: skip
        reply = await posts.reply(
            session, limits, Viewer(ids[MIA]), thread_id=thread.id, parent_id=None,
            draft=posts.Draft("Good luck"), now=now,
        )  # fmt: skip
        report = await moderation.report_post(
            session, Viewer(ids[MIA]), post_id=reply.id, category="spam", comment="Odd",
            now=now,
        )  # fmt: skip
        # nurse is told of MIA's reply (as the workers would tell her): about a private thread
        await notifications.notify(
            session,
            [notifications.Wanted(ids["nurse"], notifications.Kind.THREAD_REPLY, ids[MIA],
                                  private.id, thread.id, reply.id)],
            now,
        )  # fmt: skip
        notification_id = await session.scalar(
            select(Notification.id).where(Notification.recipient_id == ids["nurse"])
        )
        assert notification_id is not None
    report_id = str(report.id)
    post_pair = (reply.id, new_object_id())
    thread_pair = (thread.id, new_object_id())
    wrong_code = "x" * len(private.join_code)
    pairs = {
        "slug": (private.slug, _same_shape(private.slug)),
        "thread_id": thread_pair,
        "post_id": post_pair,
        # A report id no report has, of the same length (ids count up from 1).
        "report_id": (report_id, "9" * len(report_id)),
        "notification_id": (str(notification_id), "9" * len(str(notification_id))),
        # A join link with the wrong code: as absent as a group that does not exist.
        "code": (wrong_code, wrong_code),
        # A member whose only group is private, and one in no group at all.
        "username": (MIA, NOBODY),
        "word": (WORD, NO_WORD),
        "domain": (node.settings.domain, node.settings.domain),
        "public_thread": (public_thread.id, public_thread.id),
    }
    knowing = {
        name: pairs[name]
        for name in ("thread_id", "post_id", "report_id", "domain", "public_thread")
    }
    return Seeded(Twins(pairs), Twins(knowing))


Case = tuple[str, str, dict[str, str] | None]


def routes(app: Any) -> list[Case]:
    """(method, pattern, form) of every route, as the app registers them, and QUERY_CASES."""
    found = set()
    for route in app.router.routes():
        found.add((route.method, route.resource.canonical if route.resource else ""))
    # A method no route answers to: the router's 405, whatever the address names.
    found |= {("DELETE", pattern) for _, pattern in found}
    return [(method, pattern, None) for method, pattern in sorted(found)] + QUERY_CASES


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def ask(
    client: TestClient,
    twins: Twins,
    method: str,
    path: str,
    private: bool,
    headers: dict[str, str],
    data: dict[str, str] | bytes | None,
    signer: Signer | None = None,
    now: datetime | None = None,
) -> Answer:
    if signer is not None:
        body = data if isinstance(data, bytes) else None
        headers = headers | sign_cavage(
            method=method, url=str(client.make_url(path)), body=body, key_id=signer.key_id,
            private_key=signer.private_key, now=now or datetime.now(UTC),
        )  # fmt: skip
    async with client.request(
        method, path, headers=headers, data=data, allow_redirects=False
    ) as response:
        body = await response.read()
        kept = tuple(
            (name, twins.masked(FRESH_SEED.sub(r"\1…", value).encode(), private, path).decode())
            for name, value in sorted(response.headers.items())
            if name.lower() not in PER_REQUEST_HEADERS
        )
        return Answer(response.status, kept, twins.masked(body, private, path))


@dataclass
class Outsider:
    name: str
    client: TestClient
    browser: Browser | None  # None: another server, keeping no cookies
    twins: Twins
    signer: Signer | None = None  # another server's, when it signs what it asks
    clock: Clock | None = None  # the node's, which the signatures' dates must match
    node: NodeContext | None = None  # to compare the statements each answer costs


async def differences(outsider: Outsider, cases: list[Case]) -> list[str]:
    found = []
    twins = outsider.twins
    for method, pattern, form in cases:
        addresses = twins.addresses(pattern + " ".join((form or {}).values()))
        if addresses is None:
            continue
        addresses = (twins.fill(pattern, private=True), twins.fill(pattern, private=False))
        fields = FIELDS | (form or {})
        variants: list[tuple[str, dict[str, str], dict[str, str] | bytes | None]] = []
        if method in ("GET", "HEAD"):
            variants.append(("html", {}, None))
            variants.append(("as2", AS2, None))
            variants.append(("?page=2", {}, None))
        elif method == "POST" and outsider.browser is not None:
            if not outsider.browser.token:
                await outsider.browser.get("/")
            variants.append(("form", {}, fields | {"csrf_token": outsider.browser.token}))
            variants.append(("no token", {}, fields))
        elif method != "POST":
            variants.append(("html", {}, None))
        else:
            variants.append(("json", {"Content-Type": "application/activity+json"}, b"{}"))
        for variant, headers, data in variants:
            hidden, missing = addresses
            if variant == "?page=2":
                joint = "&" if "?" in pattern else "?"
                hidden, missing = f"{hidden}{joint}page=2", f"{missing}{joint}page=2"
            filled = [
                {k: twins.fill(v, private) for k, v in data.items()}
                if isinstance(data, dict)
                else data
                for private in (True, False)
            ]
            client, signer = outsider.client, outsider.signer
            now = outsider.clock.now() if outsider.clock else None
            private_answer = await ask(
                client, twins, method, hidden, True, headers, filled[0], signer, now
            )
            missing_answer = await ask(
                client, twins, method, missing, False, headers, filled[1], signer, now
            )
            if outsider.node is not None and variant in SAME_WORK_VARIANTS:
                # Asked again, now that any first-time work (a cache filled) is done
                with statements_of(outsider.node) as private_work:
                    await ask(client, twins, method, hidden, True, headers, filled[0], signer, now)
                with statements_of(outsider.node) as missing_work:
                    await ask(
                        client, twins, method, missing, False, headers, filled[1], signer, now
                    )
                if private_work != missing_work:
                    extra = [s for s in private_work if s not in missing_work][:2]
                    found.append(
                        f"{method} {pattern} ({variant}): {len(private_work)} statements, "
                        f"{len(missing_work)} for the missing one; {extra}"
                    )
            if private_answer != missing_answer:
                found.append(
                    f"{method} {pattern} ({variant}): private {private_answer.status} "
                    f"{_diff(private_answer, missing_answer)} / missing {missing_answer.status}"
                )
    return found


def _diff(private: Answer, missing: Answer) -> str:
    headers = set(private.headers) ^ set(missing.headers)
    if headers:
        return f"headers {sorted(headers)}"
    if private.body != missing.body:
        pairs = zip(private.body, missing.body, strict=False)
        at = next(
            (i for i, (a, b) in enumerate(pairs) if a != b),
            min(len(private.body), len(missing.body)),
        )
        start, end = max(at - 40, 0), at + 80
        return f"body from {at}: {private.body[start:end]!r} vs {missing.body[start:end]!r}"
    return "status"


@pytest.fixture
async def server(web_node: NodeContext, seeded: Seeded) -> AsyncIterator[TestServer]:
    port = int(web_node.settings.domain.rpartition(":")[2])
    server = TestServer(create_app(web_node, run_workers=False), host="127.0.0.1", port=port)
    await server.start_server()
    yield server
    await server.close()


OUTSIDERS = {
    "signed out": None,
    "member of a public group": "otto",
    "owner of another private group": "olga",
    "former member": "fern",
    "banned member": "bruno",
    "asked to join": "pat",
    "invited": "ivy",
}
# Who may know the group's name and their own standing in it: only its threads, posts and
# reports are compared for them.
KNOWING = ("asked to join", "invited")


async def test_no_route_tells_a_private_thing_from_a_server_that_signs(
    server: TestServer, web_node: NodeContext, seeded: Seeded, charity: RunningNode
) -> None:
    """A signature that verifies, from a server that is no partner of the group: its key is
    fetched for the private thing and the missing one alike, and the answers are alike."""
    client = TestClient(server, cookie_jar=DummyCookieJar())
    await client.start_server()
    try:
        async with charity.node.transaction() as session:
            signer = await charity.federation.directory.instance_signer(session)
        clock = web_node.clock
        outsider = Outsider(
            "a server that signs", client, None, seeded.twins, signer, clock, web_node
        )
        found = await differences(outsider, routes(server.app))
    finally:
        await client.close()
    assert not found, "\n".join(found)


@asynccontextmanager
async def visiting(
    server: TestServer, who: str
) -> AsyncIterator[tuple[TestClient, Browser | None]]:
    """A client of the node as `who`: signed in as that outsider (or signed out), or another
    server, which keeps no cookies and has no browser."""
    another_server = who == "another server"
    client = TestClient(server, cookie_jar=DummyCookieJar() if another_server else None)
    await client.start_server()
    try:
        browser = None if another_server else Browser(client)
        if browser is not None:
            await browser.get("/")
            username = OUTSIDERS[who]
            if username is not None:
                page = await browser.login(username)
                assert page.status == 200, page.text
        yield client, browser
    finally:
        await client.close()


@pytest.mark.parametrize("who", [*OUTSIDERS, "another server"])
async def test_no_route_tells_a_private_thing_from_a_missing_one(
    server: TestServer, web_node: NodeContext, seeded: Seeded, who: str
) -> None:
    async with visiting(server, who) as (client, browser):
        twins = seeded.knowing_twins if who in KNOWING else seeded.twins
        outsider = Outsider(who, client, browser, twins, node=web_node)
        found = await differences(outsider, routes(server.app))
    assert not found, "\n".join(found)


async def test_the_comparison_sees_what_a_group_shows_those_who_know_of_it(
    server: TestServer, seeded: Seeded
) -> None:
    # Someone who asked to join may know the group's name: its page differs from a missing one's
    client = TestClient(server)
    await client.start_server()
    try:
        browser = Browser(client)
        assert (await browser.login("pat")).status == 200
        outsider = Outsider("asked to join", client, browser, seeded.twins)
        found = await differences(outsider, routes(server.app))
    finally:
        await client.close()
    assert any(line.startswith("GET /g/{slug} (html): private 200") for line in found), found


# --- what a new private group changes elsewhere ---------------------------------------------

CSRF_VALUE = re.compile(rb'(name="csrf_token" value=")[^"]*')


async def everything_else(client: TestClient, app: Any) -> dict[str, Answer]:
    """The answer of every address that names nothing (the directory, NodeInfo, about, robots,
    the admin's pages, the feed...), with each form token masked (another server keeps no
    cookies, so each answer has a new one)."""
    no_twins = Twins({})
    answers = {}
    for method, pattern, _ in routes(app):
        if method not in ("GET", "HEAD") or PLACEHOLDER.search(pattern):
            continue
        for headers in ({}, AS2):
            answer = await ask(client, no_twins, method, pattern, True, headers, None)
            body = CSRF_VALUE.sub(rb"\1{token}", answer.body)
            answers[f"{method} {pattern} {headers}"] = Answer(answer.status, answer.headers, body)
    return answers


ELSEWHERE = ["signed out", "member of a public group", "former member", "another server"]


@pytest.mark.parametrize("who", ELSEWHERE)
async def test_a_new_private_group_changes_nothing_an_outsider_is_shown(
    server: TestServer, web_node: NodeContext, seeded: Seeded, who: str
) -> None:
    async with visiting(server, who) as (client, _):
        before = await everything_else(client, server.app)
        # When nurse founds another private group, and its members talk and report there
        node, now = web_node, web_node.clock.now()
        limits = node.settings.limits
        async with node.transaction() as session:
            nurse = await members.find_member(session, "nurse")
            mia = await members.find_member(session, MIA)
            assert nurse is not None and mia is not None
            group = await groups.create_group(
                session, limits, owner_id=nurse.id, slug="quiet", name="Quiet", tags="hiv",
                private=True, now=now,
            )  # fmt: skip
            view = await groups.view_group(session, group.slug, Viewer(nurse.id))
            await membership.invite(session, view, MIA, now)
            await membership.join(
                session, await groups.view_group(session, group.slug, Viewer(mia.id)), now
            )
            thread = await posts.start_thread(
                session, limits, view, title="Pacing", draft=posts.Draft("Words"), now=now
            )
            reply = await posts.reply(
                session, limits, Viewer(mia.id), thread_id=thread.id, parent_id=None,
                draft=posts.Draft("More words"), now=now,
            )  # fmt: skip
            await moderation.report_post(
                session, Viewer(mia.id), post_id=reply.id, category="spam", comment="Odd",
                now=now,
            )  # fmt: skip
        after = await everything_else(client, server.app)
    # Then no page, count or document they are shown has changed (a public group's would)
    changed = [
        f"{address}: {_diff(before[address], after[address])}"
        for address in before
        if before[address] != after[address]
    ]
    assert not changed, "\n".join(changed)
