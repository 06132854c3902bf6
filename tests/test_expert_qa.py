"""Expert Q&A (issue 13): a moderator schedules a session with verified professionals and a
time window; members ask before and during it, the experts' answers are labelled and listed
first, and after the window the thread is read-only with an index. Real nodes over HTTP on
loopback, with their clocks moved by hand (tests/clock.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from sqlalchemy import func, select

from federation.queue import Worker
from node import professionals
from node.storage.models import (
    InboxItem,
    Member,
    Membership,
    Post,
    QaExpert,
    QaSession,
    Thread,
)
from tests.browser import Browser, Page
from tests.conftest import NodeFactory
from tests.federation_harness import RunningNode, eventually, start_node

AS2_ACCEPT = {"Accept": "application/activity+json"}
TOPIC = "Insulin pumps: ask a diabetes nurse"
# The nodes' clocks start at 2026-11-01 12:00 UTC; Paris is at UTC+1 then.
STARTS_PARIS, ENDS_PARIS = "2026-11-01T14:00", "2026-11-01T15:00"
STARTS = datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
ENDS = datetime(2026, 11, 1, 14, 0, tzinfo=UTC)


@pytest.fixture
async def hospital(make_node: NodeFactory) -> AsyncIterator[RunningNode]:
    running = await start_node(make_node, "hospital")
    yield running
    await running.close()


@pytest.fixture
async def pair(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    nodes = [await start_node(make_node, name) for name in ("hospital", "charity")]
    yield nodes[0], nodes[1]
    for running in nodes:
        await running.close()


async def one(node: RunningNode, statement: Any) -> Any:
    async with node.node.transaction() as session:
        return (await session.execute(statement)).scalar()


async def registered(node: RunningNode, username: str, name: str = "") -> Browser:
    browser = await node.browser()
    await browser.register(username, display_name=name)
    return browser


async def verify(node: RunningNode, username: str, title: str) -> None:
    """An admin's verification, as the domain records it (the CLI and pages are elsewhere)."""
    async with node.node.transaction() as session:
        member = (
            await session.execute(select(Member).where(Member.username == username))
        ).scalar_one()
        await professionals.verify(session, member, title=title, now=node.node.clock.now())


def advance(delta: timedelta, *nodes: RunningNode) -> None:
    for node in nodes:
        node.node.clock.advance(delta)  # type: ignore[attr-defined]


async def post_id(node: RunningNode, source: str) -> str:
    found = await one(node, select(Post.id).where(Post.source == source))
    assert found is not None, source
    return str(found)


def post_html(page: Page, post: str) -> str:
    """The HTML of one post's article (its label, byline and text), without nested answers."""
    start = page.html.index(f'<li id="post-{post}"')
    end = page.html.index("</article>", start)
    return page.html[start:end]


async def schedule(moderator: Browser, experts: str, topic: str = TOPIC) -> Page:
    await moderator.get("/g/t1d/qa/new")
    return await moderator.post(
        "/g/t1d/qa/new",
        {
            "topic": topic,
            "experts": experts,
            "starts": STARTS_PARIS,
            "ends": ENDS_PARIS,
            "zone": "Europe/Paris",
            "intro": "Bring your pump questions.",
        },
    )


async def group_with_members(node: RunningNode) -> tuple[Browser, Browser, Browser, Browser]:
    """The public group t1d owned by moira; ana (a verified nurse), ben and cora join it."""
    moira = await registered(node, "moira", "Moira")
    page = await moira.post(
        "/groups/new", {"slug": "t1d", "name": "Type 1 diabetes", "visibility": "public"}
    )
    assert page.path == "/g/t1d", page.text[:300]
    people = []
    for username, name in (("ana", "Ana Nurse"), ("ben", "Ben"), ("cora", "Cora")):
        browser = await registered(node, username, name)
        await browser.get("/g/t1d")
        page = await browser.post("/g/t1d/join")
        assert page.status == 200, page.text[:300]
        people.append(browser)
    await verify(node, "ana", "Registered nurse, diabetes specialist")
    return moira, people[0], people[1], people[2]


