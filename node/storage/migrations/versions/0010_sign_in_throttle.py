"""sign-in and registration throttles: attempt counters per key replace login failures

Revision ID: 0010_sign_in_throttle
Revises: 0009_tombstone_expiry
Create Date: 2026-12-06 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0010_sign_in_throttle"
down_revision = "0009_tombstone_expiry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempt_counters",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_attempt_counters")),
    )
    with op.batch_alter_table("attempt_counters") as batch:
        batch.create_index(batch.f("ix_attempt_counters_last_at"), ["last_at"], unique=False)
    # Failures counted per account alone are what let a stranger lock an owner out: dropped.
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_index(batch.f("ix_login_failures_at"))
        batch.drop_index(batch.f("ix_login_failures_address"))
        batch.drop_index(batch.f("ix_login_failures_account"))
    op.drop_table("login_failures")


def downgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=30), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("at", node.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures") as batch:
        batch.create_index(batch.f("ix_login_failures_account"), ["account"], unique=False)
        batch.create_index(batch.f("ix_login_failures_address"), ["address"], unique=False)
        batch.create_index(batch.f("ix_login_failures_at"), ["at"], unique=False)
    with op.batch_alter_table("attempt_counters") as batch:
        batch.drop_index(batch.f("ix_attempt_counters_last_at"))
    op.drop_table("attempt_counters")
