"""Full-text search (node/search.py, /search) on the run's real database, SQLite or PostgreSQL.

The world: a public group about hypos with a thread and a reply, a private group and a partner
group each with a thread, and people in every standing towards the private one (signed out,
an outsider, an active member, a former member, a banned member). Who finds what is written
out by hand from node/policy.py's docstring, so a change of the rules has to change it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from node import groups, membership, moderation, posts, search
from node.erasure import ErasureRequest, erase_local_account
from node.events import Origin
from node.members import create_member
from node.policy import ANONYMOUS, PARTNERS, Viewer, viewer_for
from node.remote import RemoteActorFacts, upsert_remote_group, upsert_remote_member
from node.remote.following import follow_answered
from node.runtime import NodeContext
from node.storage.models import Member, SearchDocument, Thread
from tests.browser import DEFAULT_PASSWORD, Browser
from tests.conftest import BrowserFactory
from tests.databases import BACKEND

PUBLIC_NAME = "Hypo Helpers"
PUBLIC_TITLE = "Night hypos after running"
PUBLIC_OPENING = "I wake with hypoglycaemia after evening runs. What helps?"
PUBLIC_REPLY = "A slow carbohydrate snack before bed stopped my lows."
PRIVATE_TITLE = "Zebrafinch confidences"
PRIVATE_OPENING = "Only members read about the zebrafinch clinic."
PARTNER_TITLE = "Wardround handover"
REMOTE_DOMAIN = "remote.example"


@dataclass
class World:
    node: NodeContext
    people: dict[str, Viewer]
    public_slug: str
    private_slug: str
    public_thread: str
    public_reply: str
    private_thread: str


async def _person(node: NodeContext, session: object, username: str, admin: bool = False) -> Viewer:
    member = await create_member(
        session,  # type: ignore[arg-type]
        node.passwords,
        node.settings.limits,
        username=username,
        password=DEFAULT_PASSWORD,
        display_name=username.title(),
        now=node.clock.now(),
        is_admin=admin,
    )
    return viewer_for(member.id, member.role)


@pytest.fixture
async def world(node: NodeContext) -> World:
    now = node.clock.now()
    limits = node.settings.limits
    async with node.transaction() as session:
        people = {
            name: await _person(node, session, name, name == "admin")
            for name in ("owner", "outsider", "member", "former", "banned", "admin")
        }
        owner = people["owner"]
        public = await groups.create_group(
            session, limits, owner_id=owner.member_id, slug="hypo_helpers", name=PUBLIC_NAME,
            description="Living with low blood sugar.", tags="diabetes", now=now,
        )  # fmt: skip
        private = await groups.create_group(
            session, limits, owner_id=owner.member_id, slug="quiet", name="Quiet circle",
            description="A small private circle.", tags="lupus", private=True,
            join_policy="request", now=now,
        )  # fmt: skip
        partner = await groups.create_group(
            session, limits, owner_id=owner.member_id, slug="ward_staff", name="Ward staff",
            description="Shared with the clinic.", tags="", visibility="partners",
            partners=["clinic.example"], now=now,
        )  # fmt: skip
        public_view = await groups.view_group(session, public.slug, owner)
        thread = await posts.start_thread(
            session, limits, public_view, title=PUBLIC_TITLE,
            draft=posts.Draft(PUBLIC_OPENING), now=now,
        )  # fmt: skip
        for name in ("member", "former", "banned"):
            owner_view = await groups.view_group(session, private.slug, owner)
            await membership.invite(session, owner_view, name, now)
            view = await groups.view_group(session, private.slug, people[name])
            await membership.join(session, view, now)
        member_view = await groups.view_group(session, public.slug, people["member"])
        await membership.join(session, member_view, now)
        reply = await posts.reply(
            session, limits, people["member"], thread_id=thread.id, parent_id=None,
            draft=posts.Draft(PUBLIC_REPLY), now=now,
        )  # fmt: skip
        private_view = await groups.view_group(session, private.slug, owner)
        secret = await posts.start_thread(
            session, limits, private_view, title=PRIVATE_TITLE,
            draft=posts.Draft(PRIVATE_OPENING), now=now,
        )  # fmt: skip
        partner_view = await groups.view_group(session, partner.slug, owner)
        await posts.start_thread(
            session, limits, partner_view, title=PARTNER_TITLE,
            draft=posts.Draft("The wardround notes stay with the ward."), now=now,
        )  # fmt: skip
        former = await groups.view_group(session, private.slug, people["former"])
        await membership.leave(session, former)
        await membership.ban(session, private_view, "banned", now)
    return World(node, people, public.slug, private.slug, thread.id, reply.id, secret.id)


async def found(
    node: NodeContext, viewer: Viewer, query: str, kind: search.Kind | None = None
) -> list[tuple[str, str]]:
    """(type, what) of each result, in order: a group's name, a thread's title, a reply's id."""
    async with node.transaction(reading=True) as session:
        results = await search.search(session, viewer, query, kind=kind)
    return [
        (
            hit.kind.value,
            hit.group.name if hit.kind is search.Kind.GROUP
            else hit.thread_title if hit.kind is search.Kind.THREAD
            else str(hit.post_id),
        )
        for hit in results.hits
    ]  # fmt: skip


