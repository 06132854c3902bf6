"""Database tables as typed SQLAlchemy models. Every change here needs a migration."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from node.storage.states import (
    DELIVERY,
    INBOX_ITEM,
    MEMBERSHIP,
    DeliveryState,
    InboxItemState,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite keeps no zone, PostgreSQL must agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Handle(Base):
    """One namespace for member usernames and group slugs, enforced by the primary key."""

    __tablename__ = "handles"
    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    __table_args__ = (CheckConstraint("kind IN ('member', 'group')", name="kind"),)


IRI = String(2048)
LOCAL = ""  # the `domain` of rows that belong to this node


class Member(Base):
    """A person: a local account (domain "") or a remote actor known to this node."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Local usernames are claimed in `handles` first; remote ones are their preferredUsername.
    username: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(255), default=LOCAL, server_default="")
    actor_iri: Mapped[str | None] = mapped_column(IRI, nullable=True, unique=True)
    inbox_url: Mapped[str | None] = mapped_column(IRI, nullable=True)
    shared_inbox_url: Mapped[str | None] = mapped_column(IRI, nullable=True)
    profile_url: Mapped[str | None] = mapped_column(IRI, nullable=True)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    display_name: Mapped[str] = mapped_column(String(60))
    bio: Mapped[str] = mapped_column(Text, default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10), default="member")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    consent_policy_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # Whether the profile lists the member's public groups: off unless they choose it, as
    # belonging to a health group discloses a condition.
    show_groups: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # An admin suspended the account (node-wide): it cannot sign in, post or be followed.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A remote member whose server the federation policy refuses: hidden from pages and
    # collections until it is allowed again (node.federation_policy keeps this up to date).
    federation_hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A local member's confirmed email address (docs/POLICY.md, "Email (optional)"): for
    # password recovery and the notifications they chose; never shown to others, never
    # federated, never logged.
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # Whether notifications also come by email: "off", "immediate" or "daily" (a digest);
    # node.email_addresses.EMAIL_MODES checks it (no CHECK: members is not rebuilt on SQLite).
    notification_email: Mapped[str] = mapped_column(String(10), default="off", server_default="off")
    # A local account erased (node/erasure.py): nothing personal is left, and the row stays
    # only so that its username stays reserved and its tombstones keep an author.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Registered while registration needed an admin's approval, and not yet approved: the
    # account may sign in and read, but not post, join or report (docs/OPERATIONS.md).
    awaiting_approval_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The IANA zone (node/time_zones.py) pages show times in for this member; "" lets the
    # browser's zone apply when it sends one, else UTC.
    time_zone: Mapped[str] = mapped_column(String(64), default="", server_default="")
    __table_args__ = (
        CheckConstraint("role IN ('member', 'admin')", name="role"),
        UniqueConstraint("username", "domain", name="uq_members_username_domain"),
    )


class ConditionGroup(Base):
    __tablename__ = "condition_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Local slugs are claimed in `handles` first; a remote group's is its preferredUsername.
    slug: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(255), default=LOCAL, server_default="")
    actor_iri: Mapped[str | None] = mapped_column(IRI, nullable=True, unique=True)
    inbox_url: Mapped[str | None] = mapped_column(IRI, nullable=True)
    shared_inbox_url: Mapped[str | None] = mapped_column(IRI, nullable=True)
    profile_url: Mapped[str | None] = mapped_column(IRI, nullable=True)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(10))
    join_policy: Mapped[str] = mapped_column(String(10))
    # The secret part of the link that lets a person ask to join a private group.
    join_code: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Only moderators start threads (Lemmy's `postingRestrictedToMods`).
    posting_restricted_to_mods: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # A new member's first N posts wait for a moderator's approval (0: none are held).
    hold_first_posts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A remote group whose server the federation policy refuses (as Member.federation_hidden).
    federation_hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # An admin opened this public group's page and threads to search engines (noindex else).
    indexable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    __table_args__ = (
        UniqueConstraint("slug", "domain", name="uq_condition_groups_slug_domain"),
        CheckConstraint("visibility IN ('public', 'private', 'partners')", name="visibility"),
        CheckConstraint("join_policy IN ('open', 'request', 'invite')", name="join_policy"),
        CheckConstraint(
            "(visibility = 'public' AND join_policy = 'open')"
            " OR (visibility IN ('private', 'partners') AND join_policy IN ('request', 'invite'))",
            name="policy_matches_visibility",
        ),
    )


class GroupPartner(Base):
    """A partner domain of a `partners` group: a host name without a port, covering its
    subdomains, parsed as the federation policy's domains are (node/federation_policy.py).
    Only actors of these domains may fetch, follow or post into the group."""

    __tablename__ = "group_partners"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GroupCondition(Base):
    __tablename__ = "group_conditions"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)


