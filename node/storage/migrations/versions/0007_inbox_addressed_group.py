"""the group whose inbox an incoming activity was POSTed to

Revision ID: 0007_inbox_addressed_group
Revises: 0006_delivery_host
Create Date: 2026-12-06 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_inbox_addressed_group"
down_revision = "0006_delivery_host"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.add_column(sa.Column("addressed_group_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.drop_column("addressed_group_id")
