"""Data at rest and identity: owner-only files, erased text gone from SQLite's files, names
that cannot pass for someone else's, threads closed by their opening post's deletion, and
membership changes that stay right when they race (on PostgreSQL, two nodes on one database).
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from federation.keysink import attach_actor_keys
from node import remote
from node.config import Settings
from node.errors import Conflict, DomainError, Forbidden
from node.groups import view_group
from node.members import update_profile
from node.membership import (
    ban,
    decide_request,
    invite,
    join,
    leave,
    put_membership,
    request_to_join,
    set_role,
)
from node.posts import (
    THREAD_CLOSED,
    Draft,
    NewReply,
    delete_post,
    edit_post,
    first_post,
    reply,
    reply_many,
)
from node.runtime import NodeContext
from node.storage.files import sqlite_file
from node.storage.models import Member, Membership, Post, Thread
from tests.browser import Browser
from tests.clock import ManualClock
from tests.conftest import CHEAP_PASSWORDS
from tests.databases import BACKEND
from tests.keypool import pooled_key_pair
from tests.test_domain_services import (
    add_group,
    add_member,
    do_join,
    moderate,
    new_thread,
    register,
    who,
)

sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="about SQLite's own files")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(database: Path) -> list[Path]:
    candidates = [database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm"))]
    return [path for path in candidates if path.exists()]


async def open_on_data_dir(data_dir: Path) -> NodeContext:
    """A node whose SQLite database lives in `data_dir`, as `healthnode serve` makes it."""
    settings = Settings(data_dir=data_dir, password_cost=CHEAP_PASSWORDS)
    return await NodeContext.open(settings, clock=ManualClock())


# --- files on disk -----------------------------------------------------------------------


async def test_a_fresh_data_dir_and_its_database_are_the_owners_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    node = await open_on_data_dir(data_dir)
    try:
        await add_member(node, "alice")  # writes: the -wal and -shm files exist now
        database = sqlite_file(node.settings.resolved_database_url)
        assert database is not None
        files = database_files(database)
        assert {path.name[len(database.name) :] for path in files} >= {"", "-wal", "-shm"}
        assert mode_of(data_dir) == 0o700
        assert {path.name: mode_of(path) for path in files} == {path.name: 0o600 for path in files}
    finally:
        await node.close()


async def test_readable_files_of_an_earlier_start_are_tightened_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "old"
    node = await open_on_data_dir(data_dir)
    await add_member(node, "alice")
    database = sqlite_file(node.settings.resolved_database_url)
    assert database is not None
    # Given what an earlier version left: the dir 0755, the files 0644 (-wal and -shm kept
    # by copying them aside before the engine closes and removes them).
    kept = {path: path.read_bytes() for path in database_files(database)}
    await node.close()
    for path, content in kept.items():
        path.write_bytes(content)
        path.chmod(0o644)
    data_dir.chmod(0o755)

    with caplog.at_level(logging.WARNING, logger="node.storage.files"):
        node = await open_on_data_dir(data_dir)
    try:
        assert mode_of(data_dir) == 0o700
        for path in kept:
            assert mode_of(path) == 0o600, path
        said = caplog.text
        assert str(data_dir) in said and "0755" in said
        assert f"{database}-wal" in said
    finally:
        await node.close()


# --- erased text ---------------------------------------------------------------------------


def bytes_on_disk(node: NodeContext) -> bytes:
    database = sqlite_file(node.settings.resolved_database_url)
    assert database is not None
    return b"".join(path.read_bytes() for path in database_files(database))


@sqlite_only
async def test_deleted_and_edited_text_is_gone_from_the_database_and_its_log(
    node: NodeContext, browser: Browser
) -> None:
    alice = await add_member(node, "alice")
    group = await add_group(node, alice, "diabetes", private=True)
    opening_words = "OPENINGSECRET " * 40  # long enough to span cells
    thread = await new_thread(node, group.slug, alice, "Quiet thread", opening_words)
    async with node.transaction() as session:
        opening = await first_post(session, thread.id)
        answer = await reply(
            session, node.settings.limits, who(alice), thread_id=thread.id, parent_id=None,
            draft=Draft("REPLYSECRET " * 40), now=node.clock.now(),
        )  # fmt: skip
        edited = await reply(
            session, node.settings.limits, who(alice), thread_id=thread.id, parent_id=None,
            draft=Draft("EDITEDAWAY " * 40), now=node.clock.now(),
        )  # fmt: skip
    assert b"REPLYSECRET" in bytes_on_disk(node) and b"EDITEDAWAY" in bytes_on_disk(node)

    # When: a reply is deleted and another edited through the domain (a worker's path)...
    async with node.transaction() as session:
        await delete_post(session, who(alice), post_id=answer.id, now=node.clock.now())
    async with node.transaction() as session:
        await edit_post(
            session, node.settings.limits, who(alice), post_id=edited.id,
            draft=Draft("nothing to see"), now=node.clock.now(),
        )  # fmt: skip
    # ... and the opening post through the web (a request's path).
    await browser.login("alice")
    await browser.get(f"/p/{opening.id}/delete")
    page = await browser.post(f"/p/{opening.id}/delete")
    assert page.status == 200, page.text

    on_disk = bytes_on_disk(node)
    for words in (b"REPLYSECRET", b"EDITEDAWAY", b"OPENINGSECRET", b"Quiet thread"):
        assert words not in on_disk, words


# --- names that cannot pass for someone else's ---------------------------------------------

RLO, ZWSP, ZWJ, LRI, PDI = "\u202e", "\u200b", "\u200d", "\u2066", "\u2069"
CONTROLS = (RLO, ZWSP, ZWJ, LRI, PDI, "\u202a", "\u2060", "\ufeff", "\u3164", "\x07")


REORDERING = (RLO, LRI, PDI, "\u202a", "\u202b", "\u202c", "\u202d")


def has_controls(text: str) -> bool:
    return any(control in text for control in CONTROLS)


def reorders(text: str) -> bool:
    return any(control in text for control in REORDERING)


def remote_facts(username: str, display_name: str, summary: str = "") -> remote.RemoteActorFacts:
    iri = f"https://elsewhere.example/users/{username}"
    return remote.RemoteActorFacts(
        iri=iri, username=username, domain="elsewhere.example", display_name=display_name,
        summary=summary, inbox=f"{iri}/inbox", shared_inbox=None, profile_url=None,
    )  # fmt: skip


async def test_names_titles_and_posts_lose_what_reorders_or_hides_text(
    node: NodeContext, browser: Browser
) -> None:
    carol = await add_member(node, "carol")
    async with node.transaction() as session:
        mallory = await register(session, node, "mallory", display_name=f"{RLO}Carol{ZWSP}")
        await update_profile(
            session, node.settings.limits, mallory, display_name=f"Ca{ZWSP}rol{LRI}\u3164",
            bio=f"about{RLO} me\x07",
        )  # fmt: skip
        stranger = await remote.upsert_remote_member(
            session, remote_facts(f"car{RLO}ol", f"{LRI}Carol{ZWJ}{PDI}", f"hi{RLO}!"),
            node.clock.now(),
        )  # fmt: skip
    assert (mallory.display_name, mallory.bio) == ("Carol", "about me")
    assert (stranger.display_name, stranger.username, stranger.bio) == ("Carol", "carol", "hi!")

    group = await add_group(node, carol, "diabetes", name=f"Diabetes{RLO} talk")
    assert group.name == "Diabetes talk"
    async with node.transaction() as session:
        # Following the group, as the inbox would have it (without the Accept it sends).
        await put_membership(session, None, group.id, stranger.id, "active", node.clock.now())
    await do_join(node, "diabetes", mallory)
    thread = await new_thread(node, "diabetes", mallory, f"Insulin{RLO}gnp.exe", f"x{RLO}y")
    async with node.transaction() as session:
        opening = await first_post(session, thread.id)
        # A remote post's HTML, with the override as a character reference.
        answer = await reply(
            session, node.settings.limits, who(stranger), thread_id=thread.id, parent_id=None,
            draft=Draft("ab", f"cw{RLO}", html="<p>a&#x202E;b&#8203;c</p>", ap_id="https://elsewhere.example/n/1"),
            now=node.clock.now(),
        )  # fmt: skip
    assert thread.title == "Insulingnp.exe"
    assert not has_controls(opening.source + opening.content_html)
    assert answer.content_html == "<p>ab\u200bc</p>" and answer.content_warning == "cw"

    # Then every page names each member by display name and handle, the two apart.
    await browser.login("carol")
    thread_page = await browser.get(f"/t/{thread.id}")
    members_page = await browser.get("/g/diabetes/members")
    moderation_page = await browser.get("/g/diabetes/moderation")
    group_page = await browser.get("/g/diabetes")
    for page in (thread_page, members_page, moderation_page, group_page):
        assert page.status == 200, page.path
        assert not reorders(page.text), page.path  # what people read
    mallory_byline = '<bdi>Carol</bdi></a> <span class="handle">@<bdi>mallory</bdi></span>'
    stranger_byline = (
        '<bdi>Carol</bdi></a> <span class="handle">@<bdi>carol@elsewhere.example</bdi></span>'
    )
    carol_byline = '<bdi>Carol</bdi></a> <span class="handle">@<bdi>carol</bdi></span>'
    assert mallory_byline in thread_page.html and stranger_byline in thread_page.html
    for page in (members_page, moderation_page):
        for byline in (mallory_byline, stranger_byline, carol_byline):
            assert byline in page.html, (page.path, byline)
    assert '<bdi>Carol</bdi> <span class="handle">@<bdi>mallory</bdi></span>' in group_page.html


# --- a thread whose opening post was deleted --------------------------------------------


async def test_a_deleted_opening_post_closes_its_thread_until_a_moderator_reopens_it(
    node: NodeContext, browser_factory: Callable[[], Awaitable[Browser]]
) -> None:
    owner = await add_member(node, "olga")
    bea = await add_member(node, "bea")
    group = await add_group(node, owner, "asthma")
    await do_join(node, "asthma", bea)
    async with node.transaction() as session:
        stranger = await remote.upsert_remote_member(
            session, remote_facts("rex", "Rex"), node.clock.now()
        )
        await put_membership(session, None, group.id, stranger.id, "active", node.clock.now())
    thread = await new_thread(node, "asthma", bea, "Inhalers", "Which one?")
    async with node.transaction() as session:
        opening = await first_post(session, thread.id)
        await delete_post(session, who(bea), post_id=opening.id, now=node.clock.now())
    before = thread.last_activity_at
    node.clock.advance(timedelta(minutes=5))

    # A local member's reply, and replies from another server (one by one and in a batch),
    # are refused; the thread is not bumped.
    async with node.transaction() as session:
        with pytest.raises(Conflict, match="closed"):
            await reply(
                session, node.settings.limits, who(bea), thread_id=thread.id, parent_id=None,
                draft=Draft("still here"), now=node.clock.now(),
            )  # fmt: skip
        with pytest.raises(Conflict, match="closed"):
            await reply(
                session, node.settings.limits, who(stranger), thread_id=thread.id,
                parent_id=None, draft=Draft("from afar", ap_id="https://elsewhere.example/n/2"),
                now=node.clock.now(), origin=None,
            )  # fmt: skip
        results = await reply_many(
            session, node.settings.limits,
            [NewReply(who(stranger), thread.id, None, Draft("batch", ap_id="https://elsewhere.example/n/3"))],
            node.clock.now(),
        )  # fmt: skip
        assert isinstance(results[0], Conflict)
    async with node.transaction() as session:
        stored = await session.get(Thread, thread.id)
        assert stored is not None and stored.last_activity_at == before
        assert await session.scalar(select(func.count()).where(Post.thread_id == thread.id)) == 1

    # The page says so and offers no reply form; a reply sent anyway is refused with the reason.
    member_browser = await browser_factory()
    await member_browser.login("bea")
    page = await member_browser.get(f"/t/{thread.id}")
    assert "Closed to replies" in page.text and 'id="send-reply"' not in page.html
    assert "Reopen the thread" not in page.text
    refused = await member_browser.post(f"/t/{thread.id}/reply", {"body": "hello?"})
    assert refused.status == 409 and THREAD_CLOSED in refused.text
    assert (await member_browser.post(f"/t/{thread.id}/reopen")).status == 403

    # A moderator reopens it; replies are taken again.
    moderator = await browser_factory()
    await moderator.login("olga")
    page = await moderator.get(f"/t/{thread.id}")
    assert "Reopen the thread" in page.text
    reopened = await moderator.post(f"/t/{thread.id}/reopen")
    assert reopened.status == 200 and 'id="send-reply"' in reopened.html
    assert (await moderator.post(f"/t/{thread.id}/reopen")).status == 200  # twice is harmless
    answered = await member_browser.post(f"/t/{thread.id}/reply", {"body": "thanks"})
    assert answered.status == 200 and "thanks" in answered.text


# --- membership changes that race ----------------------------------------------------------

ROUNDS = 8


@pytest.fixture
async def twin(node: NodeContext) -> AsyncIterator[NodeContext]:
    """A second node process on the same database (as two web or worker processes are)."""
    other = await NodeContext.open(node.settings, clock=node.clock)
    attach_actor_keys(other, pooled_key_pair)
    yield other
    await other.close()


async def as_member(
    node: NodeContext,
    member: Member,
    slug: str,
    call: Callable[..., Awaitable[object]],
    *args: object,
) -> object:
    """Run a membership call as `member`, in a transaction of its own on `node`: the domain's
    answer, or the DomainError it refused with (a web page shows it as a 4xx)."""
    try:
        async with node.transaction() as session:
            view = await view_group(session, slug, who(member))
            return await call(session, view, *args)
    except DomainError as refused:
        return refused


async def state_of(node: NodeContext, group_id: int, member_id: int) -> tuple[str, str] | None:
    async with node.transaction() as session:
        row = await session.get(Membership, (group_id, member_id))
        return None if row is None else (row.state, row.role)


async def test_a_ban_racing_the_members_leave_always_holds(
    node: NodeContext, twin: NodeContext
) -> None:
    owner = await add_member(node, "olga")
    group = await add_group(node, owner, "migraine")
    for round_number in range(ROUNDS):
        person = await add_member(node, f"leaver{round_number}")
        await do_join(node, "migraine", person)
        now = node.clock.now()
        outcomes = await asyncio.gather(
            as_member(node, owner, "migraine", ban, person.username, now),
            as_member(twin, person, "migraine", lambda session, view: leave(session, view)),
        )
        assert not any(
            isinstance(o, BaseException) and not isinstance(o, DomainError) for o in outcomes
        )
        assert await state_of(node, group.id, person.id) == ("banned", "member"), outcomes
        rejoined = await as_member(node, person, "migraine", join, now)
        assert isinstance(rejoined, Forbidden), rejoined


async def test_approve_racing_reject_one_wins_the_other_is_told(
    node: NodeContext, twin: NodeContext
) -> None:
    owner = await add_member(node, "olga")
    mod = await add_member(node, "moe")
    group = await add_group(node, owner, "quiet", private=True, join_policy="request")
    await moderate(node, owner, group.slug, invite, "moe", node.clock.now())
    await do_join(node, group.slug, mod)
    await moderate(node, owner, group.slug, set_role, "moe", "moderator", node.clock.now())
    for round_number in range(ROUNDS):
        person = await add_member(node, f"asker{round_number}")
        async with node.transaction() as session:
            await request_to_join(
                session, group.slug, group.join_code, who(person), node.clock.now()
            )
        now = node.clock.now()
        approved, rejected = await asyncio.gather(
            as_member(node, owner, group.slug, decide_request, person.username, True, now),
            as_member(twin, mod, group.slug, decide_request, person.username, False, now),
        )
        final = await state_of(node, group.id, person.id)
        if isinstance(rejected, Conflict):
            assert approved is None and final == ("active", "member")
            assert "approved" in str(rejected)
        else:
            assert rejected is None and isinstance(approved, Conflict), (approved, rejected)
            assert final is None and "declined" in str(approved)


async def test_concurrent_joins_make_one_membership_and_no_error(
    node: NodeContext, twin: NodeContext
) -> None:
    owner = await add_member(node, "olga")
    group = await add_group(node, owner, "lupus")
    for round_number in range(ROUNDS):
        person = await add_member(node, f"joiner{round_number}")
        now = node.clock.now()
        outcomes = await asyncio.gather(
            *(as_member(n, person, "lupus", join, now) for n in (node, twin, node, twin))
        )
        assert all(isinstance(o, Membership) for o in outcomes), outcomes
        assert await state_of(node, group.id, person.id) == ("active", "member")
        async with node.transaction() as session:
            rows = await session.scalar(
                select(func.count()).where(Membership.member_id == person.id)
            )
        assert rows == 1


async def test_a_promotion_racing_a_ban_never_leaves_a_banned_moderator(
    node: NodeContext, twin: NodeContext
) -> None:
    owner = await add_member(node, "olga")
    group = await add_group(node, owner, "crohns")
    for round_number in range(ROUNDS):
        person = await add_member(node, f"promoted{round_number}")
        await do_join(node, "crohns", person)
        now = node.clock.now()
        outcomes = await asyncio.gather(
            as_member(node, owner, "crohns", set_role, person.username, "moderator", now),
            as_member(twin, owner, "crohns", ban, person.username, now),
        )
        assert await state_of(node, group.id, person.id) == ("banned", "member"), outcomes
