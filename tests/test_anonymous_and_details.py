"""Anonymous posting in private groups, as its author, other members, moderators (whose reveal
is logged), non-members and federation see it; and the gentle warning about personal details
before a draft is published, with the detector's table of what it flags and what it must not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from node import crisis, groups, members, membership, posts
from node.modlog import ModAction
from node.personal_details import Detail, personal_details
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Delivery, ModerationLogEntry, OutboxActivity, Post, Thread
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.conftest import BrowserFactory

AUTHOR_NAME = "Annabel Quill"
AUTHOR_HANDLE = "annabel"
AS2 = "application/activity+json"


@dataclass(frozen=True)
class Seeded:
    private_slug: str
    public_thread_id: str


async def seed(node: NodeContext) -> Seeded:
    """owen owns the private group "Living with HIV" (mia moderates it; annabel and bob are
    members) and the public group "carers" (annabel is a member, with a thread); eve is in
    neither."""
    now, limits = node.clock.now(), node.settings.limits
    async with node.transaction() as session:
        people = {}
        for username, name in (
            ("owen", "Owen Owner"),
            ("mia", "Mia Moderator"),
            (AUTHOR_HANDLE, AUTHOR_NAME),
            ("bob", "Bob Member"),
            ("eve", "Eve Outsider"),
        ):
            people[username] = await members.create_member(
                session, node.passwords, limits, username=username, password=DEFAULT_PASSWORD,
                display_name=name, now=now,
            )  # fmt: skip
        private = await groups.create_group(
            session, limits, owner_id=people["owen"].id, slug="ignored",
            name="Living with HIV", private=True, now=now,
        )  # fmt: skip
        public = await groups.create_group(
            session, limits, owner_id=people["owen"].id, slug="carers", name="Carers", now=now
        )
        for group, usernames in (
            (private, ("mia", AUTHOR_HANDLE, "bob")),
            (public, (AUTHOR_HANDLE, "bob")),
        ):
            for username in usernames:
                await membership.put_membership(
                    session, None, group.id, people[username].id, "active", now
                )
        view = await groups.view_group(session, "carers", Viewer(people[AUTHOR_HANDLE].id))
        thread = await posts.start_thread(
            session, limits, view, title="Respite care", draft=posts.Draft("Any tips?"), now=now
        )
    async with node.transaction() as session:
        owner_view = await groups.view_group(session, private.slug, Viewer(people["owen"].id))
        await membership.set_role(session, owner_view, "mia", "moderator", now)
    return Seeded(private.slug, thread.id)


async def signed_in(browser_factory: BrowserFactory, username: str) -> Browser:
    browser = await browser_factory()
    await browser.login(username)
    return browser


def byline(page: Page, post_id: str) -> str:
    match = re.search(rf'<p id="post-{post_id}-by" class="byline">(.*?)</p>', page.html, re.S)
    assert match, f"no byline for {post_id} on {page.path}"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()
    return text.split(" · ")[0]  # the name, without the time


def assert_author_absent(page: Page) -> None:
    """Nothing on the page names the anonymous author: text, attributes, links, comments."""
    assert page.status == 200, page.path
    html = page.html.lower()
    assert AUTHOR_HANDLE not in html, page.path
    assert AUTHOR_NAME.lower() not in html, page.path


async def post_ids(node: NodeContext, thread_id: str) -> list[str]:
    async with node.transaction() as session:
        query = select(Post.id).where(Post.thread_id == thread_id)
        return list(await session.scalars(query.order_by(Post.created_at, Post.id)))


async def federated_rows(node: NodeContext) -> tuple[int, int, list[str]]:
    async with node.transaction() as session:
        activities = list(await session.scalars(select(OutboxActivity.body)))
        deliveries = await session.scalar(select(func.count()).select_from(Delivery))
    return len(activities), int(deliveries or 0), activities


# ---------------------------------------------------------------- anonymous posting


async def test_an_anonymous_thread_names_nobody_and_only_a_logged_reveal_shows_its_author(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    slug = seeded.private_slug
    author = await signed_in(browser_factory, AUTHOR_HANDLE)
    bob = await signed_in(browser_factory, "bob")
    mia = await signed_in(browser_factory, "mia")
    before = await federated_rows(web_node)

    # Given the private group's form offers anonymity
    form = await author.get(f"/g/{slug}/new")
    assert 'name="anonymous"' in form.html

    # When annabel starts a thread anonymously, bob answers it, she answers him anonymously,
    # and he answers that
    page = await author.post(
        f"/g/{slug}/new",
        {"title": "Telling my family", "body": "I have not told anyone yet.", "anonymous": "yes"},
    )
    assert page.status == 200 and page.path.startswith("/t/"), page.text
    thread_id = page.path.removeprefix("/t/")
    [opening] = await post_ids(web_node, thread_id)
    page = await bob.get(f"/t/{thread_id}")
    assert 'name="anonymous"' in page.html  # offered on the reply form too
    await bob.post(f"/t/{thread_id}/reply", {"body": "You are not alone.", "parent": opening})
    [_, bobs] = await post_ids(web_node, thread_id)
    await author.get(f"/t/{thread_id}")
    await author.post(
        f"/t/{thread_id}/reply", {"body": "Thank you, Bob.", "parent": bobs, "anonymous": "yes"}
    )
    [_, _, answer] = await post_ids(web_node, thread_id)
    page = await bob.post(f"/t/{thread_id}/reply", {"body": "Any time.", "parent": answer})
    assert page.status == 200

    # Then other members see "Anonymous member" everywhere: thread, "in reply to", the
    # group's thread list, their feed; and no trace of her name or handle in the HTML
    page = await bob.get(f"/t/{thread_id}")
    assert byline(page, opening) == "Anonymous member"
    assert byline(page, answer) == "Anonymous member"
    assert byline(page, bobs).startswith("Bob Member")
    assert "In reply to Anonymous member" in page.text
    assert "Reveal who wrote it" not in page.text
    assert_author_absent(page)
    for path in (f"/g/{slug}", f"/t/{thread_id}?reply_to={answer}"):
        shown = await bob.get(path)
        assert_author_absent(shown)
        assert "Anonymous member" in shown.text, path
    # (the feed lists her public thread too, by name: the anonymous one names nobody)
    feed = await bob.get("/")
    [item] = [li for li in feed.html.split("<li") if "Telling my family" in li]
    assert 'by <span class="person anonymous">Anonymous member</span>' in item
    assert AUTHOR_HANDLE not in item.lower() and AUTHOR_NAME not in item
    assert "Reply to Anonymous member" in (await bob.get(f"/t/{thread_id}?reply_to={answer}")).text

    # And her profile says nothing of it, to bob or to anyone
    for browser in (bob, await browser_factory()):
        profile = await browser.get(f"/u/{AUTHOR_HANDLE}")
        assert profile.status == 200
        assert "Telling my family" not in profile.text and "Living with HIV" not in profile.text

    # And she reads "Anonymous member (you)", and can still edit and delete what she wrote
    page = await author.get(f"/t/{thread_id}")
    assert byline(page, opening) == "Anonymous member (you)"
    assert byline(page, answer) == "Anonymous member (you)"
    assert f'href="/p/{opening}/edit"' in page.html
    page = await author.post(
        f"/p/{opening}/edit", {"title": "Telling my family", "body": "Still have not told them."}
    )
    assert page.status == 200 and "Still have not told them." in page.text
    page = await author.post(f"/p/{answer}/delete")
    assert page.status == 200 and "This post was deleted." in page.text
    async with web_node.transaction() as session:
        edited = await session.get(Post, opening)
        assert edited is not None and edited.anonymous and edited.source.startswith("Still")

    # And the moderator sees "Anonymous member" too, with a way to reveal who wrote it
    page = await mia.get(f"/t/{thread_id}")
    assert byline(page, opening) == "Anonymous member"
    assert f'href="/p/{opening}/reveal"' in page.html
    assert_author_absent(page)

    # When bob reports the post, the moderators' queue does not name her either
    await bob.get(f"/p/{opening}/report")
    filed = await bob.post(f"/p/{opening}/report", {"category": "other", "comment": "check"})
    assert filed.status == 200
    queue = await mia.get(f"/g/{slug}/reports")
    assert "A post by an anonymous member" in queue.text
    assert_author_absent(queue)
    review_link = re.search(r'href="(/reports/\d+)\?', queue.html)
    assert review_link
    review = await mia.get(review_link.group(1))
    assert "reveal who wrote it" in review.text
    assert_author_absent(review)

    # When bob tries to reveal it, he is refused, and nothing is logged
    refused = await bob.post(f"/p/{opening}/reveal", {"reason": "curious"})
    assert refused.status == 403
    assert (await bob.get(f"/p/{opening}/reveal")).status == 403
    # And a moderator without a reason is asked for one, and learns nothing
    form = await mia.get(f"/p/{opening}/reveal")
    assert form.status == 200 and "Reason (required" in form.text
    assert_author_absent(form)
    no_reason = await mia.post(f"/p/{opening}/reveal", {"reason": "  "})
    assert no_reason.status == 400 and "Give a reason" in no_reason.text
    assert AUTHOR_HANDLE not in no_reason.html
    async with web_node.transaction() as session:
        reveals = select(ModerationLogEntry).where(
            ModerationLogEntry.action == ModAction.REVEAL_AUTHOR.value
        )
        assert list(await session.scalars(reveals)) == []

    # When the moderator reveals it with a reason
    revealed = await mia.post(f"/p/{opening}/reveal", {"reason": "A report needs follow-up."})

    # Then she, alone, sees who wrote it, and the log records the reveal in the group
    assert revealed.status == 200
    assert f"This post was written by {AUTHOR_NAME} @ {AUTHOR_HANDLE} ." in revealed.text
    assert f'href="/u/{AUTHOR_HANDLE}"' in revealed.html
    async with web_node.transaction() as session:
        [entry] = list(await session.scalars(reveals))
        group = await groups.find_group(session, slug)
        author_row = await members.get_member(session, AUTHOR_HANDLE)
    assert group is not None
    assert (entry.group_id, entry.actor_label, entry.post_id, entry.thread_id) == (
        group.id,
        "mia",
        opening,
        thread_id,
    )
    assert (entry.member_id, entry.reason) == (author_row.id, "A report needs follow-up.")
    # And the group's log shows the reveal, without naming her to every moderator who reads it
    log = await mia.get(f"/g/{slug}/moderation/log")
    assert "revealed who wrote an anonymous post" in log.text
    assert "A report needs follow-up." in log.text
    assert_author_absent(log)
    # And the thread page still names nobody, for the moderator too
    assert byline(await mia.get(f"/t/{thread_id}"), opening) == "Anonymous member"

    # And non-members, signed in or not, get what a missing thread gets
    eve = await signed_in(browser_factory, "eve")
    stranger = await browser_factory()
    for browser in (eve, stranger):
        for path in (f"/t/{thread_id}", f"/p/{opening}", f"/g/{slug}"):
            assert (await browser.get(path)).status == 404, path
        assert "Telling my family" not in (await browser.get("/")).text

    assert (await eve.get(f"/p/{opening}/reveal")).status == 404
    assert (await stranger.get(f"/p/{opening}/reveal")).path.startswith("/login")

    # And nothing of it is federated: no document, no activity, no delivery
    for path in (f"/p/{opening}", f"/t/{thread_id}", f"/g/{slug}/outbox"):
        assert (await stranger.get(path, Accept=AS2)).status == 404, path
    outbox = await stranger.get(f"/u/{AUTHOR_HANDLE}/outbox", Accept=AS2)
    assert outbox.status == 200 and thread_id not in outbox.html and opening not in outbox.html
    after = await federated_rows(web_node)
    assert after[:2] == before[:2]
    assert not [body for body in after[2] if thread_id in body or opening in body]


async def test_the_anonymous_flag_is_refused_in_public_groups(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    author = await signed_in(browser_factory, AUTHOR_HANDLE)
    async with web_node.transaction() as session:
        threads_before = await session.scalar(select(func.count()).select_from(Thread))
        posts_before = await session.scalar(select(func.count()).select_from(Post))

    # Given a public group's forms do not offer it
    assert 'name="anonymous"' not in (await author.get("/g/carers/new")).html
    assert 'name="anonymous"' not in (await author.get(f"/t/{seeded.public_thread_id}")).html

    # When a forged form asks for it anyway, for a thread and a reply
    page = await author.post(
        "/g/carers/new", {"title": "Hidden", "body": "Who am I?", "anonymous": "yes"}
    )

    # Then it is refused with a reason, the draft kept, and nothing is posted
    assert page.status == 400 and page.path == "/g/carers/new"
    assert posts.ANONYMOUS_REFUSED in page.text
    assert 'value="Hidden"' in page.html and "Who am I?</textarea>" in page.html
    page = await author.post(
        f"/t/{seeded.public_thread_id}/reply", {"body": "Me again", "anonymous": "yes"}
    )
    assert page.status == 400 and posts.ANONYMOUS_REFUSED in page.text
    assert "Me again</textarea>" in page.html
    async with web_node.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Thread)) == threads_before
        assert await session.scalar(select(func.count()).select_from(Post)) == posts_before


# ---------------------------------------------------------------- personal details


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("Ring me on 07700 900123 after six", Detail.PHONE),
        ("my mobile is 07700900123", Detail.PHONE),
        ("the clinic: 020 7946 0958", Detail.PHONE),
        ("(0161) 496 0000", Detail.PHONE),
        ("+44 7700 900123", Detail.PHONE),
        ("+44 (0)20 7946 0958", Detail.PHONE),
        ("+447700900123", Detail.PHONE),
        ("call (555) 123-4567", Detail.PHONE),
        ("555-123-4567", Detail.PHONE),
        ("555.123.4567", Detail.PHONE),
        ("+1 555 123 4567", Detail.PHONE),
        ("+1-202-555-0143", Detail.PHONE),
        ("write to jane.doe@example.com", Detail.EMAIL),
        ("me+tag@mail.co.uk", Detail.EMAIL),
        ("I live at 12 High Street", Detail.ADDRESS),
        ("221B Baker Street, London", Detail.ADDRESS),
        ("1600 Pennsylvania Avenue", Detail.ADDRESS),
        ("10 Downing St.", Detail.ADDRESS),
        ("5 Park lane", Detail.ADDRESS),
        ("born 3 May 1985", Detail.BIRTH_DATE),
        ("I was born on the 3rd of May 1985", Detail.BIRTH_DATE),
        ("born May 3, 1985", Detail.BIRTH_DATE),
        ("DOB 03/05/1985", Detail.BIRTH_DATE),
        ("D.O.B.: 3/5/85", Detail.BIRTH_DATE),
        ("date of birth: 1985-05-03", Detail.BIRTH_DATE),
        ("My birthday is 12/03/1990", Detail.BIRTH_DATE),
    ],
)
def test_the_detector_flags_personal_details(text: str, detail: Detail) -> None:
    assert personal_details(text) == [detail]


@pytest.mark.parametrize(
    "text",
    [
        "5.6",
        "my sugar was 7.8 mmol/L this morning",
        "HbA1c 48 mmol/mol, down from 64 mmol/mol in 2023",
        "12 units of Lantus at night",
        "12-15 units with breakfast, 0.5 units to correct",
        "basal 22 units, ratio 1:10",
        "BP 120/80",
        "blood pressure 135/85 mmHg on 12/03 and 130/85 on 19/03",
        "appointment on 12 March at 10:30",
        "see the nurse on 12/03",
        "my readings: 5.6 7.8 6.1 9.2 8.4 10.1",
        "weight 72.5 kg, ketones 0.6, eGFR 60",
        "type 1 for 15 years, since 2011",
        "diagnosed on 12/03/2019",  # a date with its year, but not a birth date
        "call 111 or 999; Samaritans on 116 123",
        "10,000 steps a day",
        "I walked 3 times down the road",
        "2.5mg 3 times daily",
        "",
    ],
)
def test_the_detector_stays_quiet_on_health_numbers_and_dates_without_a_year(text: str) -> None:
    assert personal_details(text) == []


def test_the_detector_reports_each_kind_once_across_texts() -> None:
    found = personal_details("Call 07700 900123", "or 07700 900124, a@b.org, born 3 May 1985")
    assert found == [Detail.PHONE, Detail.EMAIL, Detail.BIRTH_DATE]


async def test_a_draft_with_personal_details_is_kept_with_a_warning_then_published(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    author = await signed_in(browser_factory, AUTHOR_HANDLE)
    await author.get("/g/carers/new")
    draft = {
        "title": "Meet up?",
        "body": "Text me on 07700 900123 & say hi.",
        "content_warning": "",
    }

    # When she sends a new thread with a phone number in it
    page = await author.post("/g/carers/new", draft)

    # Then the form comes back with the draft and a warning, and nothing is published
    assert page.status == 200 and page.path == "/g/carers/new"
    assert "this may say who you are" in page.text and "a phone number" in page.text
    assert "Text me on 07700 900123 &amp; say hi.</textarea>" in page.html
    assert 'value="Meet up?"' in page.html
    assert '<input type="hidden" name="details_seen" value="yes">' in page.html
    assert '<button type="submit">Publish anyway</button>' in page.html
    async with web_node.transaction() as session:
        assert (await session.scalars(select(Post).where(Post.source == draft["body"]))).all() == []

    # When she presses "Publish anyway", it is published
    page = await author.post("/g/carers/new", draft | {"details_seen": "yes"})
    assert page.status == 200 and page.path.startswith("/t/"), page.text
    assert "Text me on 07700 900123" in page.text

    # And a reply is warned about the same way, then published
    thread_id = seeded.public_thread_id
    await author.get(f"/t/{thread_id}")
    reply = {"body": "I'm at 12 High Street, born 3 May 1985.", "parent": ""}
    page = await author.post(f"/t/{thread_id}/reply", reply)
    assert page.status == 200 and page.path == f"/t/{thread_id}/reply"  # not redirected
    assert "a street address, a date of birth" in page.text
    assert "I&#39;m at 12 High Street, born 3 May 1985.</textarea>" in page.html
    assert 'id="send-reply">Publish anyway</button>' in page.html
    page = await author.post(f"/t/{thread_id}/reply", reply | {"details_seen": "yes"})
    assert page.status == 200 and "I'm at 12 High Street" in page.text
    assert "this may say who you are" not in page.text

    # And a draft without any is published at once
    page = await author.post(f"/t/{thread_id}/reply", {"body": "BG 7.8 mmol/L on 12/03."})
    assert page.status == 200 and "this may say who you are" not in page.text
    assert "BG 7.8 mmol/L on 12/03." in page.text


async def test_the_crisis_prompt_and_the_details_warning_show_together_once(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    seeded = await seed(web_node)
    async with web_node.transaction() as session:
        owner = await members.get_member(session, "owen")
        owner.role = "admin"
        await session.flush()
        await crisis.set_phrases(session, owner, "kill myself", web_node.clock.now())
    author = await signed_in(browser_factory, AUTHOR_HANDLE)
    thread_id = seeded.public_thread_id
    await author.get(f"/t/{thread_id}")
    reply = {"body": "I want to kill myself. Call 07700 900123.", "parent": ""}

    # When a draft says a crisis phrase and holds a phone number
    page = await author.post(f"/t/{thread_id}/reply", reply)

    # Then one page shows both, with one confirmation field each, and the draft kept
    assert page.status == 200
    assert "you do not have to face this alone" in page.text
    assert "this may say who you are" in page.text
    assert '<input type="hidden" name="crisis_seen" value="yes">' in page.html
    assert '<input type="hidden" name="details_seen" value="yes">' in page.html
    assert "Press “Publish anyway” when you are ready" in page.text
    assert "Call 07700 900123.</textarea>" in page.html

    # When only the crisis prompt was confirmed (a changed draft), the warning shows again
    page = await author.post(f"/t/{thread_id}/reply", reply | {"crisis_seen": "yes"})
    assert "this may say who you are" in page.text
    assert "you do not have to face this alone" not in page.text

    # When both are confirmed, the second submit publishes
    page = await author.post(
        f"/t/{thread_id}/reply", reply | {"crisis_seen": "yes", "details_seen": "yes"}
    )
    assert page.status == 200 and page.path == f"/t/{thread_id}"
    assert "Call 07700 900123." in page.text
    async with web_node.transaction() as session:
        published = await session.scalars(select(Post).where(Post.source == reply["body"]))
        assert len(published.all()) == 1
