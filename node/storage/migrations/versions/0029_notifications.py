"""notifications: what a member is told of, the kinds they turned off, and whom posts mention;
moderators' warnings (the old unread-notices counter) become notifications

Revision ID: 0029_notifications
Revises: 0033_node_identity
Create Date: 2026-12-07 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0029_notifications"
down_revision = "0033_node_identity"
branch_labels = None
depends_on = None

KINDS = (
    "reply",
    "thread_reply",
    "mention",
    "helpful",
    "join_request",
    "join_decision",
    "invitation",
    "moderation",
)
KINDS_CHECK = "kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")"


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("thread_id", sa.String(length=20), nullable=True),
        sa.Column("post_id", sa.String(length=20), nullable=True),
        sa.Column("modlog_id", sa.Integer(), nullable=True),
        sa.Column("approved", sa.Boolean(), nullable=True),
        sa.Column("created_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("read_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.Column("emailed_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.CheckConstraint(KINDS_CHECK, name=op.f("ck_notifications_kind")),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["members.id"],
            name=op.f("fk_notifications_recipient_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["members.id"],
            name=op.f("fk_notifications_actor_id_members"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["condition_groups.id"],
            name=op.f("fk_notifications_group_id_condition_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_notifications_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_notifications_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["modlog_id"],
            ["moderation_log.id"],
            name=op.f("fk_notifications_modlog_id_moderation_log"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(op.f("ix_notifications_group_id"), "notifications", ["group_id"], unique=False)
    op.create_index(
        "ix_notifications_recipient_id", "notifications", ["recipient_id", "id"], unique=False
    )
    op.create_index(
        "ix_notifications_unread", "notifications", ["recipient_id", "read_at"], unique=False
    )
    op.create_table(
        "notification_opt_outs",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.CheckConstraint(KINDS_CHECK, name=op.f("ck_notification_opt_outs_kind")),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_notification_opt_outs_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("member_id", "kind", name=op.f("pk_notification_opt_outs")),
    )
    op.create_table(
        "post_mentions",
        sa.Column("post_id", sa.String(length=20), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_post_mentions_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_post_mentions_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("post_id", "member_id", name=op.f("pk_post_mentions")),
    )
    op.create_index(
        op.f("ix_post_mentions_member_id"), "post_mentions", ["member_id"], unique=False
    )
    # Every warning a member was given becomes a notification; read already unless the
    # member had unread notices (the counter could not say which, so all of theirs stay
    # unread then).
    op.execute(
        "INSERT INTO notifications (recipient_id, kind, group_id, modlog_id, created_at, read_at) "
        "SELECT l.member_id, 'moderation', l.group_id, l.id, l.created_at, "
        "CASE WHEN m.unread_notices > 0 THEN NULL ELSE l.created_at END "
        "FROM moderation_log l JOIN members m ON m.id = l.member_id "
        "WHERE l.action = 'warn_member' AND m.domain = ''"
    )
    op.add_column(
        "members",
        sa.Column("notification_email", sa.String(length=10), nullable=False, server_default="off"),
    )
    # Email on reply was the one email notification: it becomes "immediate" for every kind.
    op.execute("UPDATE members SET notification_email = 'immediate' WHERE email_on_reply")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("unread_notices")
        batch.drop_column("email_on_reply")


def downgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(
            sa.Column("unread_notices", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("email_on_reply", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE members SET email_on_reply = (notification_email <> 'off')")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("notification_email")
    op.execute(
        "UPDATE members SET unread_notices = (SELECT count(*) FROM notifications n "
        "WHERE n.recipient_id = members.id AND n.kind = 'moderation' AND n.read_at IS NULL)"
    )
    op.drop_index(op.f("ix_post_mentions_member_id"), table_name="post_mentions")
    op.drop_table("post_mentions")
    op.drop_table("notification_opt_outs")
    op.drop_index("ix_notifications_unread", table_name="notifications")
    op.drop_index("ix_notifications_recipient_id", table_name="notifications")
    op.drop_index(op.f("ix_notifications_group_id"), table_name="notifications")
    op.drop_table("notifications")
