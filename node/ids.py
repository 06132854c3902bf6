"""The one place that mints and parses this node's IRIs, and declares the paths they live at.

Every IRI this node publishes (actors and their inboxes, outboxes and collections, key ids,
threads, posts, activities, join links) is minted here from the configured base URL, and every
IRI of ours that comes back from elsewhere is read here: `Iris.parse_local` answers a typed
reference (`GroupRef("heart")`, `PostRef(...)`, `KeyRef(MemberRef("alice"))`, ...) or None.
Nothing else appends a suffix to one of our IRIs or splits one to see what it names.

The path patterns use aiohttp's route syntax (`{name}` is one path segment), and web/ registers
its routes from them; a pattern's parameter names are the field names of its reference.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal, cast
from urllib.parse import urlencode

# PostgreSQL's integer, the type of every numeric id here: a larger one names no row, and
# SQLite and asyncpg would refuse to send it (OverflowError, DataError) rather than find none.
MAX_ROW_ID = 2**31 - 1

# ---------------------------------------------------------------- paths

# Actors, and what each one publishes.
MEMBER_PATH = "/u/{username}"
MEMBER_INBOX_PATH = "/u/{username}/inbox"
MEMBER_OUTBOX_PATH = "/u/{username}/outbox"
MEMBER_FOLLOWERS_PATH = "/u/{username}/followers"
GROUP_PATH = "/g/{slug}"
GROUP_INBOX_PATH = "/g/{slug}/inbox"
GROUP_OUTBOX_PATH = "/g/{slug}/outbox"
GROUP_FOLLOWERS_PATH = "/g/{slug}/followers"
GROUP_MODERATORS_PATH = "/g/{slug}/moderators"
GROUP_FEATURED_PATH = "/g/{slug}/featured"
INSTANCE_ACTOR_PATH = "/actor"
INSTANCE_INBOX_PATH = "/actor/inbox"
INSTANCE_OUTBOX_PATH = "/actor/outbox"
INSTANCE_FOLLOWERS_PATH = "/actor/followers"
SHARED_INBOX_PATH = "/inbox"

# Objects and activities.
THREAD_PATH = "/t/{thread_id}"
POST_PATH = "/p/{post_id}"
ACTIVITY_PATH = "/activities/{activity_id}"

# What a private group's moderators give to the people they let ask to join.
JOIN_LINK_PATH = "/g/{slug}/ask/{code}"

# An actor's key id is its IRI with this fragment; a group outbox page is its outbox with
# `?page=N`. A member's Like or Follow whose own id was not kept is undone under a stand-in id,
# the member's IRI with the fragment `like` or `follow`.
StandInKind = Literal["like", "follow"]
KEY_FRAGMENT = "main-key"
PAGE_PARAMETER = "page"
STAND_IN_KINDS: tuple[StandInKind, ...] = ("like", "follow")

# Pages and forms for people (HTML only, never published as IRIs).
GROUP_MEMBERS_PATH = "/g/{slug}/members"
GROUP_JOIN_PATH = "/g/{slug}/join"
GROUP_LEAVE_PATH = "/g/{slug}/leave"
# A visitor follows a public group from their own server (its OStatus subscribe template).
GROUP_FOLLOW_FROM_HOME_PATH = "/g/{slug}/follow-from-home"
GROUP_NEW_THREAD_PATH = "/g/{slug}/new"
GROUP_NEW_QA_PATH = "/g/{slug}/qa/new"  # a moderator schedules an expert Q&A
GROUP_MODERATION_PATH = "/g/{slug}/moderation"
GROUP_MODERATION_ACTION_PATH = "/g/{slug}/moderation/{action}"
GROUP_SETTINGS_PATH = "/g/{slug}/settings"
GROUP_DASHBOARD_PATH = "/g/{slug}/dashboard"  # the group's figures, for its moderators
GROUP_HELD_PATH = "/g/{slug}/held"
GROUP_HELD_DECISION_PATH = "/g/{slug}/held/{post_id}/{decision}"
GROUP_WITHDRAW_INVITE_PATH = "/g/{slug}/invitations/withdraw"
THREAD_REPLY_PATH = "/t/{thread_id}/reply"
THREAD_REOPEN_PATH = "/t/{thread_id}/reopen"
THREAD_VOTE_PATH = "/t/{thread_id}/vote"
THREAD_SUBSCRIPTION_PATH = "/t/{thread_id}/subscription"  # watch or mute (node.thread_reads)
POST_EDIT_PATH = "/p/{post_id}/edit"
POST_DELETE_PATH = "/p/{post_id}/delete"
POST_HELPFUL_PATH = "/p/{post_id}/helpful"
HELP_PAGE = "/help"  # crisis resources; linked from the same place on every page
ADMIN_CRISIS_PAGE = "/admin/crisis"
# Reports and moderation (node.moderation).
POST_REPORT_PATH = "/p/{post_id}/report"
POST_REVEAL_PATH = "/p/{post_id}/reveal"  # a moderator learns who wrote an anonymous post
MEMBER_REPORT_PATH = "/u/{username}/report"
GROUP_REPORTS_PATH = "/g/{slug}/reports"
GROUP_MODERATION_LOG_PATH = "/g/{slug}/moderation/log"
GROUP_BAN_CONFIRM_PATH = "/g/{slug}/moderation/ban"
THREAD_LOCK_PATH = "/t/{thread_id}/lock"
THREAD_PIN_PATH = "/t/{thread_id}/pin"
# Pages outside the actors' address space (no IRI ever names them).
MY_REPORTS_PAGE = "/reports/mine"
REPORT_PAGE = "/reports/{report_id}"
REPORT_ACT_PAGE = "/reports/{report_id}/act"
# Full-text search (node/search.py): `q`, an optional `type` and a `page` in the query string.
SEARCH_PAGE = "/search"
FEED_PAGE = "/feed"  # new threads and replies in the member's groups (node.thread_lists)
OLD_NOTICES_PAGE = "/notices"  # moderators' warnings are notifications now: it redirects
NOTIFICATIONS_PAGE = "/notifications"
NOTIFICATIONS_READ_PAGE = "/notifications/read"
NOTIFICATION_READ_PAGE = "/notifications/{notification_id}/read"
ACCOUNT_NOTIFICATIONS_PAGE = "/account/notifications"
ADMIN_REPORTS_PAGE = "/admin/reports"
ADMIN_DASHBOARD_PAGE = "/admin"  # the node's figures (node.community_figures)
ADMIN_AUDIT_PAGE = "/admin/audit"
# Verified professionals and the partner nodes whose verifications are trusted.
ADMIN_PROFESSIONALS_PAGE = "/admin/professionals"
# A member's account security (node.accounts), and recovery without email.
ACCOUNT_PASSWORD_PAGE = "/account/password"
ACCOUNT_SESSIONS_PAGE = "/account/sessions"
ACCOUNT_SESSION_END_PAGE = "/account/sessions/end"
ACCOUNT_SESSIONS_END_ALL_PAGE = "/account/sessions/end-all"
RECOVERY_PAGE = "/recover"
PASSWORD_RESET_PAGE = "/reset/{token}"
ADMIN_RESET_LINK_PAGE = "/admin/members/{username}/reset-link"
# The node's identity and its admin pages (node/identity.py, node/admins.py). The logo's
# name is its fingerprint: a new logo is a new path, so each is cached for a year.
ABOUT_PAGE = "/about"
LOGO_FILE = "/logo/{name}"
ADMIN_DASHBOARD_PAGE = "/admin"
ADMIN_SETTINGS_PAGE = "/admin/settings"
ADMIN_MEMBERS_PAGE = "/admin/members"
ADMIN_MEMBER_ACTION_PAGE = "/admin/members/{username}/{action}"
ADMIN_FEDERATION_PAGE = "/admin/federation"
ADMIN_PRIVACY_PAGE = "/admin/privacy"
ADMIN_SEARCH_ENGINES_PAGE = "/admin/search-engines"
# Optional email (docs/POLICY.md, "Email (optional)"): the member's own address page, the
# link that confirms an address, and password recovery by email.
ACCOUNT_EMAIL_PAGE = "/account/email"
EMAIL_CONFIRM_PAGE = "/account/email/confirm/{token}"
ACCOUNT_RECOVER_PAGE = "/account/recover"
RECOVER_PAGE = "/recover/{token}"

# Discovery, as published in WebFinger, NodeInfo and host-meta documents.
WEBFINGER_PATH = "/.well-known/webfinger"
NODEINFO_WELL_KNOWN_PATH = "/.well-known/nodeinfo"
NODEINFO_PATH = "/nodeinfo/2.1"
HOST_META_PATH = "/.well-known/host-meta"
HOST_META_JSON_PATH = "/.well-known/host-meta.json"
AUTHORIZE_INTERACTION_PATH = "/authorize_interaction"

# What one path segment of each parameter may be when we parse. Usernames and slugs are
# node.validation.HANDLE_PATTERN in any case (names are case-insensitive here, as WebFinger
# handles are); ids are what new_object_id makes, within the 20 characters they are stored in;
# join codes are secrets.token_urlsafe. All ASCII: no percent-encoding, no dots, no slashes.
_SEGMENTS = {
    "username": "[A-Za-z0-9_]{1,30}",
    "slug": "[A-Za-z0-9_]{1,30}",
    "thread_id": "[0-9a-z]{1,20}",
    "post_id": "[0-9a-z]{1,20}",
    "activity_id": "[0-9a-z]{1,20}",
    "code": "[A-Za-z0-9_-]{1,32}",
}
_PAGE_NUMBER = "[1-9][0-9]{0,4}"  # what the outbox route serves: 1 to 99999, no leading zero
# Names are folded to lowercase, the form they are stored and minted in.
_FOLDED = frozenset({"username", "slug"})
_LONGEST_IRI = 2048

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_object_id() -> str:
    """A time-ordered, unguessable id: 10 characters of milliseconds, 10 of randomness.

    Not an integer sequence, so ids reveal neither counts nor the ids of private posts.
    """
    millis = int(time.time() * 1000)
    stamp = ""
    for _ in range(10):
        stamp = _ALPHABET[millis % 32] + stamp
        millis //= 32
    # 50 random bits, five a character (32 letters: every one equally likely).
    bits = int.from_bytes(secrets.token_bytes(7)) >> 6
    return stamp + "".join(_ALPHABET[(bits >> shift) & 31] for shift in range(0, 50, 5))


# ---------------------------------------------------------------- references


@dataclass(frozen=True)
class MemberRef:
    username: str


@dataclass(frozen=True)
class MemberInboxRef:
    username: str


@dataclass(frozen=True)
class MemberOutboxRef:
    username: str


@dataclass(frozen=True)
class MemberFollowersRef:
    username: str


@dataclass(frozen=True)
class GroupRef:
    slug: str


@dataclass(frozen=True)
class GroupInboxRef:
    slug: str


@dataclass(frozen=True)
class GroupOutboxRef:
    slug: str


@dataclass(frozen=True)
class GroupOutboxPageRef:
    slug: str
    page: int


@dataclass(frozen=True)
class GroupFollowersRef:
    slug: str


@dataclass(frozen=True)
class GroupModeratorsRef:
    slug: str


@dataclass(frozen=True)
class GroupFeaturedRef:
    slug: str


@dataclass(frozen=True)
class InstanceActorRef:
    pass


@dataclass(frozen=True)
class InstanceInboxRef:
    pass


@dataclass(frozen=True)
class InstanceOutboxRef:
    pass


@dataclass(frozen=True)
class InstanceFollowersRef:
    pass


@dataclass(frozen=True)
class SharedInboxRef:
    pass


@dataclass(frozen=True)
class ThreadRef:
    """A thread, which is also its opening post's `Page`."""

    thread_id: str


