"""The domain services on a real, migrated database: members, groups, membership, posts, text
sanitising and signing in.

Refused calls are caught inside a transaction that then commits, the way a web handler that
shows the error does; the row counts afterwards prove that nothing was half-written. Opening a
node costs an RSA key, so related checks share one scenario (and one node) to keep this fast.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.auth import (
    LoginRefused,
    begin_sign_in,
    close_session,
    finish_sign_in,
    member_for_session,
    open_session,
)
from node.config import Limits, RateLimits, Throttle
from node.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from node.groups import GROUP_NOT_FOUND, create_group, directory, view_group
from node.members import create_member
from node.membership import (
    ban,
    decide_request,
    invite,
    join,
    leave,
    list_members,
    request_to_join,
    set_role,
)
from node.policy import ANONYMOUS, Viewer
from node.posts import (
    Draft,
    delete_post,
    edit_post,
    first_post,
    reply,
    set_helpful,
    start_thread,
    view_thread,
)
from node.runtime import NodeContext
from node.storage.models import (
    AttemptCounter,
    ConditionGroup,
    GroupCondition,
    Handle,
    Member,
    Membership,
    Post,
    Reaction,
    Thread,
)
from node.text import render_markdown, sanitise_html
from node.throttles import Throttled
from tests.conftest import NodeFactory

PASSWORD = "correct horse battery"

# --- helpers -------------------------------------------------------------------------------


E = TypeVar("E", bound=DomainError)


async def refused(
    node: NodeContext, error: type[E], call: Callable[[AsyncSession], Awaitable[object]]
) -> E:
    """Run `call` in a transaction that still commits after the expected refusal."""
    async with node.transaction() as session:
        with pytest.raises(error) as caught:
            await call(session)
    return caught.value


async def register(
    session: AsyncSession,
    node: NodeContext,
    username: str,
    *,
    password: str = PASSWORD,
    display_name: str | None = None,
    admin: bool = False,
) -> Member:
    return await create_member(
        session,
        node.passwords,
        node.settings.limits,
        username=username,
        password=password,
        display_name=username.title() if display_name is None else display_name,
        now=node.clock.now(),
        is_admin=admin,
    )


async def add_member(node: NodeContext, username: str, *, admin: bool = False) -> Member:
    async with node.transaction() as session:
        return await register(session, node, username, admin=admin)


async def found_group(
    session: AsyncSession,
    node: NodeContext,
    owner: Member,
    slug: str,
    *,
    name: str | None = None,
    tags: list[str] | str = "",
    private: bool = False,
    join_policy: str | None = None,
) -> ConditionGroup:
    return await create_group(
        session,
        node.settings.limits,
        owner_id=owner.id,
        slug=slug,
        name=slug.replace("_", " ").title() if name is None else name,
        tags=tags,
        private=private,
        join_policy=join_policy,
        now=node.clock.now(),
    )


async def add_group(
    node: NodeContext, owner: Member, slug: str, **fields: object
) -> ConditionGroup:
    async with node.transaction() as session:
        return await found_group(session, node, owner, slug, **fields)  # type: ignore[arg-type]


def who(member: Member) -> Viewer:
    return Viewer(member_id=member.id, is_admin=member.role == "admin")


async def counts(node: NodeContext, *models: type) -> tuple[int, ...]:
    async with node.transaction() as session:
        return tuple(
            [
                (await session.execute(select(func.count()).select_from(model))).scalar_one()
                for model in models
            ]
        )


async def standing(
    node: NodeContext, group: ConditionGroup, member: Member
) -> tuple[str, str] | None:
    """(state, role) of a member's row in a group, or None."""
    async with node.transaction() as session:
        row = await session.get(Membership, (group.id, member.id))
        return None if row is None else (row.state, row.role)


async def do_join(node: NodeContext, slug: str, member: Member) -> None:
    async with node.transaction() as session:
        await join(session, await view_group(session, slug, who(member)), node.clock.now())


async def ask(
    session: AsyncSession, group: ConditionGroup, viewer: Viewer, code: str, now: datetime
) -> Membership:
    """Follow a group's join link (the one place that knows request_to_join's signature)."""
    return await request_to_join(session, slug=group.slug, code=code, viewer=viewer, now=now)


async def moderate(
    node: NodeContext,
    moderator: Member,
    slug: str,
    action: Callable[..., Awaitable[object]],
    *args: object,
) -> None:
    """Run a moderation call (invite, ban, decide_request, set_role...) as `moderator`."""
    async with node.transaction() as session:
        view = await view_group(session, slug, who(moderator))
        await action(session, view, *args)


async def new_thread(
    node: NodeContext, slug: str, author: Member, title: str = "Morning readings", body: str = "Hi"
) -> Thread:
    async with node.transaction() as session:
        view = await view_group(session, slug, who(author))
        return await start_thread(
            session,
            node.settings.limits,
            view,
            title=title,
            draft=Draft(body),
            now=node.clock.now(),
        )


async def opening_post(node: NodeContext, thread: Thread) -> Post:
    async with node.transaction() as session:
        return await first_post(session, thread.id)


def replying(
    node: NodeContext, thread: Thread, author: Member, body: str, parent: str | None = None
) -> Callable[[AsyncSession], Awaitable[Post]]:
    def call(session: AsyncSession) -> Awaitable[Post]:
        return reply(
            session,
            node.settings.limits,
            who(author),
            thread_id=thread.id,
            parent_id=parent,
            draft=Draft(body),
            now=node.clock.now(),
        )

    return call


async def add_reply(
    node: NodeContext, thread: Thread, author: Member, body: str, parent: str | None = None
) -> Post:
    async with node.transaction() as session:
        return await replying(node, thread, author, body, parent)(session)


def editing(
    node: NodeContext, member: Member, post: Post, body: str, title: str | None = None
) -> Callable[[AsyncSession], Awaitable[object]]:
    def call(session: AsyncSession) -> Awaitable[object]:
        return edit_post(
            session,
            node.settings.limits,
            who(member),
            post_id=post.id,
            draft=Draft(body),
            title=title,
            now=node.clock.now(),
        )

    return call


def deleting(
    node: NodeContext, viewer: Viewer, post: Post
) -> Callable[[AsyncSession], Awaitable[object]]:
    def call(session: AsyncSession) -> Awaitable[object]:
        return delete_post(session, viewer, post_id=post.id, now=node.clock.now())

    return call


