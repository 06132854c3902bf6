"""Condition groups: creation, look-up as a given viewer, and the directory."""

from __future__ import annotations

import base64
import re
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    String,
    and_,
    delete,
    false,
    func,
    null,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import Limits
from node.errors import Forbidden, Invalid, NotFound
from node.events import GroupCreated, GroupUpdated, record
from node.members import claim_handle, find_member, find_remote_by_name
from node.modlog import ModAction, log_action
from node.policy import (
    NO_STANDING,
    OPEN_VISIBILITIES,
    PARTNERS,
    PRIVATE,
    PUBLIC,
    VISIBILITIES,
    Action,
    Standing,
    Viewer,
    knows_of,
    may,
    shown_by_federation_policy,
    visible_in_sql,
)
from node.search_index import index_group
from node.storage.models import LOCAL, ConditionGroup, GroupCondition, Membership
from node.text import neutralise
from node.validation import (
    collect,
    handle_problem,
    normalise_handle,
    remote_handle_readings,
    text_problem,
)

TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
GROUP_NOT_FOUND = "There is no group at this address."
# A new member's first posts held for review: more than this would be a closed group.
HOLD_FIRST_POSTS_MAX = 20
# 120 random bits, in base32: 24 characters of [a-z2-7], a valid handle nobody can guess.
PRIVATE_SLUG_BYTES = 15


def private_slug() -> str:
    """A private group's address: random, so that the shared namespace of usernames and group
    addresses can neither be searched for nor confirm a private group by its name."""
    return base64.b32encode(secrets.token_bytes(PRIVATE_SLUG_BYTES)).decode().lower()


@dataclass(frozen=True)
class GroupView:
    """A group as one viewer sees it."""

    group: ConditionGroup
    standing: Standing
    tags: list[str]
    viewer: Viewer

    def may(self, action: Action) -> bool:
        return may(action, self.viewer, self.group.visibility, self.standing)


def normalise_tags(raw: list[str] | str) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    tags: list[str] = []
    for item in items:
        tag = re.sub(r"[\s_]+", "-", item.strip().lower())
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def tags_problem(tags: list[str], limits: Limits) -> str | None:
    if len(tags) > limits.condition_tags_max:
        return f"At most {limits.condition_tags_max} condition tags."
    for tag in tags:
        if len(tag) > limits.condition_tag_max or not TAG_PATTERN.fullmatch(tag):
            return (
                f"The tag “{tag}” is not valid: use letters, digits and hyphens, "
                f"at most {limits.condition_tag_max} characters."
            )
    return None


