"""Crisis support: the resources and phrases the admins set, the notices they write, and the
one matcher that decides whether a text says something a crisis phrase names.

A phrase matches whole words only, ignoring case, accents and the spaces or punctuation
between its words: "kill myself" matches "I want to KILL   myself." and "kill... myself", but
"kill" does not match "skill" or "killed", and "overdose" does not match "overdosed" (the
admins list each form they want matched). A match never stops anyone posting: the author is
shown the resources first, and the published post is reported to its group's moderators.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from node.config import CrisisDefaults, CrisisLine
from node.errors import Forbidden, Invalid, NotFound
from node.members import handle_of
from node.modlog import ModAction, log_action
from node.policy import is_admin
from node.reports import ReportCategory, file_report
from node.storage.models import CrisisPhrase, CrisisResource, Member, NodeNotice
from node.text import neutralise, normalise_line_endings
from node.validation import collect, text_problem

PHRASE_MAX = 200
PHRASES_MAX = 500
RESOURCE_FIELD_MAX = 200
URL_MAX = 2048
NOTICE_MAX = 10_000
RESOURCES_MAX = 50
CRISIS_REPORT_COMMENT = "matched a crisis phrase"
DEFAULT_EMERGENCY_NOTICE = (
    "Peer support is not medical advice. In an emergency, call your local emergency number."
)

# Letters and digits; an underscore separates words, as Markdown's _emphasis_ does.
_WORD = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """`text` as matching sees it: compatibility forms unfolded (NFKD), accents and other
    combining marks dropped, invisible format characters (zero-width spaces, soft hyphens)
    dropped so they cannot split a word, and case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = (
        c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    )
    return "".join(kept).casefold()


def words_of(text: str) -> tuple[str, ...]:
    """The words of `text`, folded: runs of letters and digits. Everything else (spaces,
    punctuation, apostrophes, underscores, line breaks) only separates words."""
    return tuple(_WORD.findall(fold(text)))


@dataclass(frozen=True)
class PhraseMatcher:
    """The admins' phrases, each as its folded words."""

    phrases: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, phrases: Iterable[str]) -> PhraseMatcher:
        return cls(tuple((p, words) for p in phrases if (words := words_of(p))))

    def matches(self, *texts: str) -> list[str]:
        """The phrases found in any of `texts`, each as the admins wrote it. A phrase is found
        when its words stand in the text as consecutive whole words."""
        if not self.phrases:
            return []
        # Words joined by one space and framed by spaces: a phrase is found exactly when its
        # words, so joined and framed, are a substring (no word can then start or end inside
        # another word).
        framed = [" " + " ".join(words_of(text)) + " " for text in texts]
        return [
            phrase
            for phrase, words in self.phrases
            if any(" " + " ".join(words) + " " in text for text in framed)
        ]


def parse_phrases(text: str) -> list[str]:
    """The phrases in `text`, one a line, blank lines skipped; a phrase that folds to the same
    words as an earlier one is dropped. Invalid if one has no letter or digit, or is long."""
    phrases: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for number, line in enumerate(normalise_line_endings(text).split("\n"), start=1):
        phrase = " ".join(neutralise(line, name=True).split())
        if not phrase:
            continue
        words = words_of(phrase)
        if not words:
            raise Invalid({"phrases": f"Line {number} has no letter or digit to match."})
        if len(phrase) > PHRASE_MAX:
            raise Invalid({"phrases": f"Line {number} is longer than {PHRASE_MAX} characters."})
        if words in seen:
            continue
        seen.add(words)
        phrases.append(phrase)
    if len(phrases) > PHRASES_MAX:
        raise Invalid({"phrases": f"At most {PHRASES_MAX} phrases, one a line."})
    return phrases


async def phrase_matcher(session: AsyncSession) -> PhraseMatcher:
    rows = await session.scalars(select(CrisisPhrase.phrase).order_by(CrisisPhrase.id))
    return PhraseMatcher.of(rows)


async def draft_matches(session: AsyncSession, *texts: str) -> bool:
    """Whether a draft (its title, text and content warning) says a crisis phrase."""
    return bool((await phrase_matcher(session)).matches(*texts))


@dataclass(frozen=True)
class WrittenPost:
    """A post just stored, as the crisis check needs it."""

    post_id: str
    group_id: int
    group_is_local: bool
    written_here: bool
    texts: tuple[str, ...]


async def report_crisis_posts(
    session: AsyncSession, written: Sequence[WrittenPost], now: datetime
) -> None:
    """File a crisis report for each post that matches a phrase, for its group's moderators.

    Posts in our own groups are checked whoever wrote them, so a post arriving from another
    server is caught too; posts our members write in another server's group are checked as
    well (federation tells that group). Other servers' posts in their own groups are theirs
    to watch."""
    ours = [post for post in written if post.group_is_local or post.written_here]
    if not ours:
        return
    matcher = await phrase_matcher(session)
    for post in ours:
        if matcher.matches(*post.texts):
            await file_report(
                session,
                category=ReportCategory.CRISIS,
                now=now,
                group_id=post.group_id,
                post_id=post.post_id,
                reporter_id=None,
                comment=CRISIS_REPORT_COMMENT,
            )


def _require_admin(admin: Member) -> None:
    if not is_admin(admin.role):
        raise Forbidden("Only the node's admins can change crisis support.")