@dataclass(frozen=True)
class PostRef:
    """A reply (a `Note`); any post is also served here."""

    post_id: str


@dataclass(frozen=True)
class ActivityRef:
    activity_id: str


ActorRef = MemberRef | GroupRef | InstanceActorRef


@dataclass(frozen=True)
class KeyRef:
    """An actor's key id: `<actor>#main-key`."""

    actor: ActorRef


@dataclass(frozen=True)
class StandInActivityRef:
    """The id a member's Like or Follow is undone under when its own id was not kept."""

    actor: MemberRef
    kind: StandInKind


@dataclass(frozen=True)
class JoinLinkRef:
    slug: str
    code: str


LocalRef = (
    MemberRef
    | MemberInboxRef
    | MemberOutboxRef
    | MemberFollowersRef
    | GroupRef
    | GroupInboxRef
    | GroupOutboxRef
    | GroupOutboxPageRef
    | GroupFollowersRef
    | GroupModeratorsRef
    | GroupFeaturedRef
    | InstanceActorRef
    | InstanceInboxRef
    | InstanceOutboxRef
    | InstanceFollowersRef
    | SharedInboxRef
    | ThreadRef
    | PostRef
    | ActivityRef
    | KeyRef
    | StandInActivityRef
    | JoinLinkRef
)

