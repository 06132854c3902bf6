"""tombstones say who deleted, and expire

Revision ID: 0009_tombstone_expiry
Revises: 0008_private_group_addresses
Create Date: 2026-12-06 22:40:00

A Delete of a post not here yet is kept with who sent it, so that it suppresses the post's
late Create only when that one could delete it (node/remote/deletions.py), and it is pruned
after a week. The tombstones kept before this revision do not say who deleted: they are
dropped, so a late Create of one of them that arrives after the upgrade is applied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0009_tombstone_expiry"
down_revision = "0008_private_group_addresses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("deleted_objects")
    op.create_table(
        "deleted_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ap_id", sa.String(length=2048), nullable=False),
        sa.Column("deleted_by", sa.String(length=2048), nullable=False),
        sa.Column("deleted_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deleted_objects")),
    )
    op.create_index(op.f("ix_deleted_objects_ap_id"), "deleted_objects", ["ap_id"])
    op.create_index(op.f("ix_deleted_objects_deleted_at"), "deleted_objects", ["deleted_at"])


def downgrade() -> None:
    op.drop_table("deleted_objects")
    op.create_table(
        "deleted_objects",
        sa.Column("ap_id", sa.String(length=2048), nullable=False),
        sa.Column("deleted_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("ap_id", name=op.f("pk_deleted_objects")),
    )
