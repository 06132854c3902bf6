"""thread reads: a member's read marker in a thread, and whether they watch or mute it

Revision ID: 0031_feed
Revises: 0030_search
Create Date: 2026-12-07 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0031_feed"
down_revision = "0030_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "thread_reads",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.String(length=20), nullable=False),
        sa.Column("read_up_to", node.storage.models.UTCDateTime(), nullable=True),
        sa.Column("subscription", sa.String(length=10), nullable=True),
        sa.Column("updated_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "subscription IN ('watch', 'mute')", name=op.f("ck_thread_reads_subscription")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_thread_reads_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_thread_reads_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("member_id", "thread_id", name=op.f("pk_thread_reads")),
    )
    op.create_index(op.f("ix_thread_reads_thread_id"), "thread_reads", ["thread_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_thread_reads_thread_id"), table_name="thread_reads")
    op.drop_table("thread_reads")
