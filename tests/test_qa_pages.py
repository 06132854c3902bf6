"""An expert Q&A reads in pages of questions, each question with all its answers (the
experts' first) and the replies below them, as one page held them before; a post's own
address lands on the page of its question, and a page past the last is a 404. Real HTTP on
loopback against a real database; the posts are written with the domain services."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import select

from node import posts, professionals
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import ConditionGroup, Member
from tests.browser import Browser
from tests.conftest import BrowserFactory
from tests.sql_statements import statements_of
from tests.test_thread_pages import redirect_of, shown
from tests.test_web_flows import create_group

SIZE = posts.QA_PAGE_QUESTIONS
QUESTION = "My pump alarms at night when the tubing kinks; what do you do about question {n}?"
ANSWER = (
    "In my experience with question {n}: check the site first, then the tubing, and keep a "
    "spare set by the bed. It took me a few weeks to find what worked."
)


@dataclass(frozen=True)
class QuestionPosts:
    """A question and its three answers: a member's, then the expert's, then a reply to the
    member's answer (which goes with the question too)."""

    question: str
    peer: str
    expert: str
    below_peer: str

    @property
    def shown_order(self) -> list[str]:
        """As the page lists them: the question, the expert's answer, then in time order."""
        return [self.question, self.expert, self.peer, self.below_peer]


@dataclass(frozen=True)
class QaThread:
    thread_id: str
    opening: str
    questions: list[QuestionPosts]
    moira: Browser
    ben: Browser


async def member_of_t1d(browser_factory: BrowserFactory, username: str, name: str) -> Browser:
    browser = await browser_factory()
    await browser.register(username, display_name=name)
    await browser.get("/g/t1d")
    page = await browser.post("/g/t1d/join")
    assert page.status == 200, page.text[:300]
    return browser


async def qa_with_questions(
    node: NodeContext, browser_factory: BrowserFactory, count: int
) -> QaThread:
    """Moira's group t1d and a Q&A answered by ana, a verified nurse, in which ben asks
    `count` questions; later each gets ben's answer, ana's, and moira's reply to ben's, the
    answers written question after question, so that they come long after the questions."""
    moira = await browser_factory()
    await moira.register("moira", display_name="Moira")
    await create_group(moira, "t1d", "Type 1 diabetes")
    await member_of_t1d(browser_factory, "ana", "Ana Nurse")
    ben = await member_of_t1d(browser_factory, "ben", "Ben")
    async with node.transaction() as session:
        ana = (await session.execute(select(Member).where(Member.username == "ana"))).scalar_one()
        await professionals.verify(session, ana, title="Diabetes nurse", now=node.clock.now())
    await moira.get("/g/t1d/qa/new")
    page = await moira.post(
        "/g/t1d/qa/new",
        {"topic": "Pumps at night", "experts": "ana", "starts": "2026-11-01T12:00",
         "ends": "2026-11-03T12:00", "zone": "UTC", "intro": "Ask away."},
    )  # fmt: skip
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
    thread_id = page.path.removeprefix("/t/")
    # The rate of posts a member may write is not what these tests are about.
    limits = replace(
        node.settings.limits, rates=replace(node.settings.limits.rates, posts_per_member=None)
    )
    async with node.transaction() as session:
        people = {
            member.username: Viewer(member.id) for member in await session.scalars(select(Member))
        }
        moment = node.clock.now()

        async def write(who: str, parent: str | None, text: str) -> str:
            nonlocal moment
            moment += timedelta(seconds=1)
            post = await posts.reply(
                session,
                limits,
                people[who],
                thread_id=thread_id,
                parent_id=parent,
                draft=posts.Draft(text),
                now=moment,
            )
            return post.id

        view = await posts.view_thread(session, thread_id, people["moira"])
        asked = [await write("ben", None, QUESTION.format(n=n)) for n in range(count)]
        peers = [await write("ben", q, ANSWER.format(n=n)) for n, q in enumerate(asked)]
        experts = [await write("ana", q, ANSWER.format(n=n)) for n, q in enumerate(asked)]
        below = [await write("moira", p, ANSWER.format(n=n)) for n, p in enumerate(peers)]
    node.clock.advance(moment - node.clock.now())  # type: ignore[attr-defined]
    questions = [QuestionPosts(*four) for four in zip(asked, peers, experts, below, strict=True)]
    return QaThread(thread_id, view.opening.id, questions, moira, ben)


async def statements_reading_posts(node: NodeContext, reader: Browser, path: str) -> list[str]:
    """The statements that read the posts table while `reader` loads the page at `path`."""
    with statements_of(node, requests_only=True) as seen:
        page = await reader.get(path)
    assert page.status == 200, path
    return [
        statement
        for statement in seen
        if re.search(r"\bposts\b", statement) and statement.upper().startswith(("SELECT", "WITH"))
    ]