def marking(
    node: NodeContext, member: Member, post: Post, helpful: bool = True
) -> Callable[[AsyncSession], Awaitable[object]]:
    def call(session: AsyncSession) -> Awaitable[object]:
        return set_helpful(
            session, who(member), post_id=post.id, helpful=helpful, now=node.clock.now()
        )

    return call


async def run(node: NodeContext, call: Callable[[AsyncSession], Awaitable[object]]) -> None:
    async with node.transaction() as session:
        await call(session)


@dataclass
class World:
    """A small community: the public open group "sugar" and the private request-only
    "quiet_room". olivia owns both; mo moderates both; max is an active member of both; otto
    is a signed-in outsider; ada is a node admin who belongs to neither."""

    node: NodeContext
    ada: Member
    olivia: Member
    mo: Member
    max: Member
    otto: Member
    public: ConditionGroup
    private: ConditionGroup


@pytest.fixture
async def world(node: NodeContext) -> World:
    async with node.transaction() as session:
        ada = await register(session, node, "ada", admin=True)
        olivia, mo, max_, otto = [
            await register(session, node, name) for name in ("olivia", "mo", "max", "otto")
        ]
        public = await found_group(
            session, node, olivia, "sugar", name="Sugar Talk", tags="Type 1 Diabetes"
        )
        private = await found_group(
            session, node, olivia, "quiet_room", name="Quiet Room", private=True
        )
        for group in (public, private):
            for member, role in ((mo, "moderator"), (max_, "member")):
                session.add(
                    Membership(
                        group_id=group.id,
                        member_id=member.id,
                        state="active",
                        role=role,
                        created_at=node.clock.now(),
                        updated_at=node.clock.now(),
                    )
                )
    return World(node, ada, olivia, mo, max_, otto, public, private)


# --- members -------------------------------------------------------------------------------


async def test_create_member_normalises_the_username_and_hashes_the_password(
    node: NodeContext,
) -> None:
    async with node.transaction() as session:
        member = await register(session, node, "  Alice_1 ", display_name="  ")
        admin = await register(session, node, "root", display_name=" Root ", admin=True)
    assert member.username == "alice_1"
    assert member.display_name == "alice_1"  # a blank display name falls back to the username
    assert (member.role, admin.role, admin.display_name) == ("member", "admin", "Root")
    assert member.password_hash != PASSWORD
    assert await node.passwords.verify(member.password_hash, PASSWORD)
    assert not await node.passwords.verify(member.password_hash, PASSWORD.upper())
    async with node.transaction() as session:
        handle = await session.get(Handle, "alice_1")
    assert handle is not None and handle.kind == "member"


async def test_usernames_and_group_addresses_share_one_case_insensitive_namespace(
    node: NodeContext,
) -> None:
    # Given a member "alice" and a group at /g/asthma
    alice = await add_member(node, "alice")
    await add_group(node, alice, "asthma")
    tables = (Member, Handle, ConditionGroup, Membership, GroupCondition)
    before = await counts(node, *tables)
    assert before == (1, 2, 1, 1, 0)

    # When "ALICE" or "Asthma" registers, Then both are taken, and the answers are the same
    # shape whichever kind holds the name (a private group's name must not be confirmed)
    error = await refused(node, Conflict, lambda s: register(s, node, "ALICE"))
    assert (
        error.field == "username"
        and str(error) == "The username “alice” is not available. Choose another."
    )
    error = await refused(node, Conflict, lambda s: register(s, node, "Asthma"))
    assert (
        error.field == "username"
        and str(error) == "The username “asthma” is not available. Choose another."
    )
    # When a group is created at "ALICE" or " asthma ", Then both are taken
    error = await refused(
        node, Conflict, lambda s: found_group(s, node, alice, "ALICE", tags="x, y")
    )
    assert error.field == "group address" and "not available" in str(error)
    error = await refused(node, Conflict, lambda s: found_group(s, node, alice, " asthma "))
    assert error.field == "group address" and "not available" in str(error)

    # And none of the refused calls, though committed, wrote a row
    assert await counts(node, *tables) == before


async def test_invalid_member_fields_are_refused_without_writing(node: NodeContext) -> None:
    limits = node.settings.limits
    bad_usernames = ["", "   ", "al ice", "al-ice", "alice!", "ålice", "a" * 31, "al\x00ice"]
    for username in bad_usernames:
        error = await refused(
            node, Invalid, lambda s, u=username: register(s, node, u, display_name="Someone")
        )
        assert set(error.problems) == {"username"}, username
    short = "x" * (limits.password_min - 1)
    error = await refused(node, Invalid, lambda s: register(s, node, "bob", password=short))
    assert set(error.problems) == {"password"}
    # Every problem is reported at once
    error = await refused(
        node,
        Invalid,
        lambda s: register(
            s, node, "no way", password="short", display_name="D" * (limits.display_name_max + 1)
        ),
    )
    assert set(error.problems) == {"username", "password", "display_name"}
    assert await counts(node, Member, Handle) == (0, 0)

    # The limits themselves are accepted
    async with node.transaction() as session:
        await register(session, node, "a" * 30, password="x" * limits.password_min)
    assert await counts(node, Member, Handle) == (1, 1)


# --- groups --------------------------------------------------------------------------------


async def test_create_group_normalises_slug_name_and_tags(node: NodeContext) -> None:
    owner = await add_member(node, "owner")
    group = await add_group(
        node,
        owner,
        " Long_Covid ",
        name="  Long Covid  ",
        tags=" Long Covid, post_viral  fatigue,LONG covid,, ME-CFS ",
    )
    listed = await add_group(node, owner, "gut", tags=["IBS", " Coeliac Disease ", "ibs"])
    assert (group.slug, group.name) == ("long_covid", "Long Covid")
    assert (group.visibility, group.join_policy) == ("public", "open")
    async with node.transaction() as session:
        long_covid = await view_group(session, "LONG_COVID", ANONYMOUS)
        gut = await view_group(session, listed.slug, ANONYMOUS)
    assert long_covid.tags == ["long-covid", "me-cfs", "post-viral-fatigue"]
    assert gut.tags == ["coeliac-disease", "ibs"]
    # The founder is its active owner
    assert await standing(node, group, owner) == ("active", "owner")


