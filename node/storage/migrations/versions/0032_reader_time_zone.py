"""reader time zone: the IANA zone a member reads times in ("" = the browser's, else UTC)

Revision ID: 0032_reader_time_zone
Revises: 0031_feed
Create Date: 2026-12-07 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0032_reader_time_zone"
down_revision = "0031_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch: rebuilding members on SQLite would trip over the
    # moderation log's triggers (0013).
    op.add_column(
        "members",
        sa.Column("time_zone", sa.String(length=64), nullable=False, server_default=""),
    )


def downgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.drop_column("time_zone")
