"""the federation policy: its mode, the allowed and blocked domains, and hidden remote rows

Revision ID: 0015_federation_policy
Revises: 0017_crisis_support
Create Date: 2026-12-06 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0015_federation_policy"
down_revision = "0017_crisis_support"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = node.storage.models.UTCDateTime()
    # A plain ADD COLUMN, not a batch: rebuilding these tables on SQLite would trip over the
    # moderation log's triggers (0013), which name condition_groups.
    for table in ("members", "condition_groups"):
        op.add_column(
            table,
            sa.Column("federation_hidden", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
    policy = op.create_table(
        "federation_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", when, nullable=True),
        sa.CheckConstraint("mode IN ('open', 'allowlist')", name=op.f("ck_federation_policy_mode")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_policy")),
    )
    op.bulk_insert(policy, [{"id": 1, "mode": "open", "version": 0, "updated_at": None}])
    op.create_table(
        "federation_domains",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("kind", sa.String(length=5), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.CheckConstraint("kind IN ('allow', 'block')", name=op.f("ck_federation_domains_kind")),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_federation_domains")),
    )


def downgrade() -> None:
    op.drop_table("federation_domains")
    op.drop_table("federation_policy")
    for table in ("condition_groups", "members"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("federation_hidden")