async def create_group(
    session: AsyncSession,
    limits: Limits,
    *,
    owner_id: int,
    slug: str,
    name: str,
    description: str = "",
    rules: str = "",
    tags: list[str] | str = (),  # type: ignore[assignment]
    private: bool = False,
    visibility: str | None = None,
    partners: Iterable[str] = (),
    join_policy: str | None = None,
    now: datetime,
) -> ConditionGroup:
    """`visibility` is public, private or partners (`private=True` is `visibility="private"`);
    a partner group needs `partners` (domains as the federation policy's), and no other
    visibility takes any."""
    # node.partners reads domains as node.federation_policy does, which needs node.membership,
    # which needs this module: imported here, once this module is loaded.
    from node.partners import add_partner_rows, parse_partner_domains

    visibility = visibility or (PRIVATE if private else PUBLIC)
    if visibility not in VISIBILITIES:
        raise Invalid({"visibility": "A group is public, private or partners."})
    partner_list = list(partners)
    partner_domains: list[str] = []
    if visibility == PARTNERS:
        partner_domains = parse_partner_domains(partner_list)
        if not partner_domains:
            raise Invalid({"partners": "A partner group needs at least one partner domain."})
    elif partner_list:
        raise Invalid({"partners": "Only a partner group has partner domains."})
    closed = visibility != PUBLIC
    # A private group's address is never the one typed (it would occupy, and so confirm, a
    # name in the namespace every member can probe by registering or creating a group). A
    # partner group keeps the address typed: its partners need a name to follow it by (the
    # trade-off docs/POLICY.md describes).
    slug = private_slug() if visibility == PRIVATE else normalise_handle(slug)
    name = neutralise(name, name=True)
    description, rules = neutralise(description).strip(), neutralise(rules).strip()
    tag_list = normalise_tags(list(tags) if not isinstance(tags, str) else tags)
    policy = join_policy or ("request" if closed else "open")
    allowed_policies = join_policies(closed)
    problems = collect(
        slug=handle_problem(slug, "group address"),
        name=text_problem(name, "Group name", limits.group_name_max),
        description=text_problem(
            description, "Description", limits.group_description_max, required=False
        ),
        rules=text_problem(rules, "Rules", limits.group_rules_max, required=False),
        tags=tags_problem(tag_list, limits),
        join_policy=None
        if policy in allowed_policies
        else f"A {visibility} group's join policy is one of: {', '.join(allowed_policies)}.",
    )
    if problems:
        raise Invalid(problems)
    await claim_handle(session, slug, "group", "group address")
    group = ConditionGroup(
        slug=slug,
        name=name,
        description=description,
        rules=rules,
        visibility=visibility,
        join_policy=policy,
        join_code=secrets.token_urlsafe(16),
        owner_id=owner_id,
        created_at=now,
        last_activity_at=now,
    )
    session.add(group)
    await session.flush()
    session.add_all(GroupCondition(group_id=group.id, tag=tag) for tag in tag_list)
    add_partner_rows(session, group.id, partner_domains, now)
    session.add(
        Membership(
            group_id=group.id,
            member_id=owner_id,
            state="active",
            role="owner",
            created_at=now,
            updated_at=now,
        )
    )
    await session.flush()
    await index_group(session, group)
    record(session, GroupCreated(group.id))
    return group


def join_policies(private: bool) -> tuple[str, ...]:
    """The join policies a group of that visibility may have (the table's CHECK says the same):
    a public group is open to all; a private or partner one (`private`: not public) is joined
    by request or invitation."""
    return ("request", "invite") if private else ("open",)


@dataclass(frozen=True)
class GroupSettings:
    """What a group's owner may change after creation. Visibility is not among them: a private
    group's address is random, and a public group's posts have already left the node."""

    name: str
    description: str
    rules: str
    tags: list[str] | str
    join_policy: str
    posting_restricted_to_mods: bool
    hold_first_posts: str | int


def _hold_count(raw: str | int) -> tuple[int, str | None]:
    text = str(raw).strip() or "0"
    if not (text.isascii() and text.isdigit()) or int(text) > HOLD_FIRST_POSTS_MAX:
        return 0, f"Give a number of posts from 0 (none held) to {HOLD_FIRST_POSTS_MAX}."
    return int(text), None


async def update_group(
    session: AsyncSession,
    limits: Limits,
    view: GroupView,
    settings: GroupSettings,
    *,
    actor_label: str,
    now: datetime,
) -> list[str]:
    """The owner changes the group's settings, checked as `create_group` checks them. Gives
    the names of the fields that changed; a change is logged and recorded as GroupUpdated
    (federation sends a public group's `Update`); saving without a change does neither."""
    if view.group.domain != LOCAL or not view.may(Action.EDIT_SETTINGS):
        raise Forbidden("Only the group's owner can change its settings.")
    group = view.group
    name = neutralise(settings.name, name=True)
    description = neutralise(settings.description).strip()
    rules = neutralise(settings.rules).strip()
    tag_list = normalise_tags(settings.tags)
    allowed_policies = join_policies(group.visibility != PUBLIC)
    hold, hold_problem = _hold_count(settings.hold_first_posts)
    problems = collect(
        name=text_problem(name, "Group name", limits.group_name_max),
        description=text_problem(
            description, "Description", limits.group_description_max, required=False
        ),
        rules=text_problem(rules, "Rules", limits.group_rules_max, required=False),
        tags=tags_problem(tag_list, limits),
        join_policy=None
        if settings.join_policy in allowed_policies
        else f"A {group.visibility} group's join policy is one of: {', '.join(allowed_policies)}.",
        hold_first_posts=hold_problem,
    )
    if problems:
        raise Invalid(problems)
    wanted = {
        "name": name,
        "description": description,
        "rules": rules,
        "join_policy": settings.join_policy,
        "posting_restricted_to_mods": settings.posting_restricted_to_mods,
        "hold_first_posts": hold,
    }
    changed = [field for field, value in wanted.items() if getattr(group, field) != value]
    for field in changed:
        setattr(group, field, wanted[field])
    if sorted(tag_list) != sorted(view.tags):
        changed.append("tags")
        await session.execute(delete(GroupCondition).where(GroupCondition.group_id == group.id))
        session.add_all(GroupCondition(group_id=group.id, tag=tag) for tag in tag_list)
    if not changed:
        return []
    await session.flush()
    await index_group(session, group)
    await log_action(
        session,
        action=ModAction.EDIT_GROUP,
        reason="settings changed: " + ", ".join(changed),
        now=now,
        actor_label=actor_label,
        actor_id=view.viewer.member_id,
        group_id=group.id,
    )
    record(session, GroupUpdated(group.id))
    return changed


