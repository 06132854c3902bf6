"""password reset links, and what a member's sessions page shows of each session

Revision ID: 0020_password_resets
Revises: 0015_federation_policy
Create Date: 2026-12-06 23:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0020_password_resets"
down_revision = "0015_federation_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = node.storage.models.UTCDateTime()
    op.create_table(
        "password_resets",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("used_at", when, nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_password_resets_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_password_resets")),
    )
    op.create_index(
        op.f("ix_password_resets_member_id"), "password_resets", ["member_id"], unique=False
    )
    # Plain ADD COLUMNs (no batch rebuild): existing sessions read as an unknown device,
    # last seen when they were opened.
    op.add_column(
        "web_sessions",
        sa.Column("device", sa.String(length=60), nullable=False, server_default=""),
    )
    op.add_column("web_sessions", sa.Column("last_seen_at", when, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("device")
    op.drop_index(op.f("ix_password_resets_member_id"), table_name="password_resets")
    op.drop_table("password_resets")