async def _log(session: AsyncSession, admin: Member, reason: str, now: datetime) -> None:
    await log_action(
        session,
        action=ModAction.CRISIS_SETTINGS,
        reason=reason,
        now=now,
        actor_label=handle_of(admin),
        actor_id=admin.id,
        group_id=None,
    )


async def set_phrases(session: AsyncSession, admin: Member, text: str, now: datetime) -> None:
    """Replace the crisis phrases with those in `text`, one a line."""
    _require_admin(admin)
    phrases = parse_phrases(text)
    await session.execute(delete(CrisisPhrase))
    session.add_all(CrisisPhrase(phrase=phrase) for phrase in phrases)
    await session.flush()
    await _log(session, admin, f"Set {len(phrases)} crisis phrase(s).", now)


NO_DEFAULTS = CrisisDefaults()


# A resource as the pages show it: one the admins added, or one of the configuration's.
ResourceShown = CrisisResource | CrisisLine


async def resources(
    session: AsyncSession, defaults: CrisisDefaults = NO_DEFAULTS
) -> Sequence[ResourceShown]:
    """The admins' resources; while they have added none, the configuration's."""
    added = list(await session.scalars(select(CrisisResource).order_by(CrisisResource.id)))
    return added or list(defaults.resources)


def parse_crisis_line(text: str) -> CrisisLine:
    """`NAME | LINE | URL | REGION` (the last three may be empty or left out), checked as a
    resource added at /admin/crisis is. Raises ValueError with the reason."""
    parts = [neutralise(part, name=True).strip() for part in text.split("|")]
    if len(parts) > 4:
        raise ValueError(f"{text!r} has more than four parts: NAME | LINE | URL | REGION")
    name, line, url, region = [*parts, "", "", ""][:4]
    try:
        _check_resource(name, line, url, region)
    except Invalid as error:
        raise ValueError(" ".join(error.problems.values())) from None
    return CrisisLine(name=name, line=line, url=url, region=region)


def _check_resource(name: str, line: str, url: str, region: str) -> None:
    problems = collect(
        name=text_problem(name, "The name", RESOURCE_FIELD_MAX),
        line=text_problem(line, "The phone or text line", RESOURCE_FIELD_MAX, False),
        url=_web_address_problem(url),
        region=text_problem(region, "The region", RESOURCE_FIELD_MAX, False),
    )
    if not problems and not line and not url:
        problems["line"] = "Give a phone or text line, a web address, or both."
    if problems:
        raise Invalid(problems)


def _web_address_problem(url: str) -> str | None:
    if not url:
        return None
    if len(url) > URL_MAX:
        return f"The web address is longer than {URL_MAX} characters."
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or " " in url:
        return "Give a full web address starting with https://, or leave it empty."
    return None


async def add_resource(
    session: AsyncSession,
    admin: Member,
    *,
    name: str,
    line: str,
    url: str,
    region: str,
    now: datetime,
) -> CrisisResource:
    _require_admin(admin)
    name, line, url, region = (neutralise(v, name=True).strip() for v in (name, line, url, region))
    _check_resource(name, line, url, region)
    if len(await resources(session)) >= RESOURCES_MAX:
        raise Invalid({"form": f"At most {RESOURCES_MAX} resources: remove one first."})
    resource = CrisisResource(name=name, line=line, url=url, region=region, created_at=now)
    session.add(resource)
    await session.flush()
    await _log(session, admin, f"Added crisis resource “{name}”.", now)
    return resource


async def remove_resource(
    session: AsyncSession, admin: Member, resource_id: int, now: datetime
) -> None:
    _require_admin(admin)
    resource = await session.get(CrisisResource, resource_id)
    if resource is None:
        raise NotFound("There is no such crisis resource.")
    await session.delete(resource)
    await session.flush()
    await _log(session, admin, f"Removed crisis resource “{resource.name}”.", now)


@dataclass(frozen=True)
class Notices:
    """What the admins wrote for everyone; the emergency notice falls back to the
    configuration's, then to a default."""

    guidelines: str = ""
    emergency_notice: str = DEFAULT_EMERGENCY_NOTICE


async def notices(session: AsyncSession, defaults: CrisisDefaults = NO_DEFAULTS) -> Notices:
    rows = {row.name: row.body for row in await session.scalars(select(NodeNotice))}
    return Notices(
        guidelines=rows.get("guidelines", ""),
        emergency_notice=rows.get("emergency_notice")
        or defaults.emergency_notice
        or DEFAULT_EMERGENCY_NOTICE,
    )


async def set_notices(
    session: AsyncSession, admin: Member, *, guidelines: str, emergency_notice: str, now: datetime
) -> None:
    """Save the guidelines and the emergency notice; an empty notice means the default."""
    _require_admin(admin)
    texts = {
        "guidelines": neutralise(normalise_line_endings(guidelines)).strip(),
        "emergency_notice": neutralise(normalise_line_endings(emergency_notice)).strip(),
    }
    problems = collect(
        guidelines=text_problem(texts["guidelines"], "The guidelines", NOTICE_MAX, False),
        emergency_notice=text_problem(texts["emergency_notice"], "The notice", NOTICE_MAX, False),
    )
    if problems:
        raise Invalid(problems)
    for name, body in texts.items():
        row = await session.get(NodeNotice, name)
        if row is None:
            session.add(NodeNotice(name=name, body=body, updated_at=now))
        elif row.body != body:
            row.body, row.updated_at = body, now
    await session.flush()
    await _log(session, admin, "Edited the community guidelines and emergency notice.", now)