async def create_group_for_username(
    session: AsyncSession, limits: Limits, owner_username: str, **fields: object
) -> ConditionGroup:
    owner = await find_member(session, owner_username)
    if owner is None:
        raise Invalid({"owner": f"There is no member called “{owner_username}”."})
    return await create_group(session, limits, owner_id=owner.id, **fields)  # type: ignore[arg-type]


async def standing_in(session: AsyncSession, group_id: int, viewer: Viewer) -> Standing:
    if viewer.member_id is None:
        return NO_STANDING
    row = await session.get(Membership, (group_id, viewer.member_id))
    return Standing(row.state, row.role) if row else NO_STANDING


async def tags_of(session: AsyncSession, group_ids: list[int]) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = defaultdict(list)
    if group_ids:
        rows = await session.execute(
            select(GroupCondition.group_id, GroupCondition.tag)
            .where(GroupCondition.group_id.in_(group_ids))
            .order_by(GroupCondition.tag)
        )
        for group_id, tag in rows:
            tags[group_id].append(tag)
    return tags


# Joins a group's tags in `tags_in_row` (no tag holds a control character: neutralised).
_TAG_SEPARATOR = "\x1f"


def tags_in_row() -> ScalarSelect[str]:
    """A column with the tags of the query's ConditionGroup row, joined into one string: a
    page reading a group's row gets its tags without a second query (`view_with_tags`)."""
    return (
        select(func.aggregate_strings(GroupCondition.tag, _TAG_SEPARATOR))
        .where(GroupCondition.group_id == ConditionGroup.id)
        .correlate(ConditionGroup)
        .scalar_subquery()
    )


def view_with_tags(
    group: ConditionGroup, standing: Standing, viewer: Viewer, tags: str | None
) -> GroupView:
    """`view_of_row` (reading, no other need) for a row read with its `tags_in_row`."""
    check_visible(group, standing, viewer, None)
    return GroupView(group, standing, sorted(tags.split(_TAG_SEPARATOR)) if tags else [], viewer)


async def view_group(
    session: AsyncSession, slug: str, viewer: Viewer, need: Action | None = None
) -> GroupView:
    """Load a group for a viewer; NotFound when they may not know it exists, or lack `need`.

    Lacking `need` on a group one may know of is also NotFound for reads, so a private group's
    content never answers differently from a missing one.
    """
    where = await _address_condition(session, slug)
    if where is None:
        raise NotFound(GROUP_NOT_FOUND)
    return await _first_view(session, visible_groups(viewer, need).where(where), viewer, need)


async def find_group_by_address(session: AsyncSession, address: str) -> ConditionGroup | None:
    """A local group by slug, or this node's copy of a remote group by slug@domain."""
    if "@" not in address:
        return await find_group(session, address)
    return await find_remote_by_name(
        session,
        ConditionGroup,
        ConditionGroup.slug,
        ConditionGroup.domain,
        remote_handle_readings(address),
    )