def viewers(world: World, *names: str) -> list[tuple[str, Viewer]]:
    return [(name, ANONYMOUS if name == "anonymous" else world.people[name]) for name in names]


# --- words ---------------------------------------------------------------------------------


def test_a_query_becomes_plain_words_whatever_was_typed() -> None:
    assert search.terms_of('"hypo* NEAR(a b) AND OR -x ^y:z') == [
        "hypo", "near", "a", "b", "and", "or", "x", "y", "z",
    ][: search.MAX_TERMS]  # fmt: skip
    assert search.terms_of("Café ＨＹＰＯ_low") == ["café", "hypo", "low"]
    assert search.terms_of("") == [] and search.terms_of("*** \"' ()") == []
    assert len(search.terms_of("x" * 1000)) == 1 and len(search.terms_of("x" * 1000)[0]) == 40
    assert search.fts5_query(["near", "ab"]) == '"near"* AND "ab"'
    assert search.tsquery(["hypo", "ab"]) == "'hypo':* & 'ab'"


def test_a_snippet_is_escaped_and_only_the_index_markers_become_marks() -> None:
    start, stop = search.START, search.STOP
    raw = f'<script>alert("x")</script> {start}hypo{stop} <mark>fake</mark>'
    assert search.highlighted(raw) == (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; <mark>hypo</mark> "
        "&lt;mark&gt;fake&lt;/mark&gt;"
    )
    assert search.highlighted(f"{start}unbalanced") == "unbalanced"


# --- what is found -------------------------------------------------------------------------


async def test_stemmed_prefix_search_finds_groups_threads_and_replies(world: World) -> None:
    node, anyone = world.node, ANONYMOUS
    # "hypo" is the start of "hypos", "hypoglycaemia" and the group's name
    hits = await found(node, anyone, "hypo")
    assert ("groups", PUBLIC_NAME) in hits and ("threads", PUBLIC_TITLE) in hits
    # stemming: "runs" and "running" are one word; a tag and a description are searched
    assert await found(node, anyone, "run") == [("threads", PUBLIC_TITLE)]
    assert await found(node, anyone, "diabetes") == [("groups", PUBLIC_NAME)]
    assert await found(node, anyone, "blood sugars") == [("groups", PUBLIC_NAME)]
    assert await found(node, anyone, "carbohydrates snack") == [("posts", world.public_reply)]
    # every word is required
    assert await found(node, anyone, "hypo zebrafinch") == []
    # a title weighs more than a body: the thread titled "hypos" before the reply
    assert await found(node, anyone, "night") == [("threads", PUBLIC_TITLE)]
    # one type only
    assert await found(node, anyone, "hypo", search.Kind.GROUP) == [("groups", PUBLIC_NAME)]
    assert await found(node, anyone, "hypo", search.Kind.POST) == []