async def test_group_fields_and_join_policies_are_checked(node: NodeContext) -> None:
    owner = await add_member(node, "owner")
    limits = node.settings.limits
    tables = (Handle, ConditionGroup, Membership, GroupCondition)
    before = await counts(node, *tables)

    error = await refused(
        node,
        Invalid,
        lambda s: found_group(s, node, owner, "bad slug", name="", tags=["ok", "crohn's"]),
    )
    assert set(error.problems) == {"slug", "name", "tags"}
    too_many = [f"t{i}" for i in range(limits.condition_tags_max + 1)]
    error = await refused(node, Invalid, lambda s: found_group(s, node, owner, "x", tags=too_many))
    assert set(error.problems) == {"tags"}
    for private, policy in ((True, "open"), (False, "request"), (False, "invite")):
        error = await refused(
            node,
            Invalid,
            lambda s, p=private, j=policy: found_group(
                s, node, owner, "x", private=p, join_policy=j
            ),
        )
        assert set(error.problems) == {"join_policy"}, (private, policy)
    assert await counts(node, *tables) == before

    # A private group is joined by request unless it says by invitation
    by_request = await add_group(node, owner, "req", private=True)
    by_invite = await add_group(node, owner, "inv", private=True, join_policy="invite")
    assert (by_request.visibility, by_request.join_policy) == ("private", "request")
    assert (by_invite.visibility, by_invite.join_policy) == ("private", "invite")
    assert by_request.join_code and by_request.join_code != by_invite.join_code


async def slugs(node: NodeContext, viewer: Viewer, query: str = "", tag: str = "") -> set[str]:
    async with node.transaction() as session:
        return {entry.view.group.slug for entry in await directory(session, viewer, query, tag)}


async def test_directory_search_by_name_slug_and_tag(node: NodeContext) -> None:
    owner = await add_member(node, "owner")
    async with node.transaction() as session:
        await found_group(
            session, node, owner, "t1d", name="Type 1", tags="Type 1 Diabetes, insulin"
        )
        await found_group(
            session, node, owner, "t2d", name="Type 2 Diabetes", tags="type-2-diabetes, insulin"
        )
        await found_group(session, node, owner, "migraine_club", name="Headache Friends")
        await found_group(session, node, owner, "full", name="100% recovered")
    everyone = ANONYMOUS
    assert await slugs(node, everyone) == {"t1d", "t2d", "migraine_club", "full"}
    # By name, case-insensitively, and by address
    assert await slugs(node, everyone, query="  TYPE ") == {"t1d", "t2d"}
    assert await slugs(node, everyone, query="diabetes") == {"t2d"}
    assert await slugs(node, everyone, query="Migraine") == {"migraine_club"}
    assert await slugs(node, everyone, query="nothing like it") == set()
    # LIKE wildcards are taken literally
    assert await slugs(node, everyone, query="%") == {"full"}
    assert await slugs(node, everyone, query="_") == {"migraine_club"}
    # By a tag, normalised the same way as on creation, matched whole
    assert await slugs(node, everyone, tag="type_1 Diabetes") == {"t1d"}
    assert await slugs(node, everyone, tag="INSULIN") == {"t1d", "t2d"}
    assert await slugs(node, everyone, tag="diabetes") == set()
    assert await slugs(node, everyone, tag="insulin", query="diabetes") == {"t2d"}


async def test_directory_search_is_case_insensitive_beyond_ascii(node: NodeContext) -> None:
    owner = await add_member(node, "owner")
    await add_group(node, owner, "nausea", name="Übelkeit")
    assert await slugs(node, ANONYMOUS, query="übelkeit") == {"nausea"}


async def test_private_groups_are_hidden_from_all_but_active_members_and_admins(
    world: World,
) -> None:
    node = world.node
    # Given a pending request, an open invitation and a ban in the private group
    pending, invited, banned = [await add_member(node, n) for n in ("pend", "inv", "ban")]
    async with node.transaction() as session:
        await ask(session, world.private, who(pending), world.private.join_code, node.clock.now())
    await moderate(node, world.mo, world.private.slug, invite, "inv", node.clock.now())
    await moderate(node, world.mo, world.private.slug, ban, "ban", node.clock.now())

    # Then the directory lists it to active members and admins only, even when searched
    both = {"sugar", world.private.slug}
    for outsider in (ANONYMOUS, who(world.otto), who(pending), who(invited), who(banned)):
        assert await slugs(node, outsider) == {"sugar"}, outsider
        assert await slugs(node, outsider, query="quiet") == set(), outsider
    for insider in (world.max, world.mo, world.olivia, world.ada):
        assert await slugs(node, who(insider)) == both, insider.username
    assert await slugs(node, who(world.ada), query="quiet") == {world.private.slug}

    # And it counts active members only, with its tags
    async with node.transaction() as session:
        entries = {e.view.group.slug: e for e in await directory(session, who(world.ada))}
    assert entries[world.private.slug].member_count == 3  # olivia, mo, max
    assert entries["sugar"].member_count == 3
    assert entries["sugar"].view.tags == ["type-1-diabetes"]

    # And viewing it answers outsiders exactly as for a group that does not exist
    async with node.transaction() as session:
        for outsider in (ANONYMOUS, who(world.otto), who(banned)):
            for slug in (world.private.slug, "no_such_group"):
                with pytest.raises(NotFound) as hidden:
                    await view_group(session, slug, outsider)
                assert str(hidden.value) == GROUP_NOT_FOUND
        # while invited and pending people see its name and their own standing
        for person, state in ((pending, "pending"), (invited, "invited")):
            view = await view_group(session, world.private.slug, who(person))
            assert (view.group.name, view.standing.state) == ("Quiet Room", state)
        assert (
            await view_group(session, world.private.slug, who(world.ada))
        ).standing.state is None


# --- membership ----------------------------------------------------------------------------


async def test_joining_an_open_group(world: World) -> None:
    node = world.node
    # Anonymous people are asked to sign in
    async with node.transaction() as session:
        view = await view_group(session, "sugar", ANONYMOUS)
        with pytest.raises(Forbidden):
            await join(session, view, node.clock.now())
    # A signed-in outsider joins as a member, once; joining again changes nothing
    await do_join(node, "sugar", world.otto)
    assert await standing(node, world.public, world.otto) == ("active", "member")
    await do_join(node, "sugar", world.otto)
    assert await counts(node, Membership) == (7,)