async def _address_condition(session: AsyncSession, address: str) -> ColumnElement[bool] | None:
    """A local group by slug, or this node's copy of a remote group by slug@domain; None for
    an address no group can have. A local slug becomes a condition of the one query that also
    decides visibility; a remote group (never private here) is found by its name first."""
    handle = normalise_handle(address)
    if "@" not in handle:
        if handle_problem(handle, "group address"):
            return None
        return and_(ConditionGroup.slug == handle, ConditionGroup.domain == LOCAL)
    group = await find_group_by_address(session, address)
    return None if group is None else ConditionGroup.id == group.id


def visible_groups(
    viewer: Viewer, need: Action | None = None, or_else: ColumnElement[bool] | None = None
) -> Select[tuple[ConditionGroup, str | None, str | None]]:
    """Groups with the viewer's membership state and role, only those the viewer may know of
    (and, for a reading `need`, read), decided by node.policy in the query itself: what the
    viewer may not know is never loaded, so it costs what a missing group costs.
    `or_else` lets rows through on another ground (an author's own post)."""
    if viewer.member_id is None:
        statement = select(
            ConditionGroup, null().cast(String).label("state"), null().cast(String).label("role")
        )
    else:
        statement = select(ConditionGroup, Membership.state, Membership.role).outerjoin(
            Membership,
            and_(
                Membership.group_id == ConditionGroup.id,
                Membership.member_id == viewer.member_id,
            ),
        )
    visible = visible_in_sql(viewer, need, ConditionGroup.visibility, Membership.state)
    return statement.where(
        visible if or_else is None else or_(visible, or_else),
        shown_by_federation_policy(ConditionGroup.federation_hidden),
    )


async def _first_view(
    session: AsyncSession,
    statement: Select[tuple[ConditionGroup, str | None, str | None]],
    viewer: Viewer,
    need: Action | None,
) -> GroupView:
    row = (await session.execute(statement.limit(1))).first()
    if row is None:
        raise NotFound(GROUP_NOT_FOUND)
    return await view_of_row(session, row[0], standing_of_row(row[1], row[2]), viewer, need)


def standing_of_row(state: str | None, role: str | None) -> Standing:
    return Standing(state, role) if state is not None else NO_STANDING


async def view_of_row(
    session: AsyncSession,
    group: ConditionGroup,
    standing: Standing,
    viewer: Viewer,
    need: Action | None,
) -> GroupView:
    """The view of a group that `visible_groups` let through: what SQL could not decide
    (needs other than reading) is checked before anything more is loaded."""
    check_visible(group, standing, viewer, need)
    return await unchecked_view_of(session, group, standing, viewer)


async def find_public_group(session: AsyncSession, slug: str) -> ConditionGroup | None:
    """A local public group by its slug, filtered in the query: a private one is never loaded."""
    where = await _address_condition(session, slug) if "@" not in slug else None
    if where is None:
        return None
    return (
        await session.execute(
            select(ConditionGroup).where(where, ConditionGroup.visibility.in_(OPEN_VISIBILITIES))
        )
    ).scalar_one_or_none()


def shared_with_host(host: str) -> ColumnElement[bool]:
    """One of our partner groups whose partner list covers `host`, a signer's host that
    federation has verified (and the federation policy permits): the only ground on which a
    partner group is loaded for someone who is not of this node. No host: nothing."""
    from node.partners import covered_in_sql

    if not host:
        return false()
    return and_(
        ConditionGroup.domain == LOCAL,
        ConditionGroup.visibility == PARTNERS,
        covered_in_sql(ConditionGroup.id, host),
    )


async def find_federated_group(
    session: AsyncSession, slug: str, partner_host: str = ""
) -> ConditionGroup | None:
    """A local group whose documents `partner_host` (a verified signer's host, or "") may
    fetch: a public group, or a partner group shared with that host; filtered in the query,
    so that any other group is not loaded, exactly as a missing one."""
    where = await _address_condition(session, slug) if "@" not in slug else None
    if where is None:
        return None
    return (
        await session.execute(
            select(ConditionGroup).where(
                where,
                or_(
                    ConditionGroup.visibility.in_(OPEN_VISIBILITIES), shared_with_host(partner_host)
                ),
            )
        )
    ).scalar_one_or_none()


