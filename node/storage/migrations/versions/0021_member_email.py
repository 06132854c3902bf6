"""optional email: members' confirmed addresses, the reply notification choice, email links

Revision ID: 0021_member_email
Revises: 0020_password_resets
Create Date: 2026-12-06 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0021_member_email"
down_revision = "0020_password_resets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = node.storage.models.UTCDateTime()
    # Plain ADD COLUMNs, not a batch: rebuilding members on SQLite would trip over the
    # moderation log's triggers (0013).
    op.add_column("members", sa.Column("email", sa.String(length=254), nullable=True))
    op.add_column(
        "members",
        sa.Column("email_on_reply", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "email_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=10), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("used_at", when, nullable=True),
        sa.CheckConstraint(
            "purpose IN ('confirm', 'recover')", name=op.f("ck_email_tokens_purpose")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_email_tokens_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_email_tokens")),
    )
    op.create_index(op.f("ix_email_tokens_member_id"), "email_tokens", ["member_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_email_tokens_member_id"), table_name="email_tokens")
    op.drop_table("email_tokens")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("email_on_reply")
        batch.drop_column("email")