async def test_a_private_group_cannot_be_joined_directly(world: World) -> None:
    node = world.node
    before = await counts(node, Membership)
    # An outsider does not even find it; an admin finds it but may not simply join
    with pytest.raises(NotFound):
        await do_join(node, world.private.slug, world.otto)
    with pytest.raises(Forbidden):
        await do_join(node, world.private.slug, world.ada)
    # Nor may someone whose request is pending let themself in
    async with node.transaction() as session:
        await ask(
            session, world.private, who(world.otto), world.private.join_code, node.clock.now()
        )
    with pytest.raises(Forbidden):
        await do_join(node, world.private.slug, world.otto)
    assert await standing(node, world.private, world.otto) == ("pending", "member")
    assert await standing(node, world.private, world.ada) is None
    assert await counts(node, Membership) == (before[0] + 1,)


async def test_invitations(world: World) -> None:
    node = world.node
    now = node.clock.now()
    # Only moderators invite, and only people who exist
    with pytest.raises(Forbidden):
        await moderate(node, world.max, world.private.slug, invite, "otto", now)
    with pytest.raises(Invalid):
        await moderate(node, world.mo, world.private.slug, invite, "nobody", now)
    with pytest.raises(Conflict):  # already a member
        await moderate(node, world.mo, world.private.slug, invite, "max", now)
    banned = await add_member(node, "banned")
    await moderate(node, world.mo, world.private.slug, ban, "banned", now)
    with pytest.raises(Conflict):  # banned: the ban must be lifted first
        await moderate(node, world.mo, world.private.slug, invite, "banned", now)
    assert await standing(node, world.private, banned) == ("banned", "member")
    assert await standing(node, world.private, world.otto) is None

    # Given mo invites otto; When otto accepts; Then otto is an active member
    await moderate(node, world.mo, world.private.slug, invite, " OTTO ", now)
    assert await standing(node, world.private, world.otto) == ("invited", "member")
    await do_join(node, world.private.slug, world.otto)
    assert await standing(node, world.private, world.otto) == ("active", "member")

    # An invited person who follows the join link instead is let in as well
    newcomer = await add_member(node, "newcomer")
    await moderate(node, world.ada, world.private.slug, invite, "newcomer", now)
    async with node.transaction() as session:
        row = await ask(session, world.private, who(newcomer), world.private.join_code, now)
        assert row.state == "active"

    # Inviting someone who asked to join approves them
    asker = await add_member(node, "asker")
    async with node.transaction() as session:
        await ask(session, world.private, who(asker), world.private.join_code, now)
    await moderate(node, world.mo, world.private.slug, invite, "asker", now)
    assert await standing(node, world.private, asker) == ("active", "member")


async def test_join_link_requests(world: World) -> None:
    node = world.node
    now = node.clock.now()
    invite_only = await add_group(node, world.olivia, "closed", private=True, join_policy="invite")
    before = await counts(node, Membership)
    otto = who(world.otto)
    # A wrong code, an invite-only group or a public group all look like a missing group
    for group, code in (
        (world.private, "not-the-code"),
        (world.private, ""),
        (world.private, world.private.join_code[:-1]),
        (invite_only, invite_only.join_code),
        (world.public, world.public.join_code),
    ):
        await refused(node, NotFound, lambda s, g=group, c=code: ask(s, g, otto, c, now))
    # Anonymous people are asked to sign in
    await refused(
        node, Forbidden, lambda s: ask(s, world.private, ANONYMOUS, world.private.join_code, now)
    )
    assert await counts(node, Membership) == before

    # The right code files a pending request; asking again later changes nothing
    for _ in range(2):
        async with node.transaction() as session:
            row = await ask(session, world.private, otto, world.private.join_code, node.clock.now())
            assert (row.state, row.created_at, row.updated_at) == ("pending", now, now)
        node.clock.advance(timedelta(hours=1))
    assert await counts(node, Membership) == (before[0] + 1,)


async def test_moderators_decide_requests(world: World) -> None:
    node = world.node
    now = node.clock.now()
    yes, no = await add_member(node, "yes"), await add_member(node, "no")
    async with node.transaction() as session:
        for person in (yes, no):
            await ask(session, world.private, who(person), world.private.join_code, now)

    # A plain member cannot decide
    with pytest.raises(Forbidden):
        await moderate(node, world.max, world.private.slug, decide_request, "yes", True, now)
    assert await standing(node, world.private, yes) == ("pending", "member")

    # A moderator approves one, an admin who is no member declines the other
    await moderate(node, world.mo, world.private.slug, decide_request, "yes", True, now)
    await moderate(node, world.ada, world.private.slug, decide_request, "no", False, now)
    assert await standing(node, world.private, yes) == ("active", "member")
    assert await standing(node, world.private, no) is None
    async with node.transaction() as session:
        with pytest.raises(NotFound):
            await view_group(session, world.private.slug, who(no))

    # There is nothing left to decide
    for username in ("yes", "no", "otto"):
        with pytest.raises(Conflict):
            await moderate(node, world.mo, world.private.slug, decide_request, username, True, now)


async def test_a_ban_keeps_a_member_out(world: World) -> None:
    node = world.node
    now = node.clock.now()
    # Given max is banned from both groups
    await moderate(node, world.mo, "sugar", ban, "max", now)
    await moderate(node, world.mo, world.private.slug, ban, "MAX", now)
    assert await standing(node, world.public, world.max) == ("banned", "member")
    # Then max cannot join the public group again, nor wipe the ban by leaving
    with pytest.raises(Forbidden):
        await do_join(node, "sugar", world.max)
    async with node.transaction() as session:
        view = await view_group(session, "sugar", who(world.max))
        with pytest.raises(Conflict):
            await leave(session, view)
    # And the private group vanishes, its join link refuses
    async with node.transaction() as session:
        with pytest.raises(NotFound):
            await view_group(session, world.private.slug, who(world.max))
        with pytest.raises(Forbidden):
            await ask(session, world.private, who(world.max), world.private.join_code, now)
    # And an outsider can be banned before ever joining
    await moderate(node, world.mo, "sugar", ban, "otto", now)
    with pytest.raises(Forbidden):
        await do_join(node, "sugar", world.otto)
    for group, member in ((world.public, world.max), (world.private, world.max)):
        assert await standing(node, group, member) == ("banned", "member")


