"""when a moderator reopened a thread whose opening post was deleted

Revision ID: 0011_thread_reopened
Revises: 0010_sign_in_throttle
Create Date: 2026-12-06 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0011_thread_reopened"
down_revision = "0010_sign_in_throttle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("reopened_at", node.storage.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("reopened_at")