# Each reference that is one path, with the pattern it is minted from and parsed by.
PATTERNS: dict[type[LocalRef], str] = {
    MemberRef: MEMBER_PATH,
    MemberInboxRef: MEMBER_INBOX_PATH,
    MemberOutboxRef: MEMBER_OUTBOX_PATH,
    MemberFollowersRef: MEMBER_FOLLOWERS_PATH,
    GroupRef: GROUP_PATH,
    GroupInboxRef: GROUP_INBOX_PATH,
    GroupOutboxRef: GROUP_OUTBOX_PATH,
    GroupFollowersRef: GROUP_FOLLOWERS_PATH,
    GroupModeratorsRef: GROUP_MODERATORS_PATH,
    GroupFeaturedRef: GROUP_FEATURED_PATH,
    InstanceActorRef: INSTANCE_ACTOR_PATH,
    InstanceInboxRef: INSTANCE_INBOX_PATH,
    InstanceOutboxRef: INSTANCE_OUTBOX_PATH,
    InstanceFollowersRef: INSTANCE_FOLLOWERS_PATH,
    SharedInboxRef: SHARED_INBOX_PATH,
    ThreadRef: THREAD_PATH,
    PostRef: POST_PATH,
    ActivityRef: ACTIVITY_PATH,
    JoinLinkRef: JOIN_LINK_PATH,
}