async def test_who_may_ban_whom(world: World) -> None:
    node = world.node
    now = node.clock.now()
    # Nobody bans the owner, not even an admin
    for banner in (world.mo, world.ada):
        with pytest.raises(Conflict):
            await moderate(node, banner, "sugar", ban, "olivia", now)
    # Nobody bans themself; a plain member bans nobody; a moderator bans no fellow moderator
    with pytest.raises(Conflict):
        await moderate(node, world.mo, "sugar", ban, "mo", now)
    with pytest.raises(Forbidden):
        await moderate(node, world.max, "sugar", ban, "otto", now)
    second = await add_member(node, "second")
    await do_join(node, "sugar", second)
    await moderate(node, world.olivia, "sugar", set_role, "second", "moderator", now)
    with pytest.raises(Forbidden):
        await moderate(node, world.mo, "sugar", ban, "second", now)
    assert await standing(node, world.public, world.olivia) == ("active", "owner")
    assert await standing(node, world.public, world.mo) == ("active", "moderator")
    assert await standing(node, world.public, second) == ("active", "moderator")
    assert await standing(node, world.public, world.otto) is None
    # The owner bans a moderator, who loses the role
    await moderate(node, world.olivia, "sugar", ban, "second", now)
    assert await standing(node, world.public, second) == ("banned", "member")


async def test_leaving(world: World) -> None:
    node = world.node
    # A member leaves, and then is no member to leave again
    async with node.transaction() as session:
        await leave(session, await view_group(session, "sugar", who(world.max)))
    assert await standing(node, world.public, world.max) is None
    async with node.transaction() as session:
        view = await view_group(session, "sugar", who(world.max))
        with pytest.raises(Conflict):
            await leave(session, view)
    # A pending request is withdrawn by leaving
    async with node.transaction() as session:
        await ask(
            session, world.private, who(world.otto), world.private.join_code, node.clock.now()
        )
    async with node.transaction() as session:
        await leave(session, await view_group(session, world.private.slug, who(world.otto)))
    assert await standing(node, world.private, world.otto) is None
    # The owner cannot leave
    async with node.transaction() as session:
        view = await view_group(session, "sugar", who(world.olivia))
        with pytest.raises(Conflict):
            await leave(session, view)
    assert await standing(node, world.public, world.olivia) == ("active", "owner")


async def test_set_role(world: World) -> None:
    node = world.node
    now = node.clock.now()
    # The owner appoints max; an admin demotes mo
    await moderate(node, world.olivia, "sugar", set_role, "max", "moderator", now)
    await moderate(node, world.ada, "sugar", set_role, "mo", "member", now)
    assert await standing(node, world.public, world.max) == ("active", "moderator")
    assert await standing(node, world.public, world.mo) == ("active", "member")
    # Refused: an unknown role, a non-member, the owner's own role, a moderator appointing
    for actor, username, role, error in (
        (world.olivia, "max", "owner", Invalid),
        (world.olivia, "max", "admin", Invalid),
        (world.olivia, "otto", "moderator", Conflict),
        (world.olivia, "nobody", "moderator", Invalid),
        (world.olivia, "olivia", "member", Conflict),
        (world.max, "mo", "moderator", Forbidden),
    ):
        with pytest.raises(error):
            await moderate(node, actor, "sugar", set_role, username, role, now)
    assert await standing(node, world.public, world.olivia) == ("active", "owner")
    assert await standing(node, world.public, world.mo) == ("active", "member")
    assert await standing(node, world.private, world.max) == ("active", "member")


async def test_members_are_listed_as_the_policy_allows(world: World) -> None:
    node = world.node
    async with node.transaction() as session:
        await ask(
            session, world.private, who(world.otto), world.private.join_code, node.clock.now()
        )
    async with node.transaction() as session:
        # A public group's members are listed to its members, not to outsiders (issue 12)
        public = await list_members(session, await view_group(session, "sugar", who(world.max)))
        with pytest.raises(NotFound):
            await list_members(session, await view_group(session, "sugar", ANONYMOUS))
        private = await list_members(
            session, await view_group(session, world.private.slug, who(world.ada))
        )
        pending_view = await view_group(session, world.private.slug, who(world.otto))
        with pytest.raises(NotFound):
            await list_members(session, pending_view)
    assert {e.member.username for e in public} == {"olivia", "mo", "max"}
    assert {(e.member.username, e.role) for e in private} == {
        ("olivia", "owner"),
        ("mo", "moderator"),
        ("max", "member"),
    }


# --- posts ---------------------------------------------------------------------------------


async def test_members_start_threads_and_anyone_reads_public_ones(world: World) -> None:
    node = world.node
    # Non-members (an admin too) cannot start a thread
    for outsider in (world.otto, world.ada):
        with pytest.raises(Forbidden):
            await new_thread(node, "sugar", outsider)
    assert await counts(node, Thread, Post) == (0, 0)
    # A member starts one; the title's whitespace is collapsed, the body rendered
    node.clock.advance(timedelta(hours=1))
    thread = await new_thread(node, "sugar", world.max, "  Morning \n readings  ", "**High**")
    async with node.transaction() as session:
        shown = await view_thread(session, thread.id, ANONYMOUS)
        group = await session.get(ConditionGroup, world.public.id)
    assert shown.thread.title == "Morning readings"
    assert [p.author.username for p in shown.posts] == ["max"]
    assert shown.posts[0].post.content_html == "<p><strong>High</strong></p>\n"
    assert shown.posts[0].post.parent_id is None
    assert group is not None and group.last_activity_at == node.clock.now()


async def test_bad_threads_are_refused_without_writing(world: World) -> None:
    node = world.node
    limits = node.settings.limits
    cases = [
        ("", "Body", {"title"}),
        ("   \n ", "Body", {"title"}),
        ("T" * (limits.title_max + 1), "Body", {"title"}),
        ("Title", "", {"body"}),
        ("Title", " \r\n\t ", {"body"}),
        ("Title", "B" * (limits.post_max + 1), {"body"}),
        ("", "", {"title", "body"}),
    ]
    for title, body, fields in cases:
        error = await refused(
            node, Invalid, lambda s, t=title, b=body: new_thread_in(s, node, world.max, t, b)
        )
        assert set(error.problems) == fields, (title[:10], body[:10])
    assert await counts(node, Thread, Post) == (0, 0)
    # The limits themselves are accepted
    await new_thread(node, "sugar", world.max, "T" * limits.title_max, "B" * limits.post_max)
    assert await counts(node, Thread, Post) == (1, 1)


