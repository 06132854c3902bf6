"""expert Q&A: a session per Q&A thread (topic, window, who scheduled it) and its experts

Revision ID: 0028_expert_qa
Revises: 0025_professionals
Create Date: 2026-12-07 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0028_expert_qa"
down_revision = "0025_professionals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qa_sessions",
        sa.Column("thread_id", sa.String(length=20), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("starts_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("ends_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("closed_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_qa_sessions_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["members.id"],
            name=op.f("fk_qa_sessions_created_by_id_members"),
        ),
        sa.PrimaryKeyConstraint("thread_id", name=op.f("pk_qa_sessions")),
    )
    op.create_index(op.f("ix_qa_sessions_ends_at"), "qa_sessions", ["ends_at"], unique=False)
    op.create_table(
        "qa_experts",
        sa.Column("thread_id", sa.String(length=20), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["qa_sessions.thread_id"],
            name=op.f("fk_qa_experts_thread_id_qa_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_qa_experts_member_id_members"),
        ),
        sa.PrimaryKeyConstraint("thread_id", "member_id", name=op.f("pk_qa_experts")),
    )


def downgrade() -> None:
    op.drop_table("qa_experts")
    op.drop_index(op.f("ix_qa_sessions_ends_at"), table_name="qa_sessions")
    op.drop_table("qa_sessions")
