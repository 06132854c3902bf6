"""crisis resources and phrases, and the admins' notices (guidelines, not medical advice)

Revision ID: 0017_crisis_support
Revises: 0013_moderation_queue
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0017_crisis_support"
down_revision = "0013_moderation_queue"
branch_labels = None
depends_on = None

# The names as they stood at this revision (0022_disclosure adds "privacy").
NOTICE_NAMES = ("guidelines", "emergency_notice")


def upgrade() -> None:
    when = node.storage.models.UTCDateTime()
    op.create_table(
        "crisis_resources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("line", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("region", sa.String(length=200), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crisis_resources")),
    )
    op.create_table(
        "crisis_phrases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phrase", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crisis_phrases")),
        sa.UniqueConstraint("phrase", name=op.f("uq_crisis_phrases_phrase")),
    )
    names = "(" + ", ".join(f"'{name}'" for name in NOTICE_NAMES) + ")"
    op.create_table(
        "node_notices",
        sa.Column("name", sa.String(length=30), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.CheckConstraint(f"name IN {names}", name=op.f("ck_node_notices_name")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_node_notices")),
    )


def downgrade() -> None:
    op.drop_table("node_notices")
    op.drop_table("crisis_phrases")
    op.drop_table("crisis_resources")