def inbox_of(actor: ActorRef) -> MemberInboxRef | GroupInboxRef | InstanceInboxRef:
    match actor:
        case MemberRef(username):
            return MemberInboxRef(username)
        case GroupRef(slug):
            return GroupInboxRef(slug)
        case InstanceActorRef():
            return InstanceInboxRef()


def outbox_of(actor: ActorRef) -> MemberOutboxRef | GroupOutboxRef | InstanceOutboxRef:
    match actor:
        case MemberRef(username):
            return MemberOutboxRef(username)
        case GroupRef(slug):
            return GroupOutboxRef(slug)
        case InstanceActorRef():
            return InstanceOutboxRef()


def followers_of(
    actor: ActorRef,
) -> MemberFollowersRef | GroupFollowersRef | InstanceFollowersRef:
    match actor:
        case MemberRef(username):
            return MemberFollowersRef(username)
        case GroupRef(slug):
            return GroupFollowersRef(slug)
        case InstanceActorRef():
            return InstanceFollowersRef()


# ---------------------------------------------------------------- minting paths


def path_of(ref: LocalRef) -> str:
    """What follows the base URL in the IRI of `ref`: its path, and its query or fragment."""
    match ref:
        case KeyRef(actor):
            return f"{path_of(actor)}#{KEY_FRAGMENT}"
        case StandInActivityRef(actor, kind):
            return f"{path_of(actor)}#{kind}"
        case GroupOutboxPageRef(slug, page):
            return f"{path_of(GroupOutboxRef(slug))}?{PAGE_PARAMETER}={page}"
        case _:
            values = {field.name: getattr(ref, field.name) for field in fields(ref)}
            return PATTERNS[type(ref)].format(**values)


def key_id(actor_iri: str) -> str:
    """The key id of one of our actors, given the actor's IRI (as stored with what it signs)."""
    return f"{actor_iri}#{KEY_FRAGMENT}"


def member_path(username: str) -> str:
    return MEMBER_PATH.format(username=username)


def group_path(slug: str, domain: str = "") -> str:
    """A group's page here; a remote group's copy is addressed as slug@domain."""
    return GROUP_PATH.format(slug=f"{slug}@{domain}" if domain else slug)


def group_follow_from_home_path(slug: str) -> str:
    return GROUP_FOLLOW_FROM_HOME_PATH.format(slug=slug)


def group_moderation_path(slug: str) -> str:
    return GROUP_MODERATION_PATH.format(slug=slug)


def group_settings_path(slug: str) -> str:
    return GROUP_SETTINGS_PATH.format(slug=slug)


def group_dashboard_path(slug: str) -> str:
    return GROUP_DASHBOARD_PATH.format(slug=slug)


def group_held_path(slug: str) -> str:
    return GROUP_HELD_PATH.format(slug=slug)


def group_reports_path(slug: str) -> str:
    return GROUP_REPORTS_PATH.format(slug=slug)


def password_reset_path(token: str) -> str:
    return PASSWORD_RESET_PAGE.format(token=token)