async def new_thread_in(
    session: AsyncSession, node: NodeContext, author: Member, title: str, body: str
) -> Thread:
    view = await view_group(session, "sugar", who(author))
    return await start_thread(
        session, node.settings.limits, view, title=title, draft=Draft(body), now=node.clock.now()
    )


async def test_replies(world: World) -> None:
    node = world.node
    # Given a thread, a reply to it, a nested reply, a thread elsewhere and a deleted reply
    thread = await new_thread(node, "sugar", world.max)
    opening = await opening_post(node, thread)
    first = await add_reply(node, thread, world.mo, "Same here")
    nested = await add_reply(node, thread, world.olivia, "Both of you", parent=first.id)
    elsewhere = await opening_post(node, await new_thread(node, "sugar", world.max, "Other"))
    gone = await add_reply(node, thread, world.mo, "Soon deleted")
    await run(node, deleting(node, who(world.mo), gone))
    # Then replies hang under the opening post or the given parent
    assert first.parent_id == opening.id
    assert nested.parent_id == first.id
    async with node.transaction() as session:
        shown = await view_thread(session, thread.id, ANONYMOUS)
    assert [p.post.id for p in shown.posts] == [opening.id, first.id, nested.id, gone.id]

    # And bad replies are refused without writing
    before = await counts(node, Post)
    for parent, body, field in (
        ("no-such-post-0000000", "Reply", "parent"),
        (elsewhere.id, "Reply", "parent"),
        (gone.id, "Reply", "parent"),
        (None, "   ", "body"),
        (None, "R" * (node.settings.limits.post_max + 1), "body"),
    ):
        error = await refused(node, Invalid, replying(node, thread, world.olivia, body, parent))
        assert set(error.problems) == {field}, parent
    assert await counts(node, Post) == before


async def test_who_may_reply_and_who_sees_private_threads(world: World) -> None:
    node = world.node
    public_thread = await new_thread(node, "sugar", world.max)
    private_thread = await new_thread(node, world.private.slug, world.max)
    # An outsider reads but may not reply in public; an admin reads but does not post in private
    await refused(node, Forbidden, replying(node, public_thread, world.otto, "Hello"))
    await refused(node, Forbidden, replying(node, private_thread, world.ada, "Hello"))
    # An outsider finds no private thread at all
    await refused(node, NotFound, replying(node, private_thread, world.otto, "Hello"))
    async with node.transaction() as session:
        for outsider in (ANONYMOUS, who(world.otto)):
            with pytest.raises(NotFound):
                await view_thread(session, private_thread.id, outsider)
        assert len((await view_thread(session, private_thread.id, who(world.ada))).posts) == 1
    assert await counts(node, Post) == (2,)


async def test_editing(world: World) -> None:
    node = world.node
    thread = await new_thread(node, "sugar", world.max, "Old title", "Old *body*")
    opening = await opening_post(node, thread)
    answer = await add_reply(node, thread, world.mo, "An answer")

    # Only the author edits; not moderators, the owner, admins or outsiders
    for other in (world.mo, world.olivia, world.ada, world.otto):
        await refused(node, Forbidden, editing(node, other, opening, "Vandalised"))
    await refused(node, Invalid, editing(node, world.max, opening, "   "))
    await refused(node, Invalid, editing(node, world.max, opening, "ok", title=" "))

    # When the author edits body and title later, Then both change and the edit is stamped
    node.clock.advance(timedelta(minutes=3))
    await run(node, editing(node, world.max, opening, "New _body_", title=" New   title "))
    # (a title given with a reply is ignored)
    await run(node, editing(node, world.mo, answer, "Better answer", title="Hijack"))
    async with node.transaction() as session:
        shown = await view_thread(session, thread.id, ANONYMOUS)
    first, second = shown.posts
    assert shown.thread.title == "New title"
    assert (first.post.source, first.post.content_html) == (
        "New _body_",
        "<p>New <em>body</em></p>\n",
    )
    assert first.post.edited_at == node.clock.now()
    assert second.post.source == "Better answer"

    # After leaving, even the author no longer edits
    async with node.transaction() as session:
        await leave(session, await view_group(session, "sugar", who(world.max)))
    await refused(node, Forbidden, editing(node, world.max, opening, "Changed my mind"))
    async with node.transaction() as session:
        post = await session.get(Post, opening.id)
    assert post is not None and post.source == "New _body_"


async def test_delete_leaves_a_tombstone_and_the_thread_still_views(world: World) -> None:
    node = world.node
    # Given an opening post with a content warning, a reply and a helpful mark
    thread = await new_thread(node, "sugar", world.max, "Title", "My A1c is 9")
    opening = await opening_post(node, thread)
    answer = await add_reply(node, thread, world.mo, "Hang in there")
    await run(node, marking(node, world.mo, opening))
    async with node.transaction() as session:
        post = await session.get(Post, opening.id)
        assert post is not None
        post.content_warning = "numbers"
    # When the author deletes the opening post
    node.clock.advance(timedelta(minutes=1))
    await run(node, deleting(node, who(world.max), opening))
    # Then its text is erased but its place stays, and the thread still views
    async with node.transaction() as session:
        shown = await view_thread(session, thread.id, ANONYMOUS)
    tomb, kept = shown.posts
    assert tomb.post.id == opening.id and tomb.deleted
    assert (tomb.post.source, tomb.post.content_html, tomb.post.content_warning) == ("", "", "")
    assert tomb.post.deleted_at == node.clock.now()
    assert tomb.helpful_count == 0
    assert shown.thread.title == "(deleted)"  # the title goes with the text it introduced
    assert kept.post.id == answer.id and not kept.deleted
    assert kept.post.source == "Hang in there"
    assert await counts(node, Reaction, Post) == (0, 2)
    # And deleting again is harmless, while editing is refused
    await run(node, deleting(node, who(world.max), opening))
    await refused(node, Conflict, editing(node, world.max, opening, "Back"))


