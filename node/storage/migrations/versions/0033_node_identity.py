"""node identity: the name, description, contact, operator, registration mode and logo an
admin sets at /admin/settings; members awaiting an admin's approval

Revision ID: 0033_node_identity
Revises: 0032_reader_time_zone
Create Date: 2026-12-07 04:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0033_node_identity"
down_revision = "0032_reader_time_zone"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=True),
        sa.Column("operator", sa.String(length=200), nullable=True),
        sa.Column("registration", sa.String(length=10), nullable=True),
        sa.Column("logo", sa.LargeBinary(), nullable=True),
        sa.Column("logo_type", sa.String(length=20), nullable=True),
        sa.Column("logo_fingerprint", sa.String(length=16), nullable=True),
        sa.Column("updated_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "registration IN ('open', 'approval', 'closed')",
            name=op.f("ck_node_identity_registration"),
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_node_identity_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_identity")),
    )
    op.add_column(
        "members",
        sa.Column("awaiting_approval_since", node.storage.models.UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.drop_column("awaiting_approval_since")
    op.drop_table("node_identity")