async def find_group(session: AsyncSession, slug: str) -> ConditionGroup | None:
    """A local group by its slug, whoever asks; callers decide what the asker may see."""
    handle = normalise_handle(slug)
    if handle_problem(handle, "group address"):
        return None
    return (
        await session.execute(
            select(ConditionGroup).where(
                ConditionGroup.slug == handle, ConditionGroup.domain == LOCAL
            )
        )
    ).scalar_one_or_none()


async def group_view_by_id(
    session: AsyncSession, group_id: int, viewer: Viewer, need: Action | None = None
) -> GroupView:
    statement = visible_groups(viewer, need).where(ConditionGroup.id == group_id)
    return await _first_view(session, statement, viewer, need)


async def unchecked_view(session: AsyncSession, group: ConditionGroup, viewer: Viewer) -> GroupView:
    """The viewer's standing in a group without asking whether they may see it.

    Only for decisions that do not depend on seeing the group, such as an author deleting
    their own post after leaving.
    """
    return await unchecked_view_of(
        session, group, await standing_in(session, group.id, viewer), viewer
    )


async def unchecked_view_of(
    session: AsyncSession, group: ConditionGroup, standing: Standing, viewer: Viewer
) -> GroupView:
    """`unchecked_view` for a standing already loaded."""
    return GroupView(group, standing, (await tags_of(session, [group.id]))[group.id], viewer)


async def standings_of(
    session: AsyncSession, pairs: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], Standing]:
    """The standings of members in groups, by (group id, member id), with one query; pairs
    without a membership row are left out (their standing is NO_STANDING)."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = await session.execute(
        select(Membership).where(
            Membership.group_id.in_(sorted({group_id for group_id, _ in wanted})),
            Membership.member_id.in_(sorted({member_id for _, member_id in wanted})),
        )
    )
    return {
        (row.group_id, row.member_id): Standing(row.state, row.role)
        for row in rows.scalars()
        if (row.group_id, row.member_id) in wanted
    }


def check_visible(
    group: ConditionGroup, standing: Standing, viewer: Viewer, need: Action | None
) -> None:
    """NotFound unless the viewer, so standing, may know of the group and has `need`."""
    if not knows_of(viewer, group.visibility, standing):
        raise NotFound(GROUP_NOT_FOUND)
    if need is not None and not may(need, viewer, group.visibility, standing):
        raise NotFound(GROUP_NOT_FOUND)


@dataclass(frozen=True)
class DirectoryEntry:
    view: GroupView
    member_count: int


async def directory(
    session: AsyncSession, viewer: Viewer, query: str = "", tag: str = ""
) -> list[DirectoryEntry]:
    """Groups the viewer may list, matching a name search and a condition tag.

    Only groups the viewer may list are ever loaded (the filter is in the query), so a search
    that matches a private group costs what a search that matches nothing costs."""
    statement = visible_groups(viewer, Action.LIST)
    query = query.strip().lower()
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        statement = statement.where(
            or_(
                func.lower(ConditionGroup.name).like(pattern, escape="\\"),
                ConditionGroup.slug.like(pattern, escape="\\"),
            )
        )
    tag = normalise_tags(tag)[0] if normalise_tags(tag) else ""
    if tag:
        statement = statement.where(
            ConditionGroup.id.in_(select(GroupCondition.group_id).where(GroupCondition.tag == tag))
        )
    rows = (await session.execute(statement.order_by(ConditionGroup.last_activity_at.desc()))).all()
    if not rows:
        return []
    ids = [group.id for group, _, _ in rows]
    counts = dict(
        (
            await session.execute(
                select(Membership.group_id, func.count())
                .where(Membership.group_id.in_(ids), Membership.state == "active")
                .group_by(Membership.group_id)
            )
        ).all()
    )
    tags = await tags_of(session, ids)
    return [
        DirectoryEntry(
            GroupView(group, standing_of_row(state, role), tags[group.id], viewer),
            counts.get(group.id, 0),
        )
        for group, state, role in rows
    ]