def admin_reset_link_path(username: str) -> str:
    return ADMIN_RESET_LINK_PAGE.format(username=username)


def logo_path(name: str) -> str:
    return LOGO_FILE.format(name=name)


def admin_member_action_path(username: str, action: str) -> str:
    return ADMIN_MEMBER_ACTION_PAGE.format(username=username, action=action)


def report_page(report_id: int) -> str:
    return REPORT_PAGE.format(report_id=report_id)


def email_confirm_page(token: str) -> str:
    return EMAIL_CONFIRM_PAGE.format(token=token)


def recover_page(token: str) -> str:
    return RECOVER_PAGE.format(token=token)


def thread_path(thread_id: str) -> str:
    return THREAD_PATH.format(thread_id=thread_id)


def post_path(post_id: str) -> str:
    return POST_PATH.format(post_id=post_id)


def search_path(query: str, kind: str = "", page: int = 1) -> str:
    """The search page for a query, optionally one type of result, at a page from 1."""
    params = {"q": query} | ({"type": kind} if kind else {}) | ({"page": page} if page > 1 else {})
    return f"{SEARCH_PAGE}?{urlencode(params)}"


def thread_subscription_path(thread_id: str) -> str:
    return THREAD_SUBSCRIPTION_PATH.format(thread_id=thread_id)


# The query parameter naming a page of a long list (a thread's replies).
PAGE_PARAMETER = "page"


def list_page_path(base: str, page: int = 1) -> str:
    """A page of a long list whose first page is `base` (a path without a query)."""
    return f"{base}?{PAGE_PARAMETER}={page}" if page > 1 else base


def thread_page_path(thread_id: str, page: int = 1) -> str:
    """A page of a thread; page 1 is the thread's own address."""
    return list_page_path(thread_path(thread_id), page)


def post_anchor_path(thread_id: str, post_id: str, page: int = 1) -> str:
    """A post where its thread shows it: the page it is on, at its anchor."""
    return f"{thread_page_path(thread_id, page)}#post-{post_id}"


# ---------------------------------------------------------------- parsing paths


def _regex(pattern: str) -> str:
    """A route pattern as a regular expression: literal text, and `{name}` as its segment."""
    pieces = re.split(r"\{(\w+)\}", pattern)
    return "".join(
        re.escape(piece) if index % 2 == 0 else f"(?P<{piece}>{_SEGMENTS[piece]})"
        for index, piece in enumerate(pieces)
    )


def _values(match: re.Match[str]) -> dict[str, str]:
    return {
        name: value.lower() if name in _FOLDED else value
        for name, value in match.groupdict().items()
    }


Parser = Callable[[dict[str, str]], LocalRef]


def _plain(kind: type[LocalRef]) -> Parser:
    return lambda values: kind(**values)


def _key(actor: Callable[[dict[str, str]], ActorRef]) -> Parser:
    return lambda values: KeyRef(actor(values))


def _parsers() -> list[tuple[re.Pattern[str], Parser]]:
    parsers = [(re.compile(_regex(pattern)), _plain(kind)) for kind, pattern in PATTERNS.items()]
    page = f"{_regex(GROUP_OUTBOX_PATH)}\\?{PAGE_PARAMETER}=(?P<page>{_PAGE_NUMBER})"
    parsers.append(
        (re.compile(page), lambda values: GroupOutboxPageRef(values["slug"], int(values["page"])))
    )
    actors: tuple[tuple[str, Callable[[dict[str, str]], ActorRef]], ...] = (
        (MEMBER_PATH, lambda values: MemberRef(values["username"])),
        (GROUP_PATH, lambda values: GroupRef(values["slug"])),
        (INSTANCE_ACTOR_PATH, lambda values: InstanceActorRef()),
    )
    for pattern, actor in actors:
        parsers.append((re.compile(f"{_regex(pattern)}#{re.escape(KEY_FRAGMENT)}"), _key(actor)))
    stand_in = f"{_regex(MEMBER_PATH)}#(?P<kind>{'|'.join(STAND_IN_KINDS)})"
    parsers.append(
        (
            re.compile(stand_in),
            lambda values: StandInActivityRef(
                MemberRef(values["username"]), cast(StandInKind, values["kind"])
            ),
        )
    )
    return parsers


_PARSERS = _parsers()