async def test_a_qa_from_scheduling_to_its_read_only_index(hospital: RunningNode) -> None:
    moira, ana, ben, cora = await group_with_members(hospital)
    sessions = select(func.count()).select_from(QaSession)

    # When cora, a member but no moderator, tries to schedule a Q&A
    page = await cora.get("/g/t1d/qa/new")
    assert page.status == 403
    page = await cora.post("/g/t1d/qa/new", {"topic": TOPIC, "experts": "ana"})
    # Then she is refused with the reason, and nothing is created
    assert page.status == 403 and "Only this group's moderators" in page.text
    assert await one(hospital, sessions) == 0

    # When moira names ben, who is not a verified professional
    page = await schedule(moira, "ana, ben")
    # Then the form comes back saying so, and nothing is created
    assert page.status == 400 and "ben is not a verified professional" in page.text
    assert await one(hospital, sessions) == 0
    assert await one(hospital, select(Thread.id).where(Thread.title == TOPIC)) is None
    # And an end before the start is refused the same way
    await moira.get("/g/t1d/qa/new")
    page = await moira.post(
        "/g/t1d/qa/new",
        {"topic": TOPIC, "experts": "ana", "starts": ENDS_PARIS, "ends": STARTS_PARIS,
         "zone": "Europe/Paris"},
    )  # fmt: skip
    assert page.status == 400 and "The end must come after the start." in page.text
    assert await one(hospital, sessions) == 0

    # When moira schedules it with ana, in Paris time
    page = await schedule(moira, "@ana")
    # Then its thread presents the Q&A, with the times as entered, in their zone and in UTC
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:500]
    thread_id = page.path.removeprefix("/t/")
    assert "Expert Q&A: Insulin pumps" in page.text
    # (the post links the mention of @ana to her profile: read the words without the tags)
    words = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", page.html)))
    assert "Ana Nurse (@ana, Registered nurse, diabetes specialist)" in words
    assert "1 Nov 2026, 14:00 Europe/Paris (1 Nov 2026, 13:00 UTC)" in page.text
    assert "Questions are open now" in page.text
    row = await one(hospital, select(QaSession).where(QaSession.thread_id == thread_id))
    assert (row.topic, row.starts_at, row.ends_at) == (TOPIC, STARTS, ENDS)
    experts = select(Member.username).join(QaExpert, QaExpert.member_id == Member.id)
    assert await one(hospital, experts) == "ana"

    # When ben asks a question before the window opens
    page = await ben.post(f"/t/{thread_id}/reply", {"body": "Can I shower with my pump on?"})
    assert page.status == 200, page.text[:300]
    shower = await post_id(hospital, "Can I shower with my pump on?")
    # Then it is taken, but nobody but a moderator may answer yet
    page = await ana.post(f"/t/{thread_id}/reply", {"body": "Too early", "parent": shower})
    assert page.status == 409 and "Answers open when the Q&A starts" in page.text
    assert await one(hospital, select(Post.id).where(Post.source == "Too early")) is None

    # When the window opens: cora asks, then answers ben before the expert does
    advance(timedelta(hours=1), hospital)
    page = await cora.post(f"/t/{thread_id}/reply", {"body": "Which pump is quietest?"})
    assert page.status == 200, page.text[:300]
    page = await cora.post(
        f"/t/{thread_id}/reply", {"body": "I just unplug mine.", "parent": shower}
    )
    assert page.status == 200, page.text[:300]
    page = await ana.post(
        f"/t/{thread_id}/reply",
        {"body": "Most pumps are splash-proof only: disconnect for showers.", "parent": shower},
    )
    assert page.status == 200, page.text[:300]
    expert = await post_id(hospital, "Most pumps are splash-proof only: disconnect for showers.")
    peer = await post_id(hospital, "I just unplug mine.")
    quiet = await post_id(hospital, "Which pump is quietest?")

    # Then the expert's answer is listed first under the question, labelled in words
    page = await ben.get(f"/t/{thread_id}")
    assert page.status == 200
    assert page.html.index(f'id="post-{shower}"') < page.html.index(f'id="post-{expert}"')
    assert page.html.index(f'id="post-{expert}"') < page.html.index(f'id="post-{peer}"')
    assert page.html.index(f'id="post-{peer}"') < page.html.index(f'id="post-{quiet}"')
    assert "Expert answer" in post_html(page, expert)
    # And the non-expert's answer carries no such label
    assert "Expert answer" not in post_html(page, peer)
    assert page.text.count("Expert answer") == 1
    assert "It is on now" in page.text and "Questions and answers" not in page.text

    # When the window has ended, whatever anyone asks or answers is refused
    advance(timedelta(hours=1, minutes=1), hospital)
    for browser, fields in (
        (ben, {"body": "One more?"}),
        (ana, {"body": "Late answer", "parent": quiet}),
        (moira, {"body": "Thanks all"}),
    ):
        page = await browser.post(f"/t/{thread_id}/reply", fields)
        assert page.status == 409 and "This Q&A ended at 1 Nov 2026, 14:00 UTC" in page.text
        assert await one(hospital, select(Post.id).where(Post.source == fields["body"])) is None

    # Then the housekeeping worker locks its thread at the end, once
    await eventually(
        lambda: one(hospital, select(QaSession.closed_at).where(QaSession.thread_id == thread_id)),
        "the Q&A closed",
    )
    assert await one(hospital, select(Thread.locked_at).where(Thread.id == thread_id)) == ENDS

    # And the page is read-only and starts with an index of questions and their answers
    page = await ben.get(f"/t/{thread_id}")
    assert "Send reply" not in page.html and "Closed to replies" in page.text
    assert "This expert Q&A ended" in page.text
    index_at = page.html.index('id="qa-index"')
    index = page.html[index_at : page.html.index("</nav>", index_at)]
    links = re.findall(r'href="#post-([^"]+)"', index)
    assert links == [shower, expert, peer, quiet]
    assert "Expert answer by Ana Nurse" in index and "Answer by Cora" in index
    assert "Not answered." in index
    assert index_at < page.html.index(f'<li id="post-{shower}"')