async def test_who_may_delete_a_post(world: World) -> None:
    node = world.node
    thread = await new_thread(node, "sugar", world.olivia)
    by_mod, by_admin, by_author = [
        await add_reply(node, thread, world.max, text) for text in ("One", "Two", "Three")
    ]
    # Neither a fellow member nor an anonymous reader deletes someone else's post
    await do_join(node, "sugar", world.otto)
    for bystander in (who(world.otto), ANONYMOUS):
        await refused(node, Forbidden, deleting(node, bystander, by_mod))
    # A moderator and an admin do, as moderation
    await run(node, deleting(node, who(world.mo), by_mod))
    await run(node, deleting(node, who(world.ada), by_admin))
    # The author does, even after leaving a public group
    async with node.transaction() as session:
        await leave(session, await view_group(session, "sugar", who(world.max)))
    await run(node, deleting(node, who(world.max), by_author))
    async with node.transaction() as session:
        shown = await view_thread(session, thread.id, ANONYMOUS)
    assert [p.deleted for p in shown.posts] == [False, True, True, True]


async def test_an_author_deletes_a_private_post_after_leaving(world: World) -> None:
    node = world.node
    # Given max wrote in the private group, and then left it
    thread = await new_thread(node, world.private.slug, world.olivia)
    post = await add_reply(node, thread, world.max, "My diagnosis, in detail")
    async with node.transaction() as session:
        await leave(session, await view_group(session, world.private.slug, who(world.max)))
    # When max deletes the post, Then it is erased
    await run(node, deleting(node, who(world.max), post))
    async with node.transaction() as session:
        gone = await session.get(Post, post.id)
    assert gone is not None and gone.source == "" and gone.deleted_at is not None


async def test_an_author_deletes_a_private_post_after_a_ban(world: World) -> None:
    node = world.node
    thread = await new_thread(node, world.private.slug, world.olivia)
    post = await add_reply(node, thread, world.max, "My diagnosis, in detail")
    await moderate(node, world.mo, world.private.slug, ban, "max", node.clock.now())
    await run(node, deleting(node, who(world.max), post))
    async with node.transaction() as session:
        gone = await session.get(Post, post.id)
    assert gone is not None and gone.source == "" and gone.deleted_at is not None


async def test_helpful_marks(world: World) -> None:
    node = world.node
    thread = await new_thread(node, "sugar", world.max, "Title", "Tip: walk after meals")
    opening = await opening_post(node, thread)

    async def shown_to(member: Member) -> tuple[int, bool]:
        async with node.transaction() as session:
            view = await view_thread(session, thread.id, who(member))
        return view.posts[0].helpful_count, view.posts[0].marked_helpful

    # Marking twice counts once
    await run(node, marking(node, world.mo, opening))
    await run(node, marking(node, world.mo, opening))
    assert await shown_to(world.mo) == (1, True)
    assert await shown_to(world.olivia) == (1, False)
    await run(node, marking(node, world.olivia, opening))
    assert await shown_to(world.olivia) == (2, True)
    assert await counts(node, Reaction) == (2,)
    # Undoing twice is harmless
    await run(node, marking(node, world.mo, opening, helpful=False))
    await run(node, marking(node, world.mo, opening, helpful=False))
    assert await shown_to(world.mo) == (1, False)
    assert await shown_to(world.olivia) == (1, True)
    # Refused: one's own post, non-members (an admin too), a deleted post
    await refused(node, Conflict, marking(node, world.max, opening))
    await refused(node, Forbidden, marking(node, world.otto, opening))
    await refused(node, Forbidden, marking(node, world.ada, opening))
    assert await counts(node, Reaction) == (1,)
    await run(node, deleting(node, who(world.max), opening))
    await refused(node, Conflict, marking(node, world.mo, opening))
    assert await counts(node, Reaction) == (0,)


# --- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dirty", "forbidden"),
    [
        ('<p>hi<script>alert("x")</script></p>', ["<script", "alert"]),
        ('<a href="javascript:alert(1)">x</a>', ["javascript:", "alert"]),
        ('<a href="JaVaScRiPt:alert(1)">x</a>', ["javascript:", "alert"]),
        ('<a href="data:text/html,<b>x</b>">x</a>', ["data:"]),
        ('<img src="x" onerror="alert(1)">', ["<img", "onerror", "alert"]),
        ('<p onerror="alert(1)" onclick="alert(2)">x</p>', ["onerror", "onclick", "alert"]),
        ('<p style="position:fixed">x</p>', ["style", "position"]),
        ("<style>body{display:none}</style><p>x</p>", ["<style", "display"]),
        ('<iframe src="https://evil.example"></iframe>', ["<iframe", "evil"]),
        ("<!-- a secret --><p>x</p>", ["secret", "<!--"]),
    ],
    ids=[
        "script",
        "javascript-link",
        "javascript-mixed-case",
        "data-link",
        "img-onerror",
        "event-attributes",
        "style-attribute",
        "style-tag",
        "iframe",
        "comment",
    ],
)
def test_sanitise_html_removes_everything_active(dirty: str, forbidden: list[str]) -> None:
    clean = sanitise_html(dirty).lower()
    for fragment in forbidden:
        assert fragment not in clean


def test_markdown_shows_raw_html_as_text() -> None:
    html = render_markdown('<script>alert("x")</script> and <b onclick="x()">bold</b>')
    assert "<script" not in html and "<b" not in html
    assert "&lt;script&gt;" in html


def test_markdown_images_and_script_links_do_not_survive() -> None:
    html = render_markdown(
        "![tracker](https://evil.example/pixel.png) [click](javascript:alert(1)) "
        "[data](data:text/html;base64,PHNjcmlwdD4=)"
    ).lower()
    assert "<img" not in html
    assert 'href="javascript:' not in html
    assert 'href="data:' not in html


def test_links_get_rel_nofollow_ugc_noopener() -> None:
    html = render_markdown("See [the guide](https://example.org/guide) and <https://x.example>")
    assert html.count('rel="nofollow ugc noopener"') == 2
    assert 'href="https://example.org/guide"' in html
    # An author cannot set a rel of their own
    forged = sanitise_html('<a href="https://example.org" rel="me opener">x</a>')
    assert forged == '<a href="https://example.org" rel="nofollow ugc noopener">x</a>'


def test_plain_formatting_survives() -> None:
    html = render_markdown("# Title\n\n*a* **b** ~~c~~ `d`\n\n> quote\n\n1. one\n2. two")
    for tag in ("<h1>", "<em>", "<strong>", "<s>", "<code>", "<blockquote>", "<ol>", "<li>"):
        assert tag in html