class Membership(Base):
    __tablename__ = "memberships"
    group_id: Mapped[int] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    state: Mapped[str] = mapped_column(String(10))
    role: Mapped[str] = mapped_column(String(10), default="member")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The Follow we sent for a local member joining a remote group, to match its Accept.
    follow_activity_id: Mapped[str | None] = mapped_column(IRI, nullable=True)
    # A ban with an end: the member may join again from then on (None: until lifted).
    banned_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        CheckConstraint(MEMBERSHIP.check_constraint(), name="state"),
        CheckConstraint("role IN ('member', 'moderator', 'owner')", name="role"),
    )

    @validates("state")
    def _transition(self, _key: str, state: str) -> str:
        return MEMBERSHIP.check(self.state, state)


class Thread(Base):
    __tablename__ = "threads"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    # The IRI of a thread that another server created (its Page); ours are minted by node.ids.
    ap_id: Mapped[str | None] = mapped_column(IRI, nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A deleted opening post closes a thread to replies; a moderator may reopen it.
    reopened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A moderator locked the thread to new replies (Lemmy's `Lock`).
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A moderator pinned the thread to the top of its group (Lemmy's `stickied`, `featured`).
    pinned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (Index("ix_threads_group_activity", "group_id", "last_activity_at"),)


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("posts.id"), nullable=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    ap_id: Mapped[str | None] = mapped_column(IRI, nullable=True, unique=True)
    source: Mapped[str] = mapped_column(Text)
    content_html: Mapped[str] = mapped_column(Text)
    content_warning: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Held for a moderator's review: seen only by its author and the group's moderators, and
    # not federated until approved (which clears it).
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Posted anonymously (private groups of this node only): pages name no author; the group's
    # moderators learn who wrote it only by a logged reveal.
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


# The database's own full-text index over `search_documents` (migration 0030_search): SQLite's
# FTS5 table (and the shadow tables FTS5 keeps, named after it), PostgreSQL's generated column
# and its GIN index. Never mapped: no query writes them, `db copy` leaves them to the target.
SEARCH_INDEX_TABLE = "search_index"
SEARCH_INDEX_COLUMN = "document"
SEARCH_INDEX_GIN = "ix_search_documents_document"


def in_the_models(
    item: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's `include_object`: whether a database object is one the models describe,
    so that comparing the schema with the models leaves the search index out."""
    if type_ == "table" and name is not None:
        return name != SEARCH_INDEX_TABLE and not name.startswith(SEARCH_INDEX_TABLE + "_")
    if type_ == "column" and name == SEARCH_INDEX_COLUMN:
        return getattr(getattr(item, "table", None), "name", None) != "search_documents"
    return not (type_ == "index" and name == SEARCH_INDEX_GIN)


class SearchDocument(Base):
    """What search reads (node/search.py): a group's name, description and tags (`post_id`
    None), or a post's text with, for a thread's opening post, the thread's title.

    The full-text index over it belongs to the database and is made by migration 0030_search:
    on SQLite the FTS5 table `search_index` (porter stemming; triggers on this table keep it in
    step), on PostgreSQL the generated `tsvector` column `document` with a GIN index. Neither
    is mapped here, so `healthnode db copy` copies these rows and the target indexes them.
    Nothing about who may read is stored: a search joins the live group, thread and post rows
    and asks node/policy.py."""

    __tablename__ = "search_documents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), index=True
    )
    post_id: Mapped[str | None] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), nullable=True, unique=True
    )
    title: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")


class Reaction(Base):
    __tablename__ = "reactions"
    post_id: Mapped[str] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The Like that made a remote mark, so that its Undo can name it by id alone.
    activity_id: Mapped[str | None] = mapped_column(IRI, nullable=True, index=True)


class WebSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's token is stored."""

    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # What the member's sessions page shows: a coarse label ("Firefox on Android"), never
    # the User-Agent itself or the address; and when it was last used to change anything.
    device: Mapped[str] = mapped_column(String(60), default="", server_default="")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PasswordReset(Base):
    """A one-time link an admin made for a member to set a new password (node/accounts.py).
    Only the SHA-256 of its 256-bit token is stored."""

    __tablename__ = "password_resets"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


EMAIL_TOKEN_PURPOSES = ("confirm", "recover")


class EmailToken(Base):
    """A link sent by email: to confirm an address, or to choose a new password. Only the
    SHA-256 of the link's token is stored; each is used once."""

    __tablename__ = "email_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(10))
    # The address the link was sent to (the one to confirm).
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        CheckConstraint(
            "purpose IN (" + ", ".join(f"'{p}'" for p in EMAIL_TOKEN_PURPOSES) + ")",
            name="purpose",
        ),
    )


class AttemptCounter(Base):
    """Attempts made under one throttle key (node/throttles.py), counted before each is checked."""

    __tablename__ = "attempt_counters"
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ActorKey(Base):
    """An actor's RSA key pair; the private half is sealed with the node secret (keys/pairs.py)."""

    __tablename__ = "actor_keys"
    owner: Mapped[str] = mapped_column(String(60), primary_key=True)
    public_pem: Mapped[str] = mapped_column(Text)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RemoteKey(Base):
    """A remote actor's public key, by the keyId that signatures name."""

    __tablename__ = "remote_keys"
    key_id: Mapped[str] = mapped_column(IRI, primary_key=True)
    actor_iri: Mapped[str] = mapped_column(IRI, index=True)
    public_pem: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboxItem(Base):
    """A verified incoming activity, stored before it is processed (idempotent on its id)."""

    __tablename__ = "inbox_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    activity_id: Mapped[str] = mapped_column(IRI, unique=True)
    actor_iri: Mapped[str] = mapped_column(IRI)
    # The local group whose inbox it was POSTed to (None for the shared and other inboxes).
    addressed_group_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), default=InboxItemState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (
        CheckConstraint(INBOX_ITEM.check_constraint(), name="state"),
        Index("ix_inbox_items_state_next", "state", "next_attempt_at"),
    )

    @validates("state")
    def _transition(self, _key: str, state: str) -> str:
        return INBOX_ITEM.check(self.state, state)


class OutboxActivity(Base):
    """An activity this node published; public ones are served at their id."""

    __tablename__ = "outbox_activities"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    actor_iri: Mapped[str] = mapped_column(IRI, index=True)
    # ActorKey.owner of the key that signs its deliveries.
    signer: Mapped[str] = mapped_column(String(60))
    type: Mapped[str] = mapped_column(String(20))
    # The type of an embedded object ("" for an IRI): the group outbox lists Announces of
    # activities, not the bare Announce{Page} boosts sent for Mastodon's sake.
    object_type: Mapped[str] = mapped_column(String(40), default="", server_default="")
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def inbox_host(url: str) -> str:
    """The server an inbox belongs to (`host[:port]`, lower case): deliveries are paced,
    and their circuit kept, per server."""
    return urlsplit(url).netloc.lower()


def _host_of_inbox(context: DefaultExecutionContext) -> str:
    return inbox_host(context.get_current_parameters()["inbox_url"])


class Delivery(Base):
    """One activity to one inbox (shared inboxes collapse recipients). Its states are
    declared in states.DELIVERY: queued -> in_flight (claimed, with a lease) -> delivered |
    queued (to retry) | failed | abandoned. An in_flight row whose lease expired is claimable
    again: its worker died."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    activity_id: Mapped[str] = mapped_column(ForeignKey("outbox_activities.id", ondelete="CASCADE"))
    inbox_url: Mapped[str] = mapped_column(IRI)
    # inbox_host(inbox_url), filled in on insert: the claim skips servers whose circuit is open.
    host: Mapped[str] = mapped_column(String(255), default=_host_of_inbox, server_default="")
    state: Mapped[str] = mapped_column(String(10), default=DeliveryState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (
        CheckConstraint(DELIVERY.check_constraint(), name="state"),
        UniqueConstraint("activity_id", "inbox_url", name="uq_deliveries_activity_inbox"),
        Index("ix_deliveries_state_next", "state", "next_attempt_at"),
        Index("ix_deliveries_host_state", "host", "state"),
    )

    @validates("state")
    def _transition(self, _key: str, state: str) -> str:
        return DELIVERY.check(self.state, state)


class RemoteHost(Base):
    """Delivery health per receiving server, and its circuit breaker (federation/queue.py).

    `consecutive_failures` counts pieces of evidence, not failed deliveries: attempts that
    were in flight together count once. While `circuit_open_until` is in the future nothing
    is sent to the host (a probe in flight holds it there); once it has passed, the circuit
    is half open and one probe delivery goes.
    """

    __tablename__ = "remote_hosts"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    circuit_open_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeletedObject(Base):
    """A Delete of a remote post that had not reached this node, and who sent it: a late
    Create of the post is not applied when that one could delete it (its author, or its
    group or a moderator of it). Kept for node.remote.deletions.TOMBSTONES_KEPT."""

    __tablename__ = "deleted_objects"
    id: Mapped[int] = mapped_column(primary_key=True)
    ap_id: Mapped[str] = mapped_column(IRI, index=True)
    deleted_by: Mapped[str] = mapped_column(IRI)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


REPORT_CATEGORIES = (
    "misinformation",
    "crisis",
    "harassment",
    "spam",
    "privacy",
    "under_age",
    "other",
)
REPORT_STATES = ("open", "resolved", "dismissed")


class Report(Base):
    """A report of a post or a member, by a local member, by another server (a `Flag`, the
    reporter never named), or by the node itself (a crisis phrase)."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The group whose moderators see it; None: only the node's admins (a member reported).
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), nullable=True, index=True
    )
    post_id: Mapped[str | None] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), nullable=True, index=True
    )
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # A local reporter; None for a report from another server or from the node itself.
    reporter_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), nullable=True
    )
    # The server a `Flag` came from; LOCAL for reports made here.
    origin_domain: Mapped[str] = mapped_column(String(255), default=LOCAL, server_default="")
    flag_activity_id: Mapped[str | None] = mapped_column(IRI, nullable=True, unique=True)
    category: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(10), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What the reporter is told, in plain words, never who acted.
    outcome: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (
        CheckConstraint(
            "category IN (" + ", ".join(f"'{c}'" for c in REPORT_CATEGORIES) + ")",
            name="category",
        ),
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in REPORT_STATES) + ")", name="state"
        ),
        CheckConstraint("post_id IS NOT NULL OR member_id IS NOT NULL", name="has_target"),
    )