def parse_path(path: str) -> LocalRef | None:
    """What a path (with its query or fragment, if its pattern has one) names, or None."""
    if len(path) > _LONGEST_IRI:
        return None
    for regex, make in _PARSERS:
        found = regex.fullmatch(path)
        if found is not None:
            return make(_values(found))
    return None


# ---------------------------------------------------------------- absolute IRIs


class Iris:
    """Absolute IRIs for one node's base URL (scheme and domain)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        # Scheme and host are case-insensitive; compared lowercased, minted as configured.
        self._folded_base = self.base_url.lower()

    # ------------------------------------------------------------ minting

    def iri(self, ref: LocalRef) -> str:
        return self.base_url + path_of(ref)

    def member(self, username: str) -> str:
        return self.iri(MemberRef(username))

    def group(self, slug: str) -> str:
        return self.iri(GroupRef(slug))

    def group_outbox(self, slug: str) -> str:
        return self.iri(GroupOutboxRef(slug))

    def group_outbox_page(self, slug: str, page: int) -> str:
        return self.iri(GroupOutboxPageRef(slug, page))

    def group_followers(self, slug: str) -> str:
        return self.iri(GroupFollowersRef(slug))

    def group_moderators(self, slug: str) -> str:
        return self.iri(GroupModeratorsRef(slug))

    def group_featured(self, slug: str) -> str:
        return self.iri(GroupFeaturedRef(slug))

    def member_outbox(self, username: str) -> str:
        return self.iri(MemberOutboxRef(username))

    def member_followers(self, username: str) -> str:
        return self.iri(MemberFollowersRef(username))

    def thread(self, thread_id: str) -> str:
        return self.iri(ThreadRef(thread_id))

    def post(self, post_id: str) -> str:
        return self.iri(PostRef(post_id))

    def instance_actor(self) -> str:
        return self.iri(InstanceActorRef())

    def instance_outbox(self) -> str:
        return self.iri(InstanceOutboxRef())

    def instance_followers(self) -> str:
        return self.iri(InstanceFollowersRef())

    def activity(self, activity_id: str) -> str:
        return self.iri(ActivityRef(activity_id))

    def archived_create(self, object_iri: str) -> str:
        """The id of a post's `Create` in its author's archive (node/export.py): a fragment
        of the post's IRI, as no id is kept for the Create that federated it."""
        return f"{object_iri}#create"

    def poll_vote(self, username: str, vote_id: str) -> str:
        """The id of the `Note` that carries a member's vote to a remote poll's owner: a
        fragment of the member's IRI, as Mastodon's votes are (nothing is served there)."""
        return f"{self.member(username)}#votes/{vote_id}"

    def stand_in_activity(self, username: str, kind: StandInKind) -> str:
        return self.iri(StandInActivityRef(MemberRef(username), kind))

    def shared_inbox(self) -> str:
        return self.iri(SharedInboxRef())

    def key_id(self, actor: ActorRef) -> str:
        return self.iri(KeyRef(actor))

    def join_link(self, slug: str, code: str) -> str:
        return self.iri(JoinLinkRef(slug, code))

    def webfinger_template(self) -> str:
        """RFC 6415's LRDD template, as host-meta publishes it."""
        return f"{self.base_url}{WEBFINGER_PATH}?resource={{uri}}"

    def nodeinfo(self) -> str:
        return self.base_url + NODEINFO_PATH

    def authorize_interaction_template(self) -> str:
        """Where other servers send people to follow something from here (OStatus)."""
        return f"{self.base_url}{AUTHORIZE_INTERACTION_PATH}?uri={{uri}}"

    # ------------------------------------------------------------ parsing

    def _local_rest(self, iri: str) -> str | None:
        """What follows our scheme and host in `iri`, or None when it is not on this node."""
        head, rest = iri[: len(self.base_url)], iri[len(self.base_url) :]
        if not head.isascii() or head.lower() != self._folded_base:
            return None
        if rest and rest[0] not in "/?#":
            return None  # another port, a longer host name, user information...
        return rest

    def is_local(self, iri: str) -> bool:
        """Whether `iri` is on this node (this scheme, host and port), whatever it names."""
        return self._local_rest(iri) is not None

    def parse_local(self, iri: str) -> LocalRef | None:
        """What one of our IRIs names; None for anything else, including text on this node
        that is not exactly an IRI we mint (extra segments, trailing slashes, encodings,
        queries or fragments where the pattern has none)."""
        rest = self._local_rest(iri)
        return None if rest is None else parse_path(rest)