async def test_private_and_partner_posts_are_found_by_their_active_members_only(
    world: World,
) -> None:
    node = world.node
    secret = [("threads", PRIVATE_TITLE)]
    for name, viewer in viewers(world, "anonymous", "outsider", "former", "banned"):
        assert await found(node, viewer, "zebrafinch") == [], name
        assert await found(node, viewer, "quiet circle") == [], name
        assert await found(node, viewer, "wardround") == [], name
    for name, viewer in viewers(world, "member", "owner"):
        assert await found(node, viewer, "zebrafinch") == secret, name
    # the partner group is a private group on its own node: its owner, the one member, finds it
    assert await found(node, world.people["owner"], "wardround") == [("threads", PARTNER_TITLE)]
    assert await found(node, world.people["member"], "wardround") == []
    # the node's admins may read every group (node/policy.py), so search shows them too
    assert await found(node, world.people["admin"], "zebrafinch") == secret


async def test_a_private_match_answers_an_outsider_as_no_match_does(
    world: World, browser_factory: BrowserFactory
) -> None:
    outsider = await browser_factory()
    await outsider.login("outsider")
    signed_out = await browser_factory()
    for browser in (outsider, signed_out):
        private = await browser.get("/search?q=zebrafinch")
        missing = await browser.get("/search?q=qwertyuiop")
        assert private.status == missing.status == 200
        assert _without_tokens(private.html).replace("zebrafinch", "WORD") == _without_tokens(
            missing.html
        ).replace("qwertyuiop", "WORD")
    member = await browser_factory()
    await member.login("member")
    page = await member.get("/search?q=zebrafinch")
    assert PRIVATE_TITLE in page.text and f"/t/{world.private_thread}" in page.html
    assert "<mark>zebrafinch</mark>" in page.html