class ModerationLogEntry(Base):
    """One moderation action: who, what, when, why. Append-only: nothing updates or deletes
    an entry (node.modlog has no function that could)."""

    __tablename__ = "moderation_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The group it was done in; None for node-wide actions (admins).
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # The local moderator or admin who acted; None when another server's moderators did.
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), nullable=True
    )
    # Who acted, as shown in the log (a handle, or the remote actor's IRI).
    actor_label: Mapped[str] = mapped_column(String(2048))
    action: Mapped[str] = mapped_column(String(30))
    post_id: Mapped[str | None] = mapped_column(String(20), nullable=True)
    thread_id: Mapped[str | None] = mapped_column(String(20), nullable=True)
    member_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    report_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class CrisisResource(Base):
    """A place to turn in a crisis (a helpline, a text line), set by the node's admins and
    listed on the help page and beside any draft that matches a crisis phrase."""

    __tablename__ = "crisis_resources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # A phone number or a text line ("Text SHOUT to 85258"), as people should read it.
    line: Mapped[str] = mapped_column(String(200), default="")
    url: Mapped[str] = mapped_column(String(2048), default="")
    region: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CrisisPhrase(Base):
    """A phrase that, written in a post, shows the author the crisis resources and tells the
    group's moderators (node.crisis decides what matches)."""

    __tablename__ = "crisis_phrases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phrase: Mapped[str] = mapped_column(String(200), unique=True)


