"""Polls (issue 13): the new-thread form, the voting rules, results and their disclosure, and
federation: votes across two real nodes, a Mastodon-shaped vote, and a private group's poll
that never leaves its node."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from node import groups, members, membership, polls
from node.erasure import ErasureRequest, erase_local_account
from node.policy import Viewer
from node.poll_drafts import PollDraft, poll_problems
from node.runtime import NodeContext
from node.storage.models import OutboxActivity, Poll, PollOption, PollVote, Post, Thread
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.clock import ManualClock
from tests.conftest import BrowserFactory, NodeFactory
from tests.federation_harness import RunningNode, start_node
from tests.federation_harness import eventually as _eventually
from tests.peers import FakeRemote, Hospital, join, post_signed, processed
from tests.test_export import download, files_of

FIXTURES = Path(__file__).parent / "fixtures"
# Waits across nodes end at this deadline: generous, as the machine may be loaded.
DEADLINE = 60.0
# The default ManualClock starts at 2026-11-01 12:00 UTC.
TOMORROW = "2026-11-02T12:00"


# ---------------------------------------------------------------- helpers


async def eventually(check: Any, what: str) -> Any:
    return await _eventually(check, what, seconds=DEADLINE)


async def seed(node: NodeContext, extra_members: int = 0) -> None:
    """alice owns the public group "carers"; bob is a member; carol is in no group; and
    `extra_members` more people belong to it."""
    now = node.clock.now()
    async with node.transaction() as session:

        async def person(username: str) -> int:
            created = await members.create_member(
                session, node.passwords, node.settings.limits, username=username,
                password=DEFAULT_PASSWORD, display_name=username.title(), now=now,
            )  # fmt: skip
            return created.id

        alice = await person("alice")
        bob = await person("bob")
        await person("carol")
        await groups.create_group(
            session, node.settings.limits, owner_id=alice, slug="carers", name="Carers",
            description="For people caring for someone.", now=now,
        )  # fmt: skip
        await membership.join(session, await groups.view_group(session, "carers", Viewer(bob)), now)
        for number in range(extra_members):
            extra = await person(f"extra{number}")
            view = await groups.view_group(session, "carers", Viewer(extra))
            await membership.join(session, view, now)


def poll_form(
    title: str,
    options: list[str],
    *,
    closes: str = TOMORROW,
    multiple: bool = False,
    changeable: bool = False,
) -> dict[str, str]:
    fields = {"title": title, "body": "Tell us, please.", "poll_closes": closes}
    fields |= {f"poll_option_{number}": text for number, text in enumerate(options, start=1)}
    if multiple:
        fields["poll_multiple"] = "yes"
    if changeable:
        fields["poll_changeable"] = "yes"
    return fields


async def start_poll(browser: Browser, group_path: str, fields: dict[str, str]) -> str:
    """Start a thread with a poll from the form; its id."""
    await browser.get(f"{group_path}/new")
    page = await browser.post(f"{group_path}/new", fields)
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:600]
    return page.path.removeprefix("/t/")


async def option_ids(node: NodeContext, thread_id: str) -> dict[str, int]:
    async with node.transaction() as session:
        rows = await session.execute(
            select(PollOption.name, PollOption.id).where(PollOption.thread_id == thread_id)
        )
        return {name: option_id for name, option_id in rows.all()}


async def vote(browser: Browser, thread_id: str, *option: int) -> Page:
    """Submit the vote form (several values for a multiple-choice poll)."""
    if not browser.token:
        await browser.get(f"/t/{thread_id}")
    data = [("csrf_token", browser.token)] + [("option", str(value)) for value in option]
    async with browser.client.post(f"/t/{thread_id}/vote", data=data) as response:
        return Page(response.status, response.url.path_qs, await response.text())


def results(page: Page) -> dict[str, str]:
    """The counts the page shows, by option: {option: "3"} or {option: "fewer than 10"}."""
    shown = re.findall(
        r'<span class="poll-option">([^<]*)</span>: <span class="poll-count">([^<]*) votes?</span>',
        page.html,
    )
    return dict(shown)


def voters(page: Page) -> str | None:
    found = re.search(r'<p class="poll-total">([^<]*?) voters?', page.html)
    return found.group(1) if found else None


async def one(node: NodeContext, statement: Any) -> Any:
    async with node.transaction() as session:
        return (await session.execute(statement)).scalar()


# ---------------------------------------------------------------- the form


def test_a_poll_draft_is_checked_field_by_field() -> None:
    now = ManualClock().now()
    assert poll_problems(PollDraft(("Yes", "No"), closes=TOMORROW), now) == {}
    too_many = PollDraft(tuple(f"Option {n}" for n in range(11)), closes=TOMORROW)
    assert "at most 10 options" in poll_problems(too_many, now)["poll_options"]
    assert "at least 2" in poll_problems(PollDraft(("Yes",), closes=TOMORROW), now)["poll_options"]
    same = PollDraft(("Yes", "yes"), closes=TOMORROW)
    assert "must differ" in poll_problems(same, now)["poll_options"]
    past = PollDraft(("Yes", "No"), closes="2026-10-01T12:00")
    assert "in the future" in poll_problems(past, now)["poll_closes"]
    far = PollDraft(("Yes", "No"), closes="2027-06-01T12:00")
    assert "at most 90 days" in poll_problems(far, now)["poll_closes"]
    garbled = PollDraft(("Yes", "No"), closes="next tuesday")
    assert "a date and a time" in poll_problems(garbled, now)["poll_closes"]


async def test_the_new_thread_form_refuses_a_bad_poll_with_its_text_kept(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    alice = await browser_factory()
    await alice.login("alice")
    form = await alice.get("/g/carers/new")
    assert 'name="poll_option_10"' in form.html and 'name="poll_closes"' in form.html

    # One option only, and a closing time in the past: both said, the text kept, no thread
    fields = poll_form("Respite care", ["Weekly"], closes="2026-10-01T09:00")
    page = await alice.post("/g/carers/new", fields)
    assert page.status == 400
    assert "A poll needs at least 2 options" in page.text
    assert "The closing time must be in the future" in page.text
    assert 'value="Respite care"' in page.html and 'value="Weekly"' in page.html
    assert await one(web_node, select(func.count()).select_from(Thread)) == 0
    assert await one(web_node, select(func.count()).select_from(Poll)) == 0

    # Fixed, it is a thread with a poll; a thread without options has none
    thread_id = await start_poll(
        alice, "/g/carers", poll_form("Respite care", ["Weekly", "Monthly"])
    )
    assert (await option_ids(web_node, thread_id)).keys() == {"Weekly", "Monthly"}
    plain = await alice.post("/g/carers/new", {"title": "Just talk", "body": "Hello."})
    assert plain.status == 200 and plain.path.startswith("/t/"), plain.text[-1500:]
    assert await one(web_node, select(func.count()).select_from(Poll)) == 1
    assert 'id="poll"' not in plain.html


# ---------------------------------------------------------------- voting rules


async def test_single_choice_once_results_after_voting_and_no_votes_after_closing(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    alice, bob, carol, visitor = [await browser_factory() for _ in range(4)]
    for browser, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        await browser.login(name)
    thread_id = await start_poll(alice, "/g/carers", poll_form("Sleep", ["Fine", "Poor"]))
    choice = await option_ids(web_node, thread_id)

    # Before anyone votes, nobody sees counts: results show after voting or closing
    for browser in (bob, visitor):
        page = await browser.get(f"/t/{thread_id}")
        assert "Results show after you vote, or when the poll closes" in page.text or (
            'id="vote"' in page.html
        )
        assert results(page) == {}

    # A non-member may not vote
    refused = await vote(carol, thread_id, choice["Poor"])
    assert refused.status == 403
    assert "Only members of this group can vote" in refused.text

    # bob votes, and then sees the results, his choice marked, never who voted what
    page = await vote(bob, thread_id, choice["Poor"])
    assert page.status == 200 and page.path == f"/t/{thread_id}", page.text[:400]
    assert results(page) == {"Fine": "0", "Poor": "1"}
    assert voters(page) == "1"
    assert "(your choice)" in page.text and "Bob" not in page.text.split("Poll")[1][:300]
    assert results(await visitor.get(f"/t/{thread_id}")) == {}, "not voted, not closed"

    # Two options in a single-choice poll, or a second vote where changes are not allowed
    alice_page = await vote(alice, thread_id, choice["Fine"], choice["Poor"])
    assert alice_page.status == 400 and "Choose one option" in alice_page.text
    again = await vote(bob, thread_id, choice["Fine"])
    assert again.status == 409 and "did not allow changing votes" in again.text
    assert await one(web_node, select(func.count()).select_from(PollVote)) == 1

    # When the poll closes (the injected clock passes its closing time)
    assert isinstance(web_node.clock, ManualClock)
    web_node.clock.advance(timedelta(days=2))

    # Then everyone sees the results, and no vote is taken any more
    closed = await visitor.get(f"/t/{thread_id}")
    assert results(closed) == {"Fine": "0", "Poor": "1"}
    assert "Closed" in closed.text
    late = await vote(alice, thread_id, choice["Fine"])
    assert late.status == 409 and "This poll is closed" in late.text
    assert await one(web_node, select(func.count()).select_from(PollVote)) == 1


async def test_multiple_choice_with_changes_allowed_replaces_the_vote(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    alice, bob = await browser_factory(), await browser_factory()
    await alice.login("alice")
    await bob.login("bob")
    fields = poll_form("What helps", ["Walks", "Music", "Friends"], multiple=True, changeable=True)
    thread_id = await start_poll(alice, "/g/carers", fields)
    choice = await option_ids(web_node, thread_id)

    page = await vote(bob, thread_id, choice["Walks"], choice["Music"])
    assert page.status == 200
    assert results(page) == {"Walks": "1", "Music": "1", "Friends": "0"}
    assert "Change your vote" in page.text

    # bob changes his mind: the new choice replaces the old one, he is still one voter
    page = await vote(bob, thread_id, choice["Friends"])
    assert page.status == 200
    assert results(page) == {"Walks": "0", "Music": "0", "Friends": "1"}
    page = await vote(alice, thread_id, choice["Friends"], choice["Walks"])
    assert results(page) == {"Walks": "1", "Music": "0", "Friends": "2"}
    assert voters(page) == "2"

    # Nothing chosen is refused with a message, not a server error
    empty = await vote(bob, thread_id)
    assert empty.status == 400 and "Choose at least one option" in empty.text
    # An option of another poll (or none at all) is refused too
    other = await vote(bob, thread_id, 999_999)
    assert other.status == 400 and "not part of this poll" in other.text

    # Once closed, votes no longer change
    assert isinstance(web_node.clock, ManualClock)
    web_node.clock.advance(timedelta(days=1, minutes=1))
    late = await vote(bob, thread_id, choice["Music"])
    assert late.status == 409
    assert results(await bob.get(f"/t/{thread_id}"))["Friends"] == "2"


async def test_a_large_group_shows_small_counts_as_fewer_than_10_and_publishes_none(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    # Given a group of 23 members (alice, bob and 21 more): more than 20
    await seed(web_node, extra_members=21)
    alice = await browser_factory()
    await alice.login("alice")
    thread_id = await start_poll(alice, "/g/carers", poll_form("Diagnosis age", ["Child", "Adult"]))
    choice = await option_ids(web_node, thread_id)

    # When three members vote for "Adult" and nobody for "Child"
    for number in range(3):
        extra = await browser_factory()
        await extra.login(f"extra{number}")
        assert (await vote(extra, thread_id, choice["Adult"])).status == 200
    page = await vote(alice, thread_id, choice["Adult"])

    # Then the counts from 1 to 9 read "fewer than 10", the total too; zero stays zero
    assert results(page) == {"Child": "0", "Adult": "fewer than 10"}
    assert voters(page) == "fewer than 10"
    assert "4 votes" not in page.text and "4 voters" not in page.text

    # And the Question other servers read withholds them as well
    async with alice.client.get(
        f"/t/{thread_id}", headers={"Accept": "application/activity+json"}
    ) as response:
        question = await response.json(content_type=None)
    assert question["type"] == "Question"
    assert [choice["replies"]["totalItems"] for choice in question["oneOf"]] == [0, 0]
    assert question["votersCount"] == 0


async def test_a_double_submitted_vote_counts_once_and_answers_no_500(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    alice, bob = await browser_factory(), await browser_factory()
    await alice.login("alice")
    await bob.login("bob")
    thread_id = await start_poll(alice, "/g/carers", poll_form("Same time", ["A", "B"]))
    choice = await option_ids(web_node, thread_id)
    await bob.get(f"/t/{thread_id}")

    # bob's browser sends the same vote, and another, at the same moment
    pages = await asyncio.gather(
        vote(bob, thread_id, choice["A"]),
        vote(bob, thread_id, choice["A"]),
        vote(bob, thread_id, choice["B"]),
    )
    statuses = sorted(page.status for page in pages)
    assert all(status in (200, 409) for status in statuses), statuses
    assert 200 in statuses
    votes = await one(
        web_node,
        select(func.count()).select_from(PollVote).where(PollVote.thread_id == thread_id),
    )
    assert votes == 1


# ---------------------------------------------------------------- two real nodes


@pytest.fixture
async def pair(make_node: NodeFactory) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    nodes = [await start_node(make_node, name) for name in ("hospital", "charity")]
    yield nodes[0], nodes[1]
    for running in nodes:
        await running.close()


async def registered(node: RunningNode, username: str) -> Browser:
    browser = await node.browser()
    await browser.register(username)
    return browser


async def follow(browser: Browser, handle: str) -> None:
    await browser.get("/authorize_interaction")
    page = await browser.post("/groups/follow", {"handle": handle})
    assert page.status == 200, page.text[:500]


async def create_group(browser: Browser, slug: str, name: str, visibility: str) -> str:
    await browser.get("/groups/new")
    page = await browser.post(
        "/groups/new",
        {"slug": slug, "name": name, "visibility": visibility, "join_policy": "invite"},
    )
    assert page.status == 200 and page.path.startswith("/g/"), page.text[:300]
    return page.path.removeprefix("/g/")


async def remote_count(node: RunningNode, name: str) -> int:
    return int(
        await one(node.node, select(PollOption.remote_count).where(PollOption.name == name)) or 0
    )


async def test_a_member_of_another_node_votes_and_sees_the_owners_tally(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    # Given a public group on the hospital's node with a poll, and bea of the charity in it
    nurse = await registered(hospital, "nurse")
    await create_group(nurse, "t1d", "Type 1 diabetes", "public")
    bea = await registered(charity, "bea")
    await follow(bea, f"t1d@{hospital.domain}")

    from tests.test_federation_groups import _active_follow

    await eventually(lambda: _active_follow(charity), "the Accept on the charity")
    thread_id = await start_poll(
        nurse, "/g/t1d", poll_form("Sensor or fingers", ["Sensor", "Fingers"])
    )

    # When the Question reaches the charity, as a thread with its poll
    async def copied() -> Any:
        return await one(charity.node, select(Thread.id).where(Thread.title == "Sensor or fingers"))

    copy_id = await eventually(copied, "the poll's thread on the charity")
    await eventually(
        lambda: one(charity.node, select(func.count()).select_from(PollOption)),
        "the poll's options on the charity",
    )
    page = await bea.get(f"/t/{copy_id}")
    assert 'id="vote"' in page.html, page.text[:800]
    choices = await option_ids(charity.node, copy_id)

    # And bea votes on her own node
    page = await vote(bea, copy_id, choices["Fingers"])
    assert page.status == 200, page.text[:500]

    # Then the hospital counts her vote once, as a vote and not as a reply
    async def counted() -> Any:
        return await one(
            hospital.node,
            select(func.count()).select_from(PollVote).where(PollVote.thread_id == thread_id),
        )

    await eventually(counted, "bea's vote counted on the hospital")
    hospital_choices = await option_ids(hospital.node, thread_id)
    assert (
        await one(hospital.node, select(PollVote.option_id).where(PollVote.thread_id == thread_id))
        == hospital_choices["Fingers"]
    )
    assert (
        await one(
            hospital.node, select(func.count()).select_from(Post).where(Post.thread_id == thread_id)
        )
        == 1
    ), "the vote became a post"

    # And after the hospital's Update, the charity shows the owner's tally
    await eventually(
        lambda: _at_least(remote_count(charity, "Fingers"), 1), "the tally on the charity"
    )
    page = await bea.get(f"/t/{copy_id}")
    assert results(page) == {"Sensor": "0", "Fingers": "1"}
    assert "(your choice)" in page.text
    # And the nurse sees the same on the hospital once she votes
    page = await vote(nurse, thread_id, hospital_choices["Sensor"])
    assert results(page) == {"Sensor": "1", "Fingers": "1"}
    await eventually(
        lambda: _at_least(remote_count(charity, "Sensor"), 1), "the second tally on the charity"
    )


async def _at_least(value: Any, minimum: int) -> bool:
    return int(await value) >= minimum


async def test_a_private_groups_poll_sends_nothing(
    pair: tuple[RunningNode, RunningNode],
) -> None:
    hospital, charity = pair
    # Given a public group followed from the charity, and a private group, on the hospital
    nurse = await registered(hospital, "nurse")
    await create_group(nurse, "t1d", "Type 1 diabetes", "public")
    hush = await create_group(nurse, "hush", "Quiet condition", "private")
    bea = await registered(charity, "bea")
    await follow(bea, f"t1d@{hospital.domain}")
    from tests.test_federation_groups import _active_follow

    await eventually(lambda: _active_follow(charity), "the Accept on the charity")

    # When both groups get a poll, votes are cast in both, and both polls close
    private_thread = await start_poll(
        nurse, f"/g/{hush}", poll_form("Secret ballot", ["Whisper option", "Murmur option"])
    )
    public_thread = await start_poll(
        nurse, "/g/t1d", poll_form("Open ballot", ["Loud option", "Clear option"])
    )
    private_choices = await option_ids(hospital.node, private_thread)
    public_choices = await option_ids(hospital.node, public_thread)
    assert (await vote(nurse, private_thread, private_choices["Whisper option"])).status == 200
    assert (await vote(nurse, public_thread, public_choices["Loud option"])).status == 200
    clock = hospital.node.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(days=2))
    hospital.federation.poll_worker.wake()

    async def closing_published() -> Any:
        return await one(
            hospital.node,
            select(Poll.closing_sent_at).where(Poll.thread_id == public_thread),
        )

    await eventually(closing_published, "the public poll's closing published")

    async def delivered() -> bool:
        from tests.test_federation_groups import settled

        return await settled((hospital, charity))

    await eventually(delivered, "quiet queues")

    # Then the public poll went out, and nothing of the private one did
    sent = hospital.recorder.requests + charity.recorder.requests
    assert any(b"Loud option" in request.body for request in sent), "nothing public was sent"
    assert any(b'"closed"' in request.body for request in sent), "the closing was not sent"
    for request in sent:
        blob = request.url + request.body.decode("utf-8", "replace")
        for secret in ("Secret ballot", "Whisper option", "Murmur option", hush):
            assert secret not in blob, f"{secret!r} left in {request.method} {request.url}"
    private_outbox = await one(
        hospital.node,
        select(func.count())
        .select_from(OutboxActivity)
        .where(OutboxActivity.body.contains("Whisper option")),
    )
    assert private_outbox == 0
    assert (
        await one(
            hospital.node, select(Poll.closing_sent_at).where(Poll.thread_id == private_thread)
        )
        is None
    )


# ---------------------------------------------------------------- a Mastodon-shaped vote


def mastodon_vote(remote: FakeRemote, question: str, author: str, option: str) -> dict[str, Any]:
    """A vote as Mastodon sends it (one Create per choice; GoToSocial's fixture, one Note)."""
    template = json.loads((FIXTURES / "gotosocial_create_poll_votes.json").read_text())
    note = template["object"][0]
    actor = remote.actor("mallory")
    note |= {
        "attributedTo": actor,
        "id": f"{actor}#votes/{option.replace(' ', '-')}",
        "inReplyTo": question,
        "name": option,
        "to": author,
    }
    return {
        "@context": template["@context"],
        "id": f"{actor}/activity#vote/{option.replace(' ', '-')}",
        "type": "Create",
        "actor": actor,
        "object": note,
        "to": author,
        "published": template["published"],
    }


async def test_a_mastodon_shaped_vote_counts_once_and_is_no_reply(
    hospital: Hospital, remote: FakeRemote
) -> None:
    node = hospital.running.node
    nurse = await hospital.running.browser()
    await nurse.login("nurse")
    thread_id = await start_poll(
        nurse, "/g/t1d", poll_form("Pump or pens", ["pump", "pens", "both"], multiple=True)
    )
    question = f"{hospital.base_url}/t/{thread_id}"
    author = f"{hospital.base_url}/u/nurse"

    # Given mallory of a Mastodon-like server follows the group
    await join(hospital, remote)

    # When mallory's server sends her two choices, as Mastodon does, and one of them twice
    for option in ("pump", "both", "pump"):
        document = mastodon_vote(remote, question, author, option)
        if option == "pump" and await processed(hospital, document["id"]):
            document["id"] += "-again"
        answer = await post_signed(hospital, remote, document, url=f"{author}/inbox")
        assert answer.status == 202, answer
        await eventually(lambda d=document: processed(hospital, d["id"]), "the vote processed")

    # Then each choice counts once, and none is a reply
    counts = await votes_per_option(node, thread_id)
    choices = await option_ids(node, thread_id)
    assert counts == {choices["pump"]: 1, choices["both"]: 1}
    assert (
        await one(node, select(func.count()).select_from(Post).where(Post.thread_id == thread_id))
        == 1
    )
    page = await nurse.get(f"/t/{thread_id}")
    assert "mallory" not in page.text.lower()

    # And a vote for an option the poll does not have, or from a non-member, is not counted
    stray = mastodon_vote(remote, question, author, "insulin")
    await post_signed(hospital, remote, stray, url=f"{author}/inbox")
    assert await eventually(lambda: processed(hospital, stray["id"]), "the stray vote") == "failed"

    # And the counts that follow reach mallory's server in the group's Update of the Question
    async def updated() -> Any:
        for announce in remote.posted("Announce"):
            inner = announce.get("object")
            if isinstance(inner, dict) and inner.get("type") == "Update":
                obj = inner.get("object", {})
                totals = {item["name"]: item["replies"]["totalItems"] for item in obj["anyOf"]}
                if obj.get("type") == "Question" and totals["both"] == 1:
                    return obj
        return None

    question_doc = await eventually(updated, "the Update of the Question at mallory")
    totals = {item["name"]: item["replies"]["totalItems"] for item in question_doc["anyOf"]}
    assert totals == {"pump": 1, "pens": 0, "both": 1}
    assert question_doc["votersCount"] == 1, "one voter, two choices"


async def votes_per_option(node: NodeContext, thread_id: str) -> dict[int, int]:
    async with node.transaction() as session:
        found = await session.execute(
            select(PollVote.option_id, func.count())
            .where(PollVote.thread_id == thread_id)
            .group_by(PollVote.option_id)
        )
        return {option_id: int(count) for option_id, count in found.all()}


def test_the_poll_module_keeps_counts_private() -> None:
    assert polls.shown_count(9, large_group=True) == "fewer than 10"
    assert polls.shown_count(10, large_group=True) == "10"
    assert polls.shown_count(3, large_group=False) == "3"
    assert polls.published_count(5, large_group=True) == 0


async def test_many_votes_are_published_in_one_update(make_node: NodeFactory) -> None:
    # Given a public group's poll on a served node whose poll worker is stopped for a moment
    running = await start_node(make_node, "hospital")
    try:
        await running.federation.poll_worker.stop()
        nurse = await registered(running, "nurse")
        await create_group(nurse, "t1d", "Type 1 diabetes", "public")
        thread_id = await start_poll(nurse, "/g/t1d", poll_form("Breakfast", ["Eggs", "Oats"]))
        choice = await option_ids(running.node, thread_id)

        # When five members vote (each in a transaction of their own, as five requests are)
        node = running.node
        for number in range(5):
            async with node.transaction() as session:
                created = await members.create_member(
                    session, node.passwords, node.settings.limits, username=f"voter{number}",
                    password=DEFAULT_PASSWORD, display_name="", now=node.clock.now(),
                )  # fmt: skip
                view = await groups.view_group(session, "t1d", Viewer(created.id))
                await membership.join(session, view, node.clock.now())
            async with node.transaction() as session:
                await polls.vote(
                    session, Viewer(created.id), thread_id=thread_id,
                    option_ids=[choice["Eggs" if number % 2 else "Oats"]], now=node.clock.now(),
                )  # fmt: skip

        # Then one run of the worker publishes them all in one Update{Question}
        assert await running.federation.poll_publisher.drain() == 1
        assert await running.federation.poll_publisher.drain() == 0, "nothing left to send"
        updates = await _question_updates(running.node)
        assert len(updates) == 1
        totals = {item["name"]: item["replies"]["totalItems"] for item in updates[0]["oneOf"]}
        assert totals == {"Eggs": 2, "Oats": 3}
        assert updates[0]["votersCount"] == 5 and "closed" not in updates[0]

        # And when the poll closes, one more Update says so, once
        clock = running.node.clock
        assert isinstance(clock, ManualClock)
        clock.advance(timedelta(days=1))
        assert await running.federation.poll_publisher.drain() == 1
        assert await running.federation.poll_publisher.drain() == 0
        updates = await _question_updates(running.node)
        assert len(updates) == 2 and "closed" in updates[-1]
    finally:
        await running.close()


async def _question_updates(node: NodeContext) -> list[dict[str, Any]]:
    async with node.transaction() as session:
        rows = await session.execute(
            select(OutboxActivity.body)
            .where(OutboxActivity.type == "Update", OutboxActivity.object_type == "Question")
            .order_by(OutboxActivity.created_at, OutboxActivity.id)
        )
        return [json.loads(body)["object"] for body in rows.scalars()]


async def test_an_erased_account_takes_its_votes_along(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    await seed(web_node)
    alice, bob = await browser_factory(), await browser_factory()
    await alice.login("alice")
    await bob.login("bob")
    thread_id = await start_poll(alice, "/g/carers", poll_form("Night shifts", ["Yes", "No"]))
    choice = await option_ids(web_node, thread_id)
    await vote(alice, thread_id, choice["Yes"])
    assert results(await vote(bob, thread_id, choice["No"])) == {"Yes": "1", "No": "1"}

    # And bob's data export holds his own vote, and nobody else's
    status, _headers, body = await download(bob)
    assert status == 200
    [own] = files_of(body)["poll_votes.json"]
    assert own["option"] == "No" and own["thread"]["title"] == "Night shifts"

    # When bob's account is erased, as he may ask
    async with web_node.transaction() as session:
        bob_id = (await members.find_member(session, "bob")).id  # type: ignore[union-attr]
        await erase_local_account(session, bob_id, web_node.clock.now(), ErasureRequest.MEMBER)

    # Then his vote no longer counts, and the poll is marked for its counts to go out again
    assert results(await alice.get(f"/t/{thread_id}")) == {"Yes": "1", "No": "0"}
    assert (
        await one(web_node, select(Poll.tallies_changed_at).where(Poll.thread_id == thread_id))
        is not None
    )
