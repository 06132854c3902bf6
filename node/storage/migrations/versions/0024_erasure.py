"""erased accounts: when a local member's account was erased (their username stays reserved)

Revision ID: 0024_erasure
Revises: 0022_disclosure
Create Date: 2026-12-06 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0024_erasure"
down_revision = "0022_disclosure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "members",
        sa.Column("erased_at", node.storage.models.UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.drop_column("erased_at")