NOTICE_NAMES = ("guidelines", "emergency_notice", "privacy")


def _quoted(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


class NodeNotice(Base):
    """A text the admins write for everyone: the community guidelines, and the notice that
    peer support is not medical advice. A notice never written has no row."""

    __tablename__ = "node_notices"
    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (CheckConstraint(f"name IN {_quoted(NOTICE_NAMES)}", name="name"),)


class ConsentText(Base):
    """A privacy text as it stood when someone consented to it, kept by its version so a
    member can read what they agreed to after the admins have changed it."""

    __tablename__ = "consent_texts"
    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    first_shown_at: Mapped[datetime] = mapped_column(UTCDateTime)


FEDERATION_MODES = ("open", "allowlist")
FEDERATION_LIST_KINDS = ("allow", "block")


class FederationPolicyRow(Base):
    """The node's one federation policy row: its mode, and a version every change bumps, so
    that each process re-reads the domain list only when it changed."""

    __tablename__ = "federation_policy"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    mode: Mapped[str] = mapped_column(String(10), default="open")
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        CheckConstraint(
            "mode IN (" + ", ".join(f"'{m}'" for m in FEDERATION_MODES) + ")", name="mode"
        ),
    )


REGISTRATION_MODES = ("open", "approval", "closed")


class NodeIdentityRow(Base):
    """The node's one identity row (id 1), as its admins set it at /admin/settings. A NULL
    field was never set there: the configuration file's value stands (node/identity.py)."""

    __tablename__ = "node_identity"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    contact: Mapped[str | None] = mapped_column(String(200), nullable=True)
    operator: Mapped[str | None] = mapped_column(String(200), nullable=True)
    registration: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # A PNG, JPEG or WebP of at most LOGO_MAX bytes, its type, and the start of its SHA-256,
    # which names it in its URL (served with a long cache lifetime).
    logo: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    logo_type: Mapped[str | None] = mapped_column(String(20), nullable=True)
    logo_fingerprint: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        CheckConstraint(
            "registration IN (" + ", ".join(f"'{m}'" for m in REGISTRATION_MODES) + ")",
            name="registration",
        ),
        CheckConstraint("id = 1", name="one_row"),
    )


