"""verified professionals: one verification per member, and the partner nodes whose
verifications are trusted

Revision ID: 0025_professionals
Revises: 0024_erasure
Create Date: 2026-12-07 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0025_professionals"
down_revision = "0024_erasure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "professional_verifications",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("verifier_domain", sa.String(length=255), server_default="", nullable=False),
        sa.Column("verified_by_id", sa.Integer(), nullable=True),
        sa.Column("verified_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.Column("expiry_announced_at", node.storage.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_professional_verifications_member_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["verified_by_id"],
            ["members.id"],
            name=op.f("fk_professional_verifications_verified_by_id_members"),
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_professional_verifications")),
    )
    op.create_table(
        "trusted_verifiers",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("created_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_trusted_verifiers")),
    )


def downgrade() -> None:
    op.drop_table("trusted_verifiers")
    op.drop_table("professional_verifications")
