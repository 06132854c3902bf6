"""Condition groups: creation, look-up as a given viewer, and the directory."""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import Limits
from node.errors import Invalid, NotFound
from node.events import GroupCreated, record
from node.members import claim_handle, find_member
from node.policy import NO_STANDING, Action, Standing, Viewer, knows_of, may
from node.storage.models import LOCAL, ConditionGroup, GroupCondition, Membership
from node.validation import collect, handle_problem, normalise_handle, text_problem

TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
GROUP_NOT_FOUND = "There is no group at this address."


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
    join_policy: str | None = None,
    now: datetime,
) -> ConditionGroup:
    slug = normalise_handle(slug)
    name = name.strip()
    tag_list = normalise_tags(list(tags) if not isinstance(tags, str) else tags)
    visibility = "private" if private else "public"
    policy = join_policy or ("request" if private else "open")
    allowed_policies = ("request", "invite") if private else ("open",)
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
        description=description.strip(),
        rules=rules.strip(),
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
    record(session, GroupCreated(group.id))
    return group


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


async def view_group(
    session: AsyncSession, slug: str, viewer: Viewer, need: Action | None = None
) -> GroupView:
    """Load a group for a viewer; NotFound when they may not know it exists, or lack `need`.

    Lacking `need` on a group one may know of is also NotFound for reads, so a private group's
    content never answers differently from a missing one.
    """
    group = await find_group_by_address(session, slug)
    if group is None:
        raise NotFound(GROUP_NOT_FOUND)
    return await _checked_view(session, group, viewer, need)


async def find_group_by_address(session: AsyncSession, address: str) -> ConditionGroup | None:
    """A local group by slug, or this node's copy of a remote group by slug@domain."""
    handle = normalise_handle(address)
    if "@" not in handle:
        return await find_group(session, handle)
    name, _, domain = handle.partition("@")
    return (
        await session.execute(
            select(ConditionGroup).where(
                ConditionGroup.slug == name, ConditionGroup.domain == domain
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
    group = await session.get(ConditionGroup, group_id)
    if group is None:
        raise NotFound(GROUP_NOT_FOUND)
    return await _checked_view(session, group, viewer, need)


async def unchecked_view(session: AsyncSession, group: ConditionGroup, viewer: Viewer) -> GroupView:
    """The viewer's standing in a group without asking whether they may see it.

    Only for decisions that do not depend on seeing the group, such as an author deleting
    their own post after leaving.
    """
    standing = await standing_in(session, group.id, viewer)
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


def checked(view: GroupView, need: Action | None) -> GroupView:
    """The view itself when its viewer may know of the group and has `need`; else NotFound,
    the same answer as for a group that does not exist."""
    check_visible(view.group, view.standing, view.viewer, need)
    return view


def check_visible(
    group: ConditionGroup, standing: Standing, viewer: Viewer, need: Action | None
) -> None:
    """NotFound unless the viewer, so standing, may know of the group and has `need`."""
    if not knows_of(viewer, group.visibility, standing):
        raise NotFound(GROUP_NOT_FOUND)
    if need is not None and not may(need, viewer, group.visibility, standing):
        raise NotFound(GROUP_NOT_FOUND)


async def _checked_view(
    session: AsyncSession, group: ConditionGroup, viewer: Viewer, need: Action | None
) -> GroupView:
    return checked(await unchecked_view(session, group, viewer), need)


@dataclass(frozen=True)
class DirectoryEntry:
    view: GroupView
    member_count: int


async def directory(
    session: AsyncSession, viewer: Viewer, query: str = "", tag: str = ""
) -> list[DirectoryEntry]:
    """Groups the viewer may list, matching a name search and a condition tag."""
    statement = select(ConditionGroup)
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
    groups = list(
        (
            await session.execute(statement.order_by(ConditionGroup.last_activity_at.desc()))
        ).scalars()
    )
    if not groups:
        return []
    ids = [group.id for group in groups]
    standings: dict[int, Standing] = {}
    if viewer.member_id is not None:
        rows = await session.execute(
            select(Membership).where(
                Membership.member_id == viewer.member_id, Membership.group_id.in_(ids)
            )
        )
        standings = {row.group_id: Standing(row.state, row.role) for row in rows.scalars()}
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
    entries = []
    for group in groups:
        view = GroupView(group, standings.get(group.id, NO_STANDING), tags[group.id], viewer)
        if view.may(Action.LIST):
            entries.append(DirectoryEntry(view, counts.get(group.id, 0)))
    return entries
