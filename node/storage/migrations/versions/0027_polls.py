"""polls: a thread's poll, its options and its votes (one per poll, option and voter)

Revision ID: 0027_polls
Revises: 0026_partner_groups
Create Date: 2026-12-07 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0027_polls"
down_revision = "0026_partner_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "polls",
        sa.Column("thread_id", sa.String(length=20), nullable=False),
        sa.Column("multiple", sa.Boolean(), nullable=False),
        sa.Column("changeable", sa.Boolean(), nullable=False),
        sa.Column("closes_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("created_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("tallies_changed_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.Column("closing_sent_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.Column("remote_voters", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.id"],
            name=op.f("fk_polls_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("thread_id", name=op.f("pk_polls")),
    )
    op.create_index(op.f("ix_polls_closes_at"), "polls", ["closes_at"], unique=False)
    op.create_table(
        "poll_options",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.String(length=20), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("remote_count", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["polls.thread_id"],
            name=op.f("fk_poll_options_thread_id_polls"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_poll_options")),
        sa.UniqueConstraint("thread_id", "position", name="uq_poll_options_thread_position"),
    )
    op.create_index(op.f("ix_poll_options_thread_id"), "poll_options", ["thread_id"], unique=False)
    op.create_table(
        "poll_votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.String(length=20), nullable=False),
        sa.Column("option_id", sa.Integer(), nullable=False),
        sa.Column("voter_id", sa.Integer(), nullable=False),
        sa.Column("created_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("ap_id", sa.String(length=2048), nullable=True),
        sa.ForeignKeyConstraint(
            ["option_id"],
            ["poll_options.id"],
            name=op.f("fk_poll_votes_option_id_poll_options"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["polls.thread_id"],
            name=op.f("fk_poll_votes_thread_id_polls"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["voter_id"],
            ["members.id"],
            name=op.f("fk_poll_votes_voter_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_poll_votes")),
        sa.UniqueConstraint(
            "thread_id", "option_id", "voter_id", name="uq_poll_votes_thread_option_voter"
        ),
    )
    op.create_index(op.f("ix_poll_votes_thread_id"), "poll_votes", ["thread_id"], unique=False)
    op.create_index(op.f("ix_poll_votes_voter_id"), "poll_votes", ["voter_id"], unique=False)


def downgrade() -> None:
    op.drop_table("poll_votes")
    op.drop_table("poll_options")
    op.drop_index(op.f("ix_polls_closes_at"), table_name="polls")
    op.drop_table("polls")