async def test_the_qa_page_carries_its_window_as_start_and_end_time(
    hospital: RunningNode,
) -> None:
    moira, _, _, _ = await group_with_members(hospital)
    page = await schedule(moira, "ana")
    thread_id = page.path.removeprefix("/t/")
    reader = await hospital.browser()

    async def page_document() -> dict[str, Any]:
        async with reader.client.get(f"/t/{thread_id}", headers=AS2_ACCEPT) as response:
            assert response.status == 200
            document: dict[str, Any] = json.loads(await response.text())
        return document

    # When anyone fetches the thread as AS2
    document = await page_document()
    # Then it is an ordinary Page with the window, open to comments
    assert document["type"] == "Page" and document["name"] == TOPIC
    assert document["startTime"] == "2026-11-01T13:00:00Z"
    assert document["endTime"] == "2026-11-01T14:00:00Z"
    assert document["commentsEnabled"] is True
    # And after the window its comments are off
    advance(timedelta(hours=3), hospital)
    assert (await page_document())["commentsEnabled"] is False
    # And an ordinary thread's Page carries no window
    page = await moira.post("/g/t1d/new", {"title": "Plain", "body": "No Q&A here"})
    async with reader.client.get(page.path, headers=AS2_ACCEPT) as response:
        plain = json.loads(await response.text())
    assert "startTime" not in plain and "endTime" not in plain