def _without_tokens(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"', "", html)


async def test_held_deleted_edited_removed_and_erased_posts(world: World) -> None:
    node, limits, anyone = world.node, world.node.settings.limits, ANONYMOUS
    owner, member = world.people["owner"], world.people["member"]
    now = node.clock.now()
    async with node.transaction() as session:
        # Given a group that holds first posts, and a newcomer's thread waiting there
        group = await groups.create_group(
            session, limits, owner_id=owner.member_id, slug="held_here", name="Careful group",
            description="", tags="", now=now,
        )  # fmt: skip
        group.hold_first_posts = 1
        newcomer = await _person(node, session, "newcomer")
        await membership.join(session, await groups.view_group(session, group.slug, newcomer), now)
        view = await groups.view_group(session, group.slug, newcomer)
        held = await posts.start_thread(
            session, limits, view, title="Okapi question", draft=posts.Draft("okapi"), now=now
        )
        opening = await posts.first_post(session, held.id)
    # Then nobody finds it while it waits, not even its author or the moderators
    for viewer in (anyone, newcomer, owner):
        assert await found(node, viewer, "okapi") == []
    async with node.transaction() as session:
        await posts.approve_post(session, owner, post_id=opening.id, actor_label="owner", now=now)
    assert await found(node, anyone, "okapi") == [("threads", "Okapi question")]

    # An edit: the old words are gone, the new ones found, a new title too
    async with node.transaction() as session:
        await posts.edit_post(
            session, limits, member, post_id=world.public_reply,
            draft=posts.Draft("Oatcakes at bedtime"), now=now,
        )  # fmt: skip
    assert await found(node, anyone, "carbohydrate") == []
    assert await found(node, anyone, "oatcake") == [("posts", world.public_reply)]

    # A moderator's removal, and an author's deletion
    async with node.transaction() as session:
        await moderation.remove_post(
            session, owner, post_id=world.public_reply, reason="off topic", now=now
        )
        await posts.delete_post(session, newcomer, post_id=opening.id, now=now)
    assert await found(node, anyone, "oatcake") == []
    assert await found(node, anyone, "okapi") == []

    # Erasure of an account: everything they wrote, gone from the documents and the index
    async with node.transaction() as session:
        mine = await posts.start_thread(
            session, limits, await groups.view_group(session, world.public_slug, member),
            title="Quokka diary", draft=posts.Draft("quokka quokka"), now=now,
        )  # fmt: skip
    assert await found(node, anyone, "quokka") == [("threads", "Quokka diary")]
    assert await _index_holds(node, "quokka")
    async with node.transaction() as session:
        await erase_local_account(session, member.member_id or 0, now, ErasureRequest.MEMBER)
    assert await found(node, anyone, "quokka") == []
    assert not await _index_holds(node, "quokka")
    async with node.transaction(reading=True) as session:
        left = await session.execute(
            select(func.count()).where(SearchDocument.body.contains("quokka"))
        )
        assert left.scalar_one() == 0
        assert (await session.get(Thread, mine.id)) is not None  # its place stays


async def _index_holds(node: NodeContext, word: str) -> bool:
    """Whether the database's own index still holds the word anywhere: on SQLite in the FTS5
    segments (a deleted document's words stay there until a merge), on PostgreSQL in a
    tsvector."""
    async with node.transaction(reading=True) as session:
        if BACKEND == "postgresql":
            statement = text(
                "SELECT count(*) FROM search_documents WHERE document::text LIKE :word"
            )
            count = await session.execute(statement, {"word": f"%'{word}'%"})
        else:
            statement = text(
                "SELECT count(*) FROM search_index_data WHERE instr(block, CAST(:word AS BLOB))"
            )
            count = await session.execute(statement, {"word": word})
        return bool(count.scalar_one())


async def test_replies_from_a_batch_and_remote_groups_followed_here(world: World) -> None:
    node, limits = world.node, world.node.settings.limits
    now = node.clock.now()
    member, outsider = world.people["member"], world.people["outsider"]
    async with node.transaction() as session:
        # Given two remote public groups
        facts = {
            name: RemoteActorFacts(
                iri=f"https://{REMOTE_DOMAIN}/{kind}/{name}", username=name,
                domain=REMOTE_DOMAIN, display_name=name.title(), summary=f"About {name}",
                inbox=f"https://{REMOTE_DOMAIN}/inbox", shared_inbox=None, profile_url=None,
            )
            for name, kind in (("gardeners", "c"), ("clinicians", "c"), ("rosa", "u"))
        }  # fmt: skip
        remote_groups = {
            name: await upsert_remote_group(session, facts[name], now)
            for name in ("gardeners", "clinicians")
        }
        rosa = await upsert_remote_member(session, facts["rosa"], now)
        threads = {}
        for name, group in remote_groups.items():
            # the local member follows both, and the remote group accepts
            view = await groups.view_group(session, group.slug + f"@{REMOTE_DOMAIN}", member)
            await membership.join(session, view, now)
            follower = await session.get(Member, member.member_id)
            accept = Origin(f"https://{REMOTE_DOMAIN}/accept/{name}")
            await follow_answered(session, group, follower, True, accept, now)  # type: ignore[arg-type]
            # and a remote person's thread arrives through the group's Announce
            rosa_view = await groups.view_group(
                session, group.slug + f"@{REMOTE_DOMAIN}", Viewer(rosa.id)
            )
            threads[name] = await posts.start_thread(
                session, limits, rosa_view, title=f"Capybara notes {name}",
                draft=posts.Draft("capybara"), now=now, announced=True,
            )  # fmt: skip
        # And the second group shows itself to its followers only from then on
        followers_only = replace(facts["clinicians"], followers_only=True)
        assert (await upsert_remote_group(session, followers_only, now)).visibility == PARTNERS
        # And replies in a batch, as the inbox worker stores them
        results = await posts.reply_many(
            session, limits,
            [posts.NewReply(Viewer(rosa.id), threads["gardeners"].id, None,
                            posts.Draft("Marmoset reply"), announced=True),
             posts.NewReply(member, world.public_thread, None, posts.Draft("marmoset here"))],
            now + timedelta(seconds=1),
        )  # fmt: skip
    assert all(isinstance(result, str) for result in results)
    public_capybara = [("threads", "Capybara notes gardeners")]
    everyone = [("threads", "Capybara notes clinicians"), *public_capybara]
    assert sorted(await found(node, member, "capybara")) == everyone
    assert await found(node, outsider, "capybara") == public_capybara
    assert await found(node, ANONYMOUS, "capybara") == public_capybara
    assert sorted(await found(node, ANONYMOUS, "marmoset")) == sorted(
        ("posts", str(result)) for result in results
    )
    assert await found(node, ANONYMOUS, "gardeners", search.Kind.GROUP) == [("groups", "Gardeners")]


# --- the page ------------------------------------------------------------------------------

BAD_QUERIES = (
    "", " ", '"', "*", "NEAR(", "AND OR", "hypo OR", '"hypo', "hypo*", "-hypo", "^hypo",
    "hypo:*", "'", "''", "\\", "&|!", "a & b | !c", "(", ")", "{}", "col:hypo", "x" * 1000,
    "hypo " * 300, "ｈｙｐｏ", "Ünïcödé", "日本語の検索", "x²³", "🙂 hypo", "\u200b",
    "\ue000hypo\ue001", "%", "_", "%_\\", "NULL", "' OR 1=1 --", "<script>",
)  # fmt: skip


async def test_no_input_makes_the_page_fail(world: World, browser: Browser) -> None:
    for query in BAD_QUERIES:
        async with browser.client.get("/search", params={"q": query}) as response:
            assert response.status == 200, (query, await response.text())
    # NUL is refused before any handler, as in every address (web/middlewares.py)
    assert (await browser.get("/search?q=a%00b")).status == 400
    page = await browser.get("/search?q=%E2%80%9Chypo%E2%80%9D")
    assert PUBLIC_TITLE in page.text
    for params, reason in (
        ({"q": "hypo", "page": "0"}, search.MAX_PAGE),
        ({"q": "hypo", "page": "26"}, search.MAX_PAGE),
        ({"q": "hypo", "page": "x"}, search.MAX_PAGE),
        ({"q": "hypo", "page": "9" * 40}, search.MAX_PAGE),
        ({"q": "hypo", "type": "members"}, "groups, threads or posts"),
    ):
        async with browser.client.get("/search", params=params) as response:
            assert response.status == 400, params
            assert str(reason) in await response.text()


async def test_post_text_cannot_inject_markup(world: World, browser: Browser) -> None:
    node = world.node
    async with node.transaction() as session:
        view = await groups.view_group(session, world.public_slug, world.people["owner"])
        await posts.start_thread(
            session, node.settings.limits, view, title="Tapir <b>bold</b>",
            draft=posts.Draft('tapir <img src=x onerror="alert(1)"> <mark>x</mark> \ue000y\ue001'),
            now=node.clock.now(),
        )  # fmt: skip
    page = await browser.get("/search?q=tapir")
    assert page.status == 200
    assert "<img" not in page.html and "<b>bold" not in page.html
    assert "Tapir &lt;b&gt;bold&lt;/b&gt;" in page.html
    snippets = re.findall(r'<p class="snippet">(.*?)</p>', page.html, re.S)
    assert len(snippets) == 1 and "<mark>tapir</mark>" in snippets[0]
    # Nothing but our marks is markup: SQLite's snippet keeps the tag as escaped text,
    # PostgreSQL's ts_headline leaves tags out of a headline.
    assert "<" not in re.sub(r"</?mark>", "", snippets[0])
    assert snippets[0].count("<mark>") == 1
    if BACKEND == "sqlite":
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in snippets[0]


async def test_results_come_in_pages_with_links_that_work_without_script(
    world: World, browser: Browser
) -> None:
    node = world.node
    async with node.transaction() as session:
        view = await groups.view_group(session, world.public_slug, world.people["owner"])
        for number in range(search.PAGE_SIZE + 5):
            await posts.start_thread(
                session, node.settings.limits, view, title=f"Axolotl {number}",
                draft=posts.Draft("axolotl"), now=node.clock.now(),
            )  # fmt: skip
    first = await browser.get("/search?q=axolotl")
    assert first.text.count("Axolotl") == search.PAGE_SIZE
    more = re.search(r'<a href="([^"]+)" rel="next"', first.html)
    assert more is not None
    second = await browser.get(more.group(1).replace("&amp;", "&"))
    assert second.text.count("Axolotl") == 5 and 'rel="next"' not in second.html
    assert 'rel="prev"' in second.html
    # every page's header links here, and the directory has the search box
    front = await browser.get("/")
    assert 'href="/search"' in (await browser.get(f"/t/{world.public_thread}")).html
    assert 'action="/search"' in front.html and 'name="q"' in front.html