class FederationDomain(Base):
    """A server the admins allowed or blocked (a host name; it covers its subdomains)."""

    __tablename__ = "federation_domains"
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    kind: Mapped[str] = mapped_column(String(5))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in FEDERATION_LIST_KINDS) + ")", name="kind"
        ),
    )


class ProfessionalVerification(Base):
    """A member's verified professional title, vouched for by `verifier_domain`.

    Local members: an admin of this node verified them (`verifier_domain` is LOCAL). Remote
    members: the claim their own actor document carries; node/professionals.py decides how it
    is shown (only a verification by the actor's own domain counts). One row per member: a new
    verification replaces the old one, a revocation keeps the row with `revoked_at` set so that
    the Update that announces it can say so; the moderation log keeps the history.
    """

    __tablename__ = "professional_verifications"
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    title: Mapped[str] = mapped_column(String(120))
    verifier_domain: Mapped[str] = mapped_column(String(255), default=LOCAL, server_default="")
    # The admin who verified (local verifications made on a page); None from the command line.
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), nullable=True)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the actor Update announcing that a local verification expired was queued (by the
    # housekeeping worker): durable, so that a restart neither misses nor repeats one.
    expiry_announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TrustedVerifier(Base):
    """A partner node whose verifications of its own members this node's admins trust (a host
    name; it covers its subdomains, as in the federation policy)."""

    __tablename__ = "trusted_verifiers"
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QaSession(Base):
    """An expert Q&A: a thread whose opening post presents it, open to questions from its
    scheduling until `ends_at`, to answers during [starts_at, ends_at), read-only after.

    Ours are scheduled by a moderator (`created_by_id`); a remote group's Page that carries
    `startTime` and `endTime` is kept as one too, without a creator or experts (its own
    server decides who answers)."""

    __tablename__ = "qa_sessions"
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the housekeeping worker locked our Q&A's thread after its end (its `Lock` then
    # federates); replies are refused from `ends_at` on whether or not it has run.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class QaExpert(Base):
    """A verified professional named to answer in a Q&A."""

    __tablename__ = "qa_experts"
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("qa_sessions.thread_id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)


class Poll(Base):
    """A thread's poll (node/polls.py): its options are PollOption rows, its votes PollVote.

    A poll of a remote thread is a copy of its `Question`: the counts are its owner's
    (`PollOption.remote_count`, `remote_voters`), updated by the owner's `Update`s; a local
    member's own vote is kept here too, so that they see that they voted.
    """

    __tablename__ = "polls"
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True
    )
    multiple: Mapped[bool] = mapped_column(Boolean, default=False)
    # Voters may change their vote until closing (the author's choice; never for remote polls).
    changeable: Mapped[bool] = mapped_column(Boolean, default=False)
    closes_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Local polls of public groups: the counts changed since the last `Update` went out (the
    # poll worker sends one for all the votes in between, federation/polls.py).
    tallies_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Local polls of public groups: the `Update` announcing the closing was sent.
    closing_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Remote polls: the number of voters their owner published (`votersCount`).
    remote_voters: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class PollOption(Base):
    __tablename__ = "poll_options"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("polls.thread_id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    # Remote polls: the count their owner published (`replies.totalItems`).
    remote_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    __table_args__ = (
        UniqueConstraint("thread_id", "position", name="uq_poll_options_thread_position"),
    )


class PollVote(Base):
    """One voter's choice of one option. Who voted what is never shown: only counts are."""

    __tablename__ = "poll_votes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("polls.thread_id", ondelete="CASCADE"), index=True
    )
    option_id: Mapped[int] = mapped_column(ForeignKey("poll_options.id", ondelete="CASCADE"))
    voter_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A remote vote's Note, or the Note sent for a local member's vote in a remote poll.
    ap_id: Mapped[str | None] = mapped_column(IRI, nullable=True)
    __table_args__ = (
        UniqueConstraint(
            "thread_id", "option_id", "voter_id", name="uq_poll_votes_thread_option_voter"
        ),
    )


class ThreadRead(Base):
    """One member's standing in one thread (node/thread_reads.py): how far they have read
    (`read_up_to`, the newest post they were shown), and whether they watch or mute it.
    Personal: never shown to anyone else, never federated; erased with the account."""

    __tablename__ = "thread_reads"
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    thread_id: Mapped[str] = mapped_column(
        ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    read_up_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    subscription: Mapped[str | None] = mapped_column(String(10), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (CheckConstraint("subscription IN ('watch', 'mute')", name="subscription"),)


# What a member is told of (node/notifications.py); moderators' warnings are "moderation".
NOTIFICATION_KINDS = (
    "reply",
    "thread_reply",
    "mention",
    "helpful",
    "join_request",
    "join_decision",
    "invitation",
    "moderation",
)
_KINDS_CHECK = "kind IN (" + ", ".join(f"'{k}'" for k in NOTIFICATION_KINDS) + ")"


class Notification(Base):
    """One thing a local member is told of: who did what, where. The text is never copied:
    the page reads the post, thread and group as they are now, through the policy."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    # Who acted (None: a remote group's moderators, or nobody to name).
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), nullable=True
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), nullable=True, index=True
    )
    thread_id: Mapped[str | None] = mapped_column(
        ForeignKey("threads.id", ondelete="CASCADE"), nullable=True
    )
    post_id: Mapped[str | None] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), nullable=True
    )
    # A moderator's action: its log entry, whose reason the member reads.
    modlog_id: Mapped[int | None] = mapped_column(
        ForeignKey("moderation_log.id", ondelete="CASCADE"), nullable=True
    )
    # A decision on a request to join: whether it was approved.
    approved: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When an email told of it (at once, or in a daily digest); None: not yet, or never.
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        CheckConstraint(_KINDS_CHECK, name="kind"),
        Index("ix_notifications_recipient_id", "recipient_id", "id"),
        Index("ix_notifications_unread", "recipient_id", "read_at"),
    )


class NotificationOptOut(Base):
    """A kind of notification a member turned off (every kind is on until then)."""

    __tablename__ = "notification_opt_outs"
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    __table_args__ = (CheckConstraint(_KINDS_CHECK, name="kind"),)


class PostMention(Base):
    """A person a post mentions (`@name`, `@name@domain`, or a Mention tag from another
    server), resolved when the post was written."""

    __tablename__ = "post_mentions"
    post_id: Mapped[str] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True, index=True
    )