def labels(html: str) -> dict[str, str]:
    """Each post's label on the page ("Question", "Expert answer" or none), by post id."""
    found = re.finditer(
        r'<li id="post-([0-9a-z]+)" class="post">\s*<article[^>]*>\s*<header>\s*'
        r'(?:<p class="qa-label"><strong>([^<]+)</strong></p>)?',
        html,
    )
    return {match.group(1): match.group(2) or "" for match in found}


async def test_a_qa_reads_in_pages_of_questions_each_with_all_its_answers(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a Q&A with two full pages of questions and three more, each with three answers
    qa = await qa_with_questions(node, browser_factory, 2 * SIZE + 3)
    reader = await browser_factory()

    # When a reader walks its pages by their "Next page" links
    pages = []
    path = f"/t/{qa.thread_id}"
    while True:
        page = await reader.get(path)
        assert page.status == 200, path
        pages.append(page)
        following = re.search(r'<a href="([^"]+)" rel="next">', page.html)
        if following is None:
            break
        path = following.group(1).replace("&amp;", "&")

    # Then there are three, each saying which it is
    assert [page.path for page in pages] == [
        f"/t/{qa.thread_id}",
        f"/t/{qa.thread_id}?page=2",
        f"/t/{qa.thread_id}?page=3",
    ]
    for number, page in enumerate(pages, 1):
        assert f"Page {number} of 3" in page.text
    # And the opening post is on the first only, then every question once, in time order,
    # each followed by all its answers, the expert's first
    expected = [qa.opening] + [post for q in qa.questions for post in q.shown_order]
    assert [post for page in pages for post in shown(page.html)] == expected
    assert "Ask away." in pages[0].text and "Ask away." not in pages[1].text
    # And each page holds its share of the questions
    for number, page in enumerate(pages):
        on_page = [q.question for q in qa.questions[number * SIZE : (number + 1) * SIZE]]
        assert [post for post, label in labels(page.html).items() if label == "Question"] == (
            on_page
        )
    # And the expert's answers are labelled, the others not
    for question in qa.questions:
        page = pages[qa.questions.index(question) // SIZE]
        assert labels(page.html)[question.expert] == "Expert answer"
        assert labels(page.html)[question.peer] == labels(page.html)[question.below_peer] == ""
    # And the list goes on numbering where the page before stopped
    assert f'<ol class="posts" start="{SIZE + 2}">' in pages[1].html

    # When the reader asks for the page after the last
    missing = await reader.get(f"/t/{qa.thread_id}?page=4")
    # Then it is not there, and the page says how many there are
    assert missing.status == 404
    assert "This thread has 3 pages: there is no page 4." in missing.text


async def test_a_posts_address_lands_on_the_page_of_its_question(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    qa = await qa_with_questions(node, browser_factory, 2 * SIZE + 1)
    reader = await browser_factory()
    first, second, third = qa.questions[0], qa.questions[SIZE], qa.questions[2 * SIZE]
    base = f"/t/{qa.thread_id}"
    assert await redirect_of(reader, f"/p/{qa.opening}") == f"{base}#post-{qa.opening}"
    assert await redirect_of(reader, f"/p/{first.below_peer}") == f"{base}#post-{first.below_peer}"
    # An answer written long after the questions of later pages is on its question's page
    for post in second.shown_order:
        assert await redirect_of(reader, f"/p/{post}") == f"{base}?page=2#post-{post}"
    for post in third.shown_order:
        assert await redirect_of(reader, f"/p/{post}") == f"{base}?page=3#post-{post}"
    # And following the address shows the post there
    page = await reader.get(f"/p/{second.expert}")
    assert page.path == f"{base}?page=2"
    assert f'<li id="post-{second.expert}"' in page.html

    # When ben replies, from page 2, to the expert's answer there
    await qa.ben.get(f"{base}?page=2&reply_to={second.expert}")
    async with qa.ben.client.post(
        f"{base}/reply?page=2",
        data={"body": "Thank you, that helps.", "parent": second.expert,
              "csrf_token": qa.ben.token},
        allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.status == 303
        location = response.headers["Location"]
    # Then he lands on page 2, at his reply, listed with that question's answers
    assert re.fullmatch(rf"{base}\?page=2#post-[0-9a-z]+", location), location
    reply_id = location.split("#post-")[1]
    page = await qa.ben.get(f"{base}?page=2")
    listed = shown(page.html)
    assert listed.index(reply_id) == listed.index(second.below_peer) + 1

    # And a new question goes to the last page, now holding two
    async with qa.ben.client.post(
        f"{base}/reply?page=2",
        data={"body": "One more question?", "csrf_token": qa.ben.token},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith(f"{base}?page=3#post-")


async def test_a_private_groups_qa_page_is_the_same_404_as_a_missing_one(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    moira = await browser_factory()
    await moira.register("moira", display_name="Moira")
    await moira.get("/groups/new")
    page = await moira.post(
        "/groups/new", {"slug": "hush", "name": "Hush", "visibility": "private"}
    )
    group_path = page.path  # a private group's address is not its slug
    async with node.transaction() as session:
        nurse = await session.scalar(select(Member).where(Member.username == "moira"))
        assert nurse is not None
        await professionals.verify(session, nurse, title="Diabetes nurse", now=node.clock.now())
    await moira.get(f"{group_path}/qa/new")
    page = await moira.post(
        f"{group_path}/qa/new",
        {"topic": "Private pumps", "experts": "moira", "starts": "2026-11-01T12:00",
         "ends": "2026-11-03T12:00", "zone": "UTC"},
    )  # fmt: skip
    assert page.status == 200 and page.path.startswith("/t/"), page.text[:300]
    thread_id = page.path.removeprefix("/t/")
    for number in range(SIZE + 1):
        await moira.get(page.path)
        asked = await moira.post(f"/t/{thread_id}/reply", {"body": f"Question {number}?"})
        assert asked.status == 200, asked.text[:300]
    assert (await moira.get(f"/t/{thread_id}?page=2")).status == 200

    outsider = await browser_factory()
    await outsider.register("olga")
    for number in ("1", "2", "3"):
        hidden = await outsider.get(f"/t/{thread_id}?page={number}")
        missing = await outsider.get(f"/t/{thread_id[:-1]}x?page={number}")
        assert hidden.status == missing.status == 404
        assert hidden.html == missing.html


async def test_a_qa_of_300_questions_with_3_answers_each_stays_under_100_kb_a_page(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    qa = await qa_with_questions(node, browser_factory, 300)
    anonymous = await browser_factory()
    pages = -(-len(qa.questions) // SIZE)
    # For a reader who is not signed in and for a member (whose page has forms and links on
    # every post), while it is on and once it ended (when each page opens with its index)
    for ended in (False, True):
        if ended:
            node.clock.advance(timedelta(days=3))  # type: ignore[attr-defined]
        for reader in (anonymous, qa.ben):
            for number in (1, pages // 2, pages):
                page = await reader.get(f"/t/{qa.thread_id}?page={number}")
                assert page.status == 200
                assert len(page.html.encode()) < 100 * 1024, (ended, number)
                assert f"Page {number} of {pages}" in page.text
    # And whatever the page, its posts are read with a few statements (the page's questions
    # and the replies below them are chosen in the database): the thread, the page's posts,
    # and on a later page the opening post, which the first holds
    for number in (1, pages // 2, pages):
        path = f"/t/{qa.thread_id}?page={number}"
        assert len(await statements_reading_posts(node, anonymous, path)) == min(number, 2) + 1
    last = qa.questions[-1]
    assert (
        await redirect_of(anonymous, f"/p/{last.below_peer}")
        == f"/t/{qa.thread_id}?page={pages}#post-{last.below_peer}"
    )


async def test_a_held_question_is_paged_only_for_those_who_see_it(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a Q&A of one full page, in a group that then holds newcomers' first posts
    qa = await qa_with_questions(node, browser_factory, SIZE)
    async with node.transaction() as session:
        group = await session.scalar(select(ConditionGroup).where(ConditionGroup.slug == "t1d"))
        assert group is not None
        group.hold_first_posts = 1
    cora = await member_of_t1d(browser_factory, "cora", "Cora")
    base = f"/t/{qa.thread_id}"

    # When cora asks a question, which waits for a moderator
    await cora.get(base)
    async with cora.client.post(
        f"{base}/reply", data={"body": "Is this held?", "csrf_token": cora.token},
        allow_redirects=False,
    ) as response:  # fmt: skip
        assert response.status == 303
        location = response.headers["Location"]
    held = location.split("#post-")[1]

    # Then she finds it on a second page, as the moderator does
    assert location == f"{base}?page=2#post-{held}"
    for browser in (cora, qa.moira):
        page = await browser.get(f"{base}?page=2")
        assert page.status == 200 and shown(page.html) == [held]
        assert "Page 2 of 2" in page.text
    # And for anyone else the Q&A is still one page, without it
    reader = await browser_factory()
    page = await reader.get(base)
    assert held not in shown(page.html) and "Page 1 of" not in page.text
    assert len(shown(page.html)) == 1 + 4 * SIZE
    missing = await reader.get(f"{base}?page=2")
    assert missing.status == 404 and "This thread has 1 page: there is no page 2." in missing.text
