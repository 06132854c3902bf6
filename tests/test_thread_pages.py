"""A thread with many replies reads in pages of 50 posts (issue 14): links between pages that
work without JavaScript, a post's own address and a new reply landing on the page that shows
them, and a clear 400 or 404 for a page that is not there."""

from __future__ import annotations

import re

from node import members, posts
from node.policy import Viewer
from node.runtime import NodeContext
from tests.browser import Browser
from tests.conftest import BrowserFactory
from tests.test_web_flows import create_group

SIZE = posts.THREAD_PAGE_SIZE


async def long_thread(node: NodeContext, browser: Browser, replies: int) -> tuple[str, list[str]]:
    """Alice's group and thread with `replies` replies (written with the domain service, the
    first to the opening post, the others each to the one before); answers the thread's id
    and every post's id in time order."""
    await browser.register("alice", display_name="Alice")
    await create_group(browser, "t1d", "Type 1 diabetes")
    page = await browser.post("/g/t1d/new", {"title": "Night hypos", "body": "Opening words"})
    thread_id = page.path.removeprefix("/t/")
    async with node.transaction() as session:
        alice = await members.find_member(session, "alice")
        assert alice is not None
        view = await posts.view_thread(session, thread_id, Viewer(alice.id))
        ids = [view.posts[0].post.id]
        for number in range(replies):
            reply = await posts.reply(
                session,
                node.settings.limits,
                Viewer(alice.id),
                thread_id=thread_id,
                parent_id=ids[-1] if number else None,
                draft=posts.Draft(f"Reply number {number + 1}."),
                now=node.clock.now(),
            )
            ids.append(reply.id)
    return thread_id, ids


def shown(html: str) -> list[str]:
    return re.findall(r'<li id="post-([0-9a-z]+)"', html)


async def redirect_of(browser: Browser, path: str) -> str:
    async with browser.client.get(path, allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        return response.headers["Location"]


async def test_a_long_thread_reads_in_pages_linked_without_javascript(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a thread of 120 replies (121 posts: three pages)
    alice = await browser_factory()
    thread_id, ids = await long_thread(node, alice, 120)
    reader = await browser_factory()

    # Then page 1 shows the opening post and the first 49 replies, and links onwards only
    first = await reader.get(f"/t/{thread_id}")
    assert shown(first.html) == ids[:SIZE]
    assert "Opening words" in first.text
    assert "Page 1 of 3" in first.text
    assert f'href="/t/{thread_id}?page=2" rel="next"' in first.html
    assert f'href="/t/{thread_id}?page=3" rel="last"' in first.html
    assert 'rel="prev"' not in first.html

    # And page 2 shows the next 50, not the opening post, with links both ways
    second = await reader.get(f"/t/{thread_id}?page=2")
    assert second.status == 200
    assert shown(second.html) == ids[SIZE : 2 * SIZE]
    assert "Opening words" not in second.text
    assert "Night hypos" in second.text  # the title on every page
    assert f'href="/t/{thread_id}" rel="first"' in second.html
    assert f'href="/t/{thread_id}" rel="prev"' in second.html
    assert f'href="/t/{thread_id}?page=3" rel="next"' in second.html
    # A reply answering a post of page 1 links to that post's own address (which finds it)
    assert f'href="/p/{ids[SIZE - 1]}"' in second.html

    # And the last page holds the rest
    last = await reader.get(f"/t/{thread_id}?page=3")
    assert shown(last.html) == ids[2 * SIZE :]
    assert 'rel="next"' not in last.html
    assert f'href="/t/{thread_id}?page=2" rel="prev"' in last.html


async def test_a_posts_address_lands_on_its_page_at_its_anchor(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    alice = await browser_factory()
    thread_id, ids = await long_thread(node, alice, 60)
    reader = await browser_factory()
    assert await redirect_of(reader, f"/p/{ids[0]}") == f"/t/{thread_id}#post-{ids[0]}"
    assert (
        await redirect_of(reader, f"/p/{ids[SIZE - 1]}") == f"/t/{thread_id}#post-{ids[SIZE - 1]}"
    )
    assert await redirect_of(reader, f"/p/{ids[SIZE]}") == f"/t/{thread_id}?page=2#post-{ids[SIZE]}"
    page = await reader.get(f"/p/{ids[-1]}")
    assert page.path == f"/t/{thread_id}?page=2"
    assert f'id="post-{ids[-1]}"' in page.html


async def test_after_replying_the_member_lands_on_the_page_with_the_reply(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    # Given a thread of two full pages
    alice = await browser_factory()
    thread_id, ids = await long_thread(node, alice, 2 * SIZE - 1)
    await alice.get(f"/t/{thread_id}?page=2")

    # When she replies from page 2 to a post on it
    reply_link = f'href="/t/{thread_id}?page=2&amp;reply_to={ids[-1]}#reply"'
    assert reply_link in (await alice.get(f"/t/{thread_id}?page=2")).html
    form = await alice.get(f"/t/{thread_id}?page=2&reply_to={ids[-1]}")
    assert f'action="/t/{thread_id}/reply?page=2"' in form.html
    async with alice.client.post(
        f"/t/{thread_id}/reply?page=2",
        data={"body": "The newest words", "parent": ids[-1], "csrf_token": alice.token},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        location = response.headers["Location"]

    # Then she lands on the new third page, at her reply
    assert re.fullmatch(rf"/t/{thread_id}\?page=3#post-[0-9a-z]+", location), location
    page = await alice.get(location.split("#")[0])
    assert "The newest words" in page.text
    assert f'id="{location.split("#")[1]}"' in page.html

    # And a refused reply from page 2 shows page 2 again, with the text kept
    refused = await alice.post(f"/t/{thread_id}/reply?page=2", {"body": "", "parent": ids[-1]})
    assert refused.status == 400
    assert shown(refused.html) == ids[SIZE : 2 * SIZE]


async def test_a_page_that_is_not_there_is_a_404_or_400_with_a_reason(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    alice = await browser_factory()
    thread_id, _ = await long_thread(node, alice, 60)
    reader = await browser_factory()
    missing = await reader.get(f"/t/{thread_id}?page=3")
    assert missing.status == 404
    assert "This thread has 2 pages: there is no page 3." in missing.text
    for bad in ("0", "-1", "two", "02", "1.5", "", "99999999999999999999", "٢"):
        page = await reader.get(f"/t/{thread_id}?page={bad}")
        assert page.status == 400, bad
        assert "page" in page.text.lower()
    # Page 1 named explicitly is the first page
    assert shown((await reader.get(f"/t/{thread_id}?page=1")).html)[0] != ""
    # A private or missing thread answers the same 404 whatever the page asked for
    assert (await reader.get("/t/nosuchthread?page=2")).status == 404


async def test_a_thousand_replies_stay_under_100_kb_a_page(
    browser_factory: BrowserFactory, node: NodeContext
) -> None:
    alice = await browser_factory()
    thread_id, ids = await long_thread(node, alice, 1000)
    reader = await browser_factory()
    pages = -(-len(ids) // SIZE)
    for number in (1, pages // 2, pages):
        page = await reader.get(f"/t/{thread_id}?page={number}")
        assert page.status == 200
        assert len(page.html.encode()) < 100 * 1024
        assert f"Page {number} of {pages}" in page.text
    assert (
        await redirect_of(reader, f"/p/{ids[-1]}") == f"/t/{thread_id}?page={pages}#post-{ids[-1]}"
    )
