"""The feed, unread markers, watching and muting threads, and keyset pagination of growing
lists (issue 14), on a real migrated database and through the real app.

Thread rows for the long lists are written straight into the database (250 threads through
the forms would only test the rate limits); everything a person does goes through the app.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import func, select

from node import groups, members, membership, thread_lists, thread_reads
from node.erasure import ErasureRequest, erase_local_account
from node.errors import Invalid
from node.ids import new_object_id
from node.modlog import ModAction, log_action
from node.paging import FIRST_PAGE, PageRequest, decode_cursor, encode_cursor
from node.policy import Viewer
from node.runtime import NodeContext
from node.storage.models import Member, Post, Thread, ThreadRead
from tests.browser import DEFAULT_PASSWORD, Browser, Page
from tests.clock import ManualClock
from tests.conftest import BrowserFactory

MINUTE = timedelta(minutes=1)
THREAD_LINK = re.compile(r'<a href="/t/([0-9a-z]+)">')


# ---------------------------------------------------------------- helpers


async def person(node: NodeContext, username: str) -> int:
    async with node.transaction() as session:
        created = await members.create_member(
            session, node.passwords, node.settings.limits, username=username,
            password=DEFAULT_PASSWORD, display_name=username.title(), now=node.clock.now(),
        )  # fmt: skip
        return created.id


async def group_of(node: NodeContext, owner: int, slug: str, private: bool = False) -> str:
    """A group owned by `owner`; its address (a private group's is random)."""
    async with node.transaction() as session:
        group = await groups.create_group(
            session, node.settings.limits, owner_id=owner, slug=slug, name=slug.title(),
            private=private, now=node.clock.now(),
        )  # fmt: skip
        return group.slug


async def add_threads(
    node: NodeContext, slug: str, author: int, count: int, start: datetime, title: str = "T"
) -> list[str]:
    """`count` threads with their opening posts, three to each moment of activity (so the
    id decides between them), the newest last; their ids in the order the list shows them."""
    made: list[tuple[datetime, str]] = []
    async with node.transaction() as session:
        group = await groups.find_group(session, slug)
        assert group is not None
        for number in range(count):
            moment = start + timedelta(seconds=number // 3)
            thread = Thread(
                id=new_object_id(), group_id=group.id, title=f"{title} {number}",
                author_id=author, created_at=moment, last_activity_at=moment,
            )  # fmt: skip
            session.add(thread)
            await session.flush()
            session.add(
                Post(
                    id=new_object_id(),
                    thread_id=thread.id,
                    parent_id=None,
                    author_id=author,
                    source="Hello",
                    content_html="<p>Hello</p>",
                    content_warning="",
                    created_at=moment,
                    anonymous=False,
                )
            )
            made.append((moment, thread.id))
    return [thread_id for _, thread_id in sorted(made, reverse=True)]


def thread_ids(page: Page) -> list[str]:
    return THREAD_LINK.findall(page.html)


def link(page: Page, label: str) -> str | None:
    found = re.search(rf'<a href="(\?[^"]*)" rel="[a-z]+">{label}</a>', page.html)
    return found.group(1).replace("&amp;", "&") if found else None


async def signed_in(browser_factory: BrowserFactory, username: str) -> Browser:
    browser = await browser_factory()
    await browser.login(username)
    return browser


# ---------------------------------------------------------------- pagination


async def test_250_threads_each_reached_once_while_a_new_one_arrives(node: NodeContext) -> None:
    # Given a group with 250 threads, some sharing a moment of activity
    alice = await person(node, "alice")
    slug = await group_of(node, alice, "pages")
    start = node.clock.now() - timedelta(days=1)
    expected = await add_threads(node, slug, alice, 250, start)
    viewer = Viewer(alice)

    async def page(request: PageRequest) -> thread_lists.Page[thread_lists.ThreadSummary]:
        async with node.transaction() as session:
            view = await groups.view_group(session, slug, viewer)
            return await thread_lists.group_threads(session, view, request)

    # When a member pages through, and a new thread starts after the first page
    seen: list[str] = []
    current = await page(FIRST_PAGE)
    assert current.newer is None and current.first
    seen += [item.thread.id for item in current.items]
    newest = await add_threads(node, slug, alice, 1, node.clock.now(), title="Late")
    pages_forward = [current]
    while current.older is not None:
        cursor = decode_cursor(current.older, thread_lists.GROUP_KEYS)
        current = await page(PageRequest(cursor))
        pages_forward.append(current)
        seen += [item.thread.id for item in current.items]

    # Then every thread came once, in the list's order, and the new one on no later page
    assert seen == expected
    assert len(pages_forward) == 5
    assert newest[0] not in seen

    # And going back with "Newer" reaches every thread again, the new one at the top
    back: list[str] = []
    while current.newer is not None:
        cursor = decode_cursor(current.newer, thread_lists.GROUP_KEYS)
        current = await page(PageRequest(cursor, newer=True))
        back = [item.thread.id for item in current.items] + back
    assert back == newest + expected[:200]


async def test_pinned_threads_first_and_deleted_empty_threads_left_out(node: NodeContext) -> None:
    alice = await person(node, "alice")
    slug = await group_of(node, alice, "pins")
    start = node.clock.now() - timedelta(hours=1)
    ids = await add_threads(node, slug, alice, 7, start)
    async with node.transaction() as session:
        old = await session.get(Thread, ids[-1])
        assert old is not None
        old.pinned_at = node.clock.now()
        # An opening post deleted, nothing answered: out; one with a live reply: in.
        for thread_id, replied in ((ids[0], False), (ids[1], True)):
            opening = (
                await session.execute(select(Post).where(Post.thread_id == thread_id))
            ).scalar_one()
            opening.deleted_at = node.clock.now()
            if replied:
                session.add(
                    Post(
                        id=new_object_id(),
                        thread_id=thread_id,
                        parent_id=opening.id,
                        author_id=alice,
                        source="Still here",
                        content_html="<p>Still here</p>",
                        content_warning="",
                        created_at=node.clock.now(),
                        anonymous=False,
                    )
                )
    shown: list[str] = []
    request = PageRequest(size=2)
    while True:
        async with node.transaction() as session:
            view = await groups.view_group(session, slug, Viewer(alice))
            page = await thread_lists.group_threads(session, view, request)
        shown += [item.thread.id for item in page.items]
        if page.older is None:
            break
        request = PageRequest(decode_cursor(page.older, thread_lists.GROUP_KEYS), size=2)
    assert shown == [ids[-1], ids[1], *ids[2:-1]]


async def test_member_list_pages_in_joining_order(node: NodeContext) -> None:
    alice = await person(node, "alice")
    slug = await group_of(node, alice, "many")
    names = ["alice"]
    for number in range(6):
        node.clock.advance(MINUTE)  # type: ignore[attr-defined]
        joiner = await person(node, f"joiner{number}")
        async with node.transaction() as session:
            await membership.join(session, await groups.view_group(session, slug, Viewer(joiner)),
                                  node.clock.now())  # fmt: skip
        names.append(f"joiner{number}")
    listed: list[str] = []
    request = PageRequest(size=3)
    while True:
        async with node.transaction() as session:
            view = await groups.view_group(session, slug, Viewer(alice))
            page = await membership.members_page(session, view, request)
        listed += [entry.member.username for entry in page.items]
        if page.older is None:
            break
        request = PageRequest(decode_cursor(page.older, membership.MEMBER_KEYS), size=3)
    assert listed == names


def test_cursors_round_trip_and_bad_ones_are_refused() -> None:
    moment = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=ManualClock().now().tzinfo)
    text = encode_cursor((1, moment, "01abc"))
    assert decode_cursor(text, thread_lists.GROUP_KEYS) == (1, moment, "01abc")
    for bad in ("", "1.2", "x.1.ab", "1.1.AB", "1.1.a.b", "1." + "9" * 18 + ".a", "1" * 80):
        try:
            decode_cursor(bad, thread_lists.GROUP_KEYS)
        except Invalid as error:
            assert "not valid" in str(error)
        else:
            raise AssertionError(f"{bad!r} was accepted")


async def test_group_pages_through_links_and_bad_cursors_are_400(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    alice = await person(web_node, "alice")
    slug = await group_of(web_node, alice, "linked")
    expected = await add_threads(web_node, slug, alice, 120, web_node.clock.now() - MINUTE * 60)
    reader = await browser_factory()  # signed out: a public group's list is public

    # Given the first page, when "Older threads" is followed to the end
    page = await reader.get(f"/g/{slug}")
    seen = thread_ids(page)
    assert link(page, "Newer threads") is None
    while (older := link(page, "Older threads")) is not None:
        page = await reader.get(f"/g/{slug}{older}")
        assert page.status == 200
        seen += thread_ids(page)
    # Then every thread was listed once, and the last page links back
    assert seen == expected
    newer = link(page, "Newer threads")
    assert newer is not None
    back = await reader.get(f"/g/{slug}{newer}")
    assert thread_ids(back) == expected[50:100]

    # A cursor that is not one of ours is a 400 with a reason, never a 500
    for query in (
        "?before=zzz",
        "?after=1.2.3.4",
        "?before=1.1.a&after=1.1.a",
        "?before=" + "9" * 70,
    ):
        bad = await reader.get(f"/g/{slug}{query}")
        assert bad.status == 400, query
        assert "This page link is not valid" in bad.text
    assert (await reader.get("/g/linked/members?before=nope")).status == 400


# ---------------------------------------------------------------- the feed


async def test_feed_unread_markers_clear_as_the_member_reads(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    clock = web_node.clock
    alice_id = await person(web_node, "alice")
    bob_id = await person(web_node, "bob")
    slug = await group_of(web_node, alice_id, "hypos")
    async with web_node.transaction() as session:
        await membership.join(session, await groups.view_group(session, slug, Viewer(bob_id)),
                              clock.now())  # fmt: skip
    alice = await signed_in(browser_factory, "alice")
    bob = await signed_in(browser_factory, "bob")

    # Given a thread alice starts after bob joined
    clock.advance(MINUTE)  # type: ignore[attr-defined]
    started = await alice.post(f"/g/{slug}/new", {"title": "Night hypos", "body": "Anyone?"})
    thread_path = started.path
    thread_id = thread_path.removeprefix("/t/")

    # Then bob's feed lists it as new, linked from the header
    feed = await bob.get("/feed")
    assert 'href="/feed">Feed</a>' in feed.html
    assert "Night hypos" in feed.text and "New in “Night hypos”" in feed.text

    # When bob reads it, the marker clears
    await bob.get(thread_path)
    feed = await bob.get("/feed")
    assert "Night hypos" in feed.text and " new" not in feed.text and "New in" not in feed.text

    # When alice replies twice, bob sees "2 new" linking to the first of them
    clock.advance(MINUTE)  # type: ignore[attr-defined]
    first = await alice.post(f"{thread_path}/reply", {"body": "Me again."})
    first_reply = first.path.split("#post-")[-1] if "#" in first.path else None
    clock.advance(MINUTE)  # type: ignore[attr-defined]
    await alice.post(f"{thread_path}/reply", {"body": "And again."})
    feed = await bob.get("/feed")
    assert "2 new in “Night hypos”" in feed.text
    assert "last reply by Alice" in feed.text
    async with web_node.transaction() as session:
        replies = (
            await session.execute(
                select(Post.id).where(Post.thread_id == thread_id, Post.parent_id.is_not(None))
                .order_by(Post.created_at)
            )
        ).scalars().all()  # fmt: skip
    assert first_reply in (None, replies[0])
    assert f'href="/p/{replies[0]}"' in feed.html
    # The same marks show on the group's own list, for its members only
    assert "2 new" in (await bob.get(f"/g/{slug}")).text
    assert " new" not in (await (await browser_factory()).get(f"/g/{slug}")).text

    # And alice's own replies are never unread to her
    assert "new in" not in (await alice.get("/feed")).text.lower()

    # When bob opens the thread, everything is read again
    await bob.get(thread_path)
    assert "new in" not in (await bob.get("/feed")).text.lower()
    async with web_node.transaction() as session:
        row = await session.get(ThreadRead, (bob_id, thread_id))
        assert row is not None and row.read_up_to == clock.now()


async def test_watch_and_mute_a_thread(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    alice_id = await person(web_node, "alice")
    bob_id = await person(web_node, "bob")
    slug = await group_of(web_node, alice_id, "mutes")
    async with web_node.transaction() as session:
        await membership.join(session, await groups.view_group(session, slug, Viewer(bob_id)),
                              web_node.clock.now())  # fmt: skip
    alice = await signed_in(browser_factory, "alice")
    bob = await signed_in(browser_factory, "bob")
    thread_path = (await alice.post(f"/g/{slug}/new", {"title": "Loud", "body": "x"})).path
    thread_id = thread_path.removeprefix("/t/")
    await alice.post(f"/g/{slug}/new", {"title": "Quiet", "body": "y"})

    # Bob watches the thread from its page
    page = await bob.get(thread_path)
    assert 'value="watch"' in page.html
    page = await bob.post(f"{thread_path}/subscription", {"subscription": "watch"})
    assert page.status == 200 and "You are watching this thread." in page.text
    async with web_node.transaction() as session:
        assert await thread_reads.thread_subscription(session, bob_id, thread_id) == "watch"
        assert await thread_reads.thread_subscription(session, alice_id, thread_id) is None
        found = await thread_reads.subscriptions_of(session, [thread_id])
        assert found == {(bob_id, thread_id): "watch"}

    # Then mutes it: it leaves his feed (and only his)
    page = await bob.post(f"{thread_path}/subscription", {"subscription": "mute"})
    assert "You muted this thread" in page.text
    feed = await bob.get("/feed")
    assert "Loud" not in feed.text and "Quiet" in feed.text
    assert "Loud" in (await alice.get("/feed")).text
    async with web_node.transaction() as session:
        found = await thread_reads.subscriptions_of(session, [thread_id], [bob_id, alice_id])
        assert found == {(bob_id, thread_id): "mute"}

    # Unmuting brings it back; a choice that is not one is refused; no CSRF token, no change
    await bob.post(f"{thread_path}/subscription", {"subscription": "normal"})
    assert "Loud" in (await bob.get("/feed")).text
    bad = await bob.post(f"{thread_path}/subscription", {"subscription": "loud"})
    assert bad.status == 400 and "Choose to watch the thread" in bad.text
    forged = await bob.post(f"{thread_path}/subscription", {"subscription": "mute"}, csrf=False)
    assert forged.status in (400, 403)
    assert "Loud" in (await bob.get("/feed")).text

    # Signed out: no form, and the form's address sends to sign in
    anonymous = await browser_factory()
    assert "subscription" not in (await anonymous.get(thread_path)).html
    async with web_node.transaction() as session:
        await erase_local_account(session, bob_id, web_node.clock.now(), ErasureRequest.MEMBER)
        left = await session.execute(
            select(func.count()).select_from(ThreadRead).where(ThreadRead.member_id == bob_id)
        )
        assert left.scalar_one() == 0


async def test_private_threads_never_in_an_outsiders_feed(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    clock = web_node.clock
    owner_id = await person(web_node, "owner")
    insider_id = await person(web_node, "insider")
    await person(web_node, "outsider")
    slug = await group_of(web_node, owner_id, "secret", private=True)
    async with web_node.transaction() as session:
        view = await groups.view_group(session, slug, Viewer(owner_id))
        await membership.invite(session, view, "insider", clock.now())
        await membership.join(session, await groups.view_group(session, slug, Viewer(insider_id)),
                              clock.now())  # fmt: skip
    clock.advance(MINUTE)  # type: ignore[attr-defined]
    owner = await signed_in(browser_factory, "owner")
    started = await owner.post(f"/g/{slug}/new", {"title": "Private worry", "body": "Shh."})
    assert started.status == 200
    thread_id = started.path.removeprefix("/t/")

    insider = await signed_in(browser_factory, "insider")
    outsider = await signed_in(browser_factory, "outsider")
    assert "Private worry" in (await insider.get("/feed")).text
    assert "Private worry" not in (await outsider.get("/feed")).text
    assert "Private worry" not in (await outsider.get("/")).text
    # The subscription form answers an outsider as for a missing thread
    missing = await outsider.post("/t/00000000000000000000/subscription", {"subscription": "watch"})
    hidden = await outsider.post(f"/t/{thread_id}/subscription", {"subscription": "watch"})
    assert hidden.status == missing.status == 404
    assert hidden.html.replace(thread_id, "") == missing.html.replace("00000000000000000000", "")

    # When the insider leaves, the thread leaves their feed, even one they watched
    await insider.post(f"/t/{thread_id}/subscription", {"subscription": "watch"})
    async with web_node.transaction() as session:
        await membership.leave(session, await groups.view_group(session, slug, Viewer(insider_id)))
    assert "Private worry" not in (await insider.get("/feed")).text
    async with web_node.transaction() as session:
        page = await thread_lists.feed(session, Viewer(insider_id), FIRST_PAGE)
        assert page.items == []
        other = await session.execute(select(Member.id).where(Member.username == "outsider"))
        assert (
            await thread_lists.feed(session, Viewer(other.scalar_one()), FIRST_PAGE)
        ).items == []


async def test_feed_pages_and_needs_signing_in(
    web_node: NodeContext, browser_factory: BrowserFactory
) -> None:
    alice_id = await person(web_node, "alice")
    slug = await group_of(web_node, alice_id, "busy")
    expected = await add_threads(web_node, slug, alice_id, 75, web_node.clock.now() - MINUTE * 60)
    anonymous = await browser_factory()
    page = await anonymous.get("/feed")
    assert page.path.startswith("/login")
    alice = await signed_in(browser_factory, "alice")
    page = await alice.get("/feed")
    seen = thread_ids(page)
    older = link(page, "Older")
    assert older is not None
    page = await alice.get(f"/feed{older}")
    seen += thread_ids(page)
    assert seen == expected and link(page, "Older") is None
    assert (await alice.get("/feed?after=not-a-cursor")).status == 400


async def test_moderation_log_pages(web_node: NodeContext, browser_factory: BrowserFactory) -> None:
    alice_id = await person(web_node, "alice")
    slug = await group_of(web_node, alice_id, "logged")
    async with web_node.transaction() as session:
        group = await groups.find_group(session, slug)
        assert group is not None
        for number in range(70):
            await log_action(
                session, action=ModAction.EDIT_GROUP, reason=f"change {number:02d}",
                now=web_node.clock.now(), actor_label="alice", actor_id=alice_id,
                group_id=group.id,
            )  # fmt: skip
    alice = await signed_in(browser_factory, "alice")
    page = await alice.get(f"/g/{slug}/moderation/log")
    reasons = re.findall(r"change (\d\d)", page.html)
    older = link(page, "Older entries")
    assert older is not None
    page = await alice.get(f"/g/{slug}/moderation/log{older}")
    reasons += re.findall(r"change (\d\d)", page.html)
    assert reasons == [f"{number:02d}" for number in reversed(range(70))]
    assert (await alice.get(f"/g/{slug}/moderation/log?before=1")).status == 400
