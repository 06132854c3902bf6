"""reports, the moderation log, and the columns moderation acts on

Revision ID: 0012_reports_and_moderation
Revises: 0011_thread_reopened
Create Date: 2026-12-06 23:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models
from node.storage.models import REPORT_CATEGORIES, REPORT_STATES

revision = "0012_reports_and_moderation"
down_revision = "0011_thread_reopened"
branch_labels = None
depends_on = None

IRI = sa.String(length=2048)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    when = node.storage.models.UTCDateTime()
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("suspended_at", when, nullable=True))
    with op.batch_alter_table("condition_groups") as batch:
        batch.add_column(
            sa.Column(
                "posting_restricted_to_mods",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch.add_column(
            sa.Column("hold_first_posts", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("banned_until", when, nullable=True))
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("locked_at", when, nullable=True))
        batch.add_column(sa.Column("pinned_at", when, nullable=True))
    with op.batch_alter_table("posts") as batch:
        batch.add_column(sa.Column("held_at", when, nullable=True))

    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("post_id", sa.String(length=20), nullable=True),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("reporter_id", sa.Integer(), nullable=True),
        sa.Column("origin_domain", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("flag_activity_id", IRI, nullable=True),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("resolved_at", when, nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.CheckConstraint(f"category IN {_in(REPORT_CATEGORIES)}", name=op.f("ck_reports_category")),
        sa.CheckConstraint(f"state IN {_in(REPORT_STATES)}", name=op.f("ck_reports_state")),
        sa.CheckConstraint(
            "post_id IS NOT NULL OR member_id IS NOT NULL", name=op.f("ck_reports_has_target")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["condition_groups.id"],
            name=op.f("fk_reports_group_id_condition_groups"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"], ["posts.id"], name=op.f("fk_reports_post_id_posts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"],
            name=op.f("fk_reports_member_id_members"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reporter_id"], ["members.id"],
            name=op.f("fk_reports_reporter_id_members"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("flag_activity_id", name=op.f("uq_reports_flag_activity_id")),
    )  # fmt: skip
    with op.batch_alter_table("reports") as batch:
        batch.create_index(batch.f("ix_reports_group_id"), ["group_id"], unique=False)
        batch.create_index(batch.f("ix_reports_post_id"), ["post_id"], unique=False)
        batch.create_index(batch.f("ix_reports_member_id"), ["member_id"], unique=False)
        batch.create_index(batch.f("ix_reports_state"), ["state"], unique=False)

    op.create_table(
        "moderation_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=2048), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("post_id", sa.String(length=20), nullable=True),
        sa.Column("thread_id", sa.String(length=20), nullable=True),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["condition_groups.id"],
            name=op.f("fk_moderation_log_group_id_condition_groups"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["members.id"],
            name=op.f("fk_moderation_log_actor_id_members"), ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_log")),
    )  # fmt: skip
    with op.batch_alter_table("moderation_log") as batch:
        batch.create_index(batch.f("ix_moderation_log_group_id"), ["group_id"], unique=False)
        batch.create_index(batch.f("ix_moderation_log_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("moderation_log")
    op.drop_table("reports")
    with op.batch_alter_table("posts") as batch:
        batch.drop_column("held_at")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("pinned_at")
        batch.drop_column("locked_at")
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("banned_until")
    with op.batch_alter_table("condition_groups") as batch:
        batch.drop_column("hold_first_posts")
        batch.drop_column("posting_restricted_to_mods")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("suspended_at")