def test_code_blocks_take_keyboard_focus_and_have_a_name() -> None:
    # Given Markdown with a code block, and remote HTML whose <pre> brings attributes of its own
    written = render_markdown("```\nrest 10:00-11:00\n```")
    remote = sanitise_html('<pre tabindex="-1" role="button" onfocus="x()">a</pre>')
    # Then both scroll by keyboard, say what they are, and keep nothing the author set
    for html in (written, remote):
        opening = re.search(r"<pre([^>]*)>", html)
        assert opening, html
        attributes = dict(re.findall(r'([a-z-]+)="([^"]*)"', opening.group(1)))
        assert attributes == {"tabindex": "0", "role": "group", "aria-label": "Code"}, html


# --- auth ----------------------------------------------------------------------------------


async def attempt(node: NodeContext, username: str, password: str, address: str) -> Member:
    """One sign-in attempt as the web handler makes it: counted and committed, then checked."""
    async with node.transaction() as session:
        counted = await begin_sign_in(
            session, node.settings, username=username, address=address, now=node.clock.now()
        )
    async with node.transaction() as session:
        return await finish_sign_in(session, node.passwords, counted, password)


async def test_authenticate_checks_credentials(node: NodeContext) -> None:
    alice = await add_member(node, "alice")
    await add_member(node, "bob")
    assert (await attempt(node, " ALICE ", PASSWORD, "192.0.2.1")).id == alice.id
    for index, (username, password) in enumerate(
        (
            ("alice", "wrong password"),
            ("alice", ""),
            ("alice", PASSWORD.upper()),
            ("bob", PASSWORD + " "),
            ("nobody", PASSWORD),
            ("", PASSWORD),
        )
    ):
        with pytest.raises(LoginRefused, match="do not match"):
            await attempt(node, username, password, f"192.0.2.{10 + index}")


async def test_guesses_slow_down_an_account_from_one_address_only(node: NodeContext) -> None:
    throttle = node.settings.limits.rates.sign_in_per_account_address
    await add_member(node, "alice")
    # Given as many wrong guesses at alice from one address as are free
    for _ in range(throttle.free):
        with pytest.raises(LoginRefused, match="do not match"):
            await attempt(node, "alice", "guess", "198.51.100.7")
    # Then the next attempt from there, even with the right password, must wait
    with pytest.raises(Throttled) as refused:
        await attempt(node, "ALICE", PASSWORD, "198.51.100.7")
    assert refused.value.wait == throttle.first_delay
    # But the owner, from an address that has not failed, signs in at once
    assert (await attempt(node, "alice", PASSWORD, "203.0.113.9")).username == "alice"
    # And once the delay has passed, one more guess is allowed, after which it doubles
    node.clock.advance(throttle.first_delay)
    with pytest.raises(LoginRefused):
        await attempt(node, "alice", "guess", "198.51.100.7")
    with pytest.raises(Throttled) as refused:
        await attempt(node, "alice", PASSWORD, "198.51.100.7")
    assert refused.value.wait == 2 * throttle.first_delay
    node.clock.advance(2 * throttle.first_delay)
    assert (await attempt(node, "alice", PASSWORD, "198.51.100.7")).username == "alice"
    # And the right password clears the count for that address
    with pytest.raises(LoginRefused):
        await attempt(node, "alice", "guess", "198.51.100.7")
    assert (await attempt(node, "alice", PASSWORD, "198.51.100.7")).username == "alice"


async def test_guesses_from_one_address_at_many_accounts_slow_that_address(
    make_node: NodeFactory,
) -> None:
    node = await make_node(limits=Limits(rates=RateLimits(sign_in_per_address=Throttle(free=3))))
    await add_member(node, "alice")
    for name in ("x1", "x2", "x3"):
        with pytest.raises(LoginRefused, match="do not match"):
            await attempt(node, name, "guess", "198.51.100.7")
    with pytest.raises(Throttled):
        await attempt(node, "alice", PASSWORD, "198.51.100.7")
    assert (await attempt(node, "alice", PASSWORD, "198.51.100.8")).username == "alice"
    # A right password from a busy address takes back its count: it is not a guess
    await attempt(node, "alice", PASSWORD, "198.51.100.9")
    await attempt(node, "alice", PASSWORD, "198.51.100.9")
    async with node.transaction() as session:
        counter = await session.get(AttemptCounter, "sign-in:198.51.100.9")
    assert counter is not None and counter.attempts == 0


async def test_sessions(node: NodeContext) -> None:
    alice = await add_member(node, "alice")
    # Opening a session forgets attempt counts left alone for a day
    with pytest.raises(LoginRefused):
        await attempt(node, "alice", "guess", "198.51.100.1")
    node.clock.advance(timedelta(days=1, seconds=1))
    with pytest.raises(LoginRefused):
        await attempt(node, "alice", "guess", "198.51.100.2")
    async with node.transaction() as session:
        token = await open_session(session, alice, node.settings, node.clock.now())
        other = await open_session(session, alice, node.settings, node.clock.now())
    assert await counts(node, AttemptCounter) == (2,)  # the second address's two keys
    assert token != other and len(token) >= 32

    # A token finds its member; an unknown one finds nobody
    async with node.transaction() as session:
        found = await member_for_session(session, token, node.clock.now())
        assert await member_for_session(session, token + "x", node.clock.now()) is None
        assert await member_for_session(session, "", node.clock.now()) is None
    assert found is not None and found.id == alice.id

    # A session lasts settings.session_days, refreshing last_active_at meanwhile
    node.clock.advance(timedelta(days=node.settings.session_days) - timedelta(seconds=1))
    async with node.transaction() as session:
        still = await member_for_session(session, token, node.clock.now())
    assert still is not None and still.last_active_at == node.clock.now()
    node.clock.advance(timedelta(seconds=1))
    async with node.transaction() as session:
        assert await member_for_session(session, token, node.clock.now()) is None

    # Closing a session ends it, and only it
    node.clock.advance(timedelta(days=-1))
    async with node.transaction() as session:
        await close_session(session, token)
    async with node.transaction() as session:
        assert await member_for_session(session, token, node.clock.now()) is None
        assert await member_for_session(session, other, node.clock.now()) is not None