async def test_a_member_of_another_node_asks_through_their_node_and_sees_the_answer(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    moira, ana, _, _ = await group_with_members(hospital)
    bea = await registered(charity, "bea", "Bea")
    handle = f"t1d@{hospital.domain}"

    # Given bea follows the hospital's group from the charity
    await bea.get("/authorize_interaction")
    page = await bea.post("/groups/follow", {"handle": handle})
    assert page.status == 200, page.text[:300]
    accepted = (
        select(func.count())
        .select_from(Membership)
        .where(Membership.state == "active", Membership.follow_activity_id.is_not(None))
    )
    await eventually(lambda: one(charity, accepted), "the Accept on the charity")

    # When moira schedules a Q&A with ana
    page = await schedule(moira, "ana")
    assert page.status == 200, page.text[:300]

    # Then the charity shows it as a Q&A with its window
    copy = await eventually(
        lambda: one(charity, select(Thread.id).where(Thread.title == TOPIC)), "the Q&A copy"
    )
    window = await eventually(
        lambda: one(charity, select(QaSession).where(QaSession.thread_id == copy)),
        "the Q&A window on the charity",
    )
    assert (window.starts_at, window.ends_at) == (STARTS, ENDS)
    page = await bea.get(f"/t/{copy}")
    assert "Expert Q&A" in page.text and "1 Nov 2026, 13:00 UTC" in page.text

    # When, during the window, bea asks a question on her own node
    advance(timedelta(hours=1), hospital, charity)
    page = await bea.post(f"/t/{copy}/reply", {"body": "Do pumps set off airport scanners?"})
    assert page.status == 200, page.text[:300]
    # Then it reaches the hospital's thread, and ana answers it there
    question = await eventually(
        lambda: one(hospital, select(Post.id).where(Post.source.contains("airport scanners"))),
        "bea's question on the hospital",
    )
    thread_id = await one(hospital, select(Post.thread_id).where(Post.id == question))
    answer = "Tell security first: scanners can harm some pumps."
    page = await ana.post(f"/t/{thread_id}/reply", {"body": answer, "parent": question})
    assert page.status == 200, page.text[:300]
    # And bea sees the expert's answer under her question on her own node
    await eventually(
        lambda: one(charity, select(Post.id).where(Post.source.contains("Tell security first"))),
        "ana's answer on the charity",
    )
    page = await bea.get(f"/t/{copy}")
    assert answer in page.text
    assert page.text.index("airport scanners") < page.text.index(answer)

    # Given the hospital's housekeeping worker, which locks ended Q&As, has not run
    await hospital.federation.housekeeping_worker.stop()
    # When the window has ended on the hospital while the charity's clock still lags behind
    advance(timedelta(hours=1), hospital)
    late = "Is it too late to ask?"
    page = await bea.post(f"/t/{copy}/reply", {"body": late})
    assert page.status == 200, page.text[:300]

    # Then the hospital refuses her question, as a reply to a locked thread
    async def settled() -> Any:
        return await one(
            hospital,
            select(InboxItem.state).where(
                InboxItem.body.contains(late), InboxItem.state.in_(("done", "failed"))
            ),
        )

    await eventually(settled, "the late question processed on the hospital")
    assert await one(hospital, select(Post.id).where(Post.source.contains(late))) is None
    assert await one(hospital, select(Thread.locked_at).where(Thread.id == thread_id)) is None

    # When the hospital's housekeeping runs again
    housekeeping = Worker("housekeeping", hospital.federation.housekeeping.drain)
    hospital.federation.housekeeping_worker = housekeeping
    housekeeping.start()
    # Then it locks the thread at the window's end, and its Lock reaches the charity's copy
    locked = await eventually(
        lambda: one(hospital, select(Thread.locked_at).where(Thread.id == thread_id)),
        "the Q&A locked on the hospital",
    )
    assert locked == ENDS
    await eventually(
        lambda: one(charity, select(Thread.locked_at).where(Thread.id == copy)),
        "the Q&A locked on the charity",
    )
    sent = [
        json.loads(request.body)
        for request in hospital.recorder.requests
        if request.method == "POST" and request.body and b'"Lock"' in request.body
    ]
    assert sent and sent[0]["object"]["type"] == "Lock"
    # And once the charity's clock is past the end too, it refuses her at once
    advance(timedelta(hours=1), charity)
    page = await bea.post(f"/t/{copy}/reply", {"body": "And now?"})
    assert page.status == 409 and "This Q&A ended" in page.text


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"zone": "Mars/Olympus"}, "Give a time zone by its name"),
        ({"zone": "../../etc/passwd"}, "Give a time zone by its name"),
        ({"starts": "next tuesday"}, "Give the start as a date and time"),
        ({"ends": "9999-12-31T23:59", "zone": "Etc/GMT+12"}, "Give the end as a date and time"),
        ({"ends": "2028-11-01T15:00"}, "The end must be within 365 days from now."),
        (
            {"starts": "2026-10-01T14:00", "ends": "2026-10-01T15:00"},
            "The end must be in the future",
        ),
        ({"experts": "nobody_here"}, "There is no member called nobody_here known here."),
        ({"experts": ""}, "Name at least one verified professional"),
        ({"topic": "  "}, "The topic"),
    ],
)
async def test_bad_schedules_are_refused_with_a_reason_and_leave_nothing(
    hospital: RunningNode, fields: dict[str, str], problem: str
) -> None:
    moira, _, _, _ = await group_with_members(hospital)
    await moira.get("/g/t1d/qa/new")
    good = {"topic": TOPIC, "experts": "ana", "starts": STARTS_PARIS, "ends": ENDS_PARIS,
            "zone": "Europe/Paris"}  # fmt: skip
    page = await moira.post("/g/t1d/qa/new", good | fields)
    assert page.status == 400 and problem in page.text, page.text[-800:]
    assert await one(hospital, select(func.count()).select_from(QaSession)) == 0
    assert await one(hospital, select(func.count()).select_from(Thread)) == 0
