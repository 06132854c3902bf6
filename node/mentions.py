"""Mentions: `@name` (a member of this node) and `@name@domain` (a person on another server
this node already knows), found in what a member writes, or named by another server's Mention
tags; resolved when the post is written and kept in `post_mentions`.

Nothing is fetched here: a remote person this node has never seen stays plain text
(docs/FEDERATION.md, "Mentions"), so no write transaction ever waits on another server.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from node import ids
from node.storage.models import LOCAL, Member, PostMention

# At most this many people are mentioned by one post; more are left as text.
MENTIONS_MAX = 10
# `@name` or `@name@domain`, not inside a word or an address (`a@b`), nor a path (`/@x`).
_MENTION = re.compile(
    r"(?<![\w@/.])@([A-Za-z0-9_]{1,30})(?:@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?))?"
    r"(?![\w@])"
)
# Text between tags, outside links and code, is where a mention becomes a link.
_TAG = re.compile(r"(<[^>]*>)")
_SKIPPED = ("a", "code", "pre")


@dataclass(frozen=True)
class Mentioned:
    """A person a post mentions, as the post's HTML and its Mention tag name them."""

    member_id: int
    handle: str  # "name" (this node) or "name@domain"
    href: str  # their profile: a path here, or their actor's page elsewhere


def handles_in(text: str) -> list[tuple[str, str]]:
    """The (name, domain) pairs a text mentions, in order, once each; domain "" for `@name`."""
    found: dict[tuple[str, str], None] = {}
    for match in _MENTION.finditer(text):
        found[(match.group(1).lower(), (match.group(2) or "").lower())] = None
    return list(found)[:MENTIONS_MAX]


async def resolve(
    session: AsyncSession, texts: Iterable[str], usernames: Iterable[str] = ()
) -> dict[tuple[str, str], Mentioned]:
    """The members the texts mention that this node knows, and the local `usernames` other
    servers' Mention tags named, by (name, domain): one query for all of them (a batch of
    replies asks once)."""
    pairs = {pair for text in texts for pair in handles_in(text)}
    pairs |= {(name.lower(), "") for name in usernames}
    if not pairs:
        return {}
    local = sorted(name for name, domain in pairs if not domain)
    remote = sorted((name, domain) for name, domain in pairs if domain)
    conditions = []
    if local:
        conditions.append(and_(Member.domain == LOCAL, Member.username.in_(local)))
    for name, domain in remote:
        conditions.append(and_(Member.domain == domain, func.lower(Member.username) == name))
    rows = await session.execute(select(Member).where(or_(*conditions), Member.erased_at.is_(None)))
    found: dict[tuple[str, str], Mentioned] = {}
    for member in rows.scalars():
        if member.domain == LOCAL:
            found[(member.username, "")] = Mentioned(
                member.id, member.username, ids.member_path(member.username)
            )
        else:
            # Their profile page, as their server names it, if it is a web address at all.
            page = member.profile_url or ""
            href = page if page.startswith(("https://", "http://")) else member.actor_iri or ""
            handle = f"{member.username}@{member.domain}"
            found[(member.username.lower(), member.domain)] = Mentioned(member.id, handle, href)
    return found


def link_mentions(content_html: str, known: dict[tuple[str, str], Mentioned]) -> str:
    """The post's HTML with each known mention made a link to the person (Mastodon's
    `class="mention"`); text inside links and code is left alone."""
    if not known:
        return content_html
    parts = _TAG.split(content_html)
    depth = 0
    for index, part in enumerate(parts):
        if index % 2:  # a tag
            name = part.strip("</>").split()[0].lower() if part.strip("</>") else ""
            if name in _SKIPPED:
                depth += -1 if part.startswith("</") else 1
            continue
        if depth > 0 or "@" not in part:
            continue
        parts[index] = _MENTION.sub(lambda match: _link(match, known), part)
    return "".join(parts)


def _link(match: re.Match[str], known: dict[tuple[str, str], Mentioned]) -> str:
    person = known.get((match.group(1).lower(), (match.group(2) or "").lower()))
    if person is None or not person.href:
        return match.group(0)
    return f'<a href="{html.escape(person.href)}" class="mention">@{html.escape(person.handle)}</a>'


def mentioned_in(text: str, known: dict[tuple[str, str], Mentioned]) -> list[int]:
    """The member ids a text mentions, of those resolved."""
    ids_found = [known[pair].member_id for pair in handles_in(text) if pair in known]
    return list(dict.fromkeys(ids_found))


async def store(session: AsyncSession, mentions: dict[str, list[int]]) -> None:
    """Keep whom each post mentions: one INSERT for a batch of posts."""
    rows = [
        {"post_id": post_id, "member_id": member_id}
        for post_id, member_ids in mentions.items()
        for member_id in dict.fromkeys(member_ids)
    ]
    if rows:
        await session.execute(insert(PostMention), rows)


async def mentions_of(session: AsyncSession, post_ids: Sequence[str]) -> dict[str, list[int]]:
    if not post_ids:
        return {}
    rows = await session.execute(
        select(PostMention.post_id, PostMention.member_id).where(
            PostMention.post_id.in_(sorted(set(post_ids)))
        )
    )
    found: dict[str, list[int]] = {}
    for post_id, member_id in rows.all():
        found.setdefault(post_id, []).append(member_id)
    return found


async def mentioned_members(
    session: AsyncSession, post_ids: Sequence[str]
) -> dict[str, list[Member]]:
    """Whom each post mentions, as members (for federation's Mention tags): one query."""
    if not post_ids:
        return {}
    rows = await session.execute(
        select(PostMention.post_id, Member)
        .join(Member, Member.id == PostMention.member_id)
        .where(PostMention.post_id.in_(sorted(set(post_ids))), Member.erased_at.is_(None))
        .order_by(Member.id)
    )
    found: dict[str, list[Member]] = {}
    for post_id, member in rows.all():
        found.setdefault(post_id, []).append(member)
    return found
