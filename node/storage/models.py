"""Database tables as typed SQLAlchemy models. Every change here needs a migration."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(30), ForeignKey("handles.name"), unique=True)
    display_name: Mapped[str] = mapped_column(String(60))
    bio: Mapped[str] = mapped_column(Text, default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10), default="member")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    consent_policy_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    __table_args__ = (CheckConstraint("role IN ('member', 'admin')", name="role"),)


class ConditionGroup(Base):
    __tablename__ = "condition_groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(30), ForeignKey("handles.name"), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[str] = mapped_column(String(10))
    join_policy: Mapped[str] = mapped_column(String(10))
    # The secret part of the link that lets a person ask to join a private group.
    join_code: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    __table_args__ = (
        CheckConstraint("visibility IN ('public', 'private')", name="visibility"),
        CheckConstraint("join_policy IN ('open', 'request', 'invite')", name="join_policy"),
        CheckConstraint(
            "(visibility = 'public' AND join_policy = 'open')"
            " OR (visibility = 'private' AND join_policy IN ('request', 'invite'))",
            name="policy_matches_visibility",
        ),
    )


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
    __table_args__ = (
        CheckConstraint("state IN ('invited', 'pending', 'active', 'banned')", name="state"),
        CheckConstraint("role IN ('member', 'moderator', 'owner')", name="role"),
    )


class Thread(Base):
    __tablename__ = "threads"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("condition_groups.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (Index("ix_threads_group_activity", "group_id", "last_activity_at"),)


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("posts.id"), nullable=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    source: Mapped[str] = mapped_column(Text)
    content_html: Mapped[str] = mapped_column(Text)
    content_warning: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


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


class WebSession(Base):
    """A signed-in browser. Only the SHA-256 of the cookie's token is stored."""

    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginFailure(Base):
    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(30), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ActorKey(Base):
    """An actor's RSA key pair; the private half is sealed with the node secret (keys/pairs.py)."""

    __tablename__ = "actor_keys"
    owner: Mapped[str] = mapped_column(String(60), primary_key=True)
    public_pem: Mapped[str] = mapped_column(Text)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
