"""posts.anonymous: a post in a private group of this node whose author pages do not name

Revision ID: 0023_anonymous_posts
Revises: 0021_member_email
Create Date: 2026-12-06 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_anonymous_posts"
down_revision = "0021_member_email"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch: rebuilding posts on SQLite would trip over the
    # moderation log's triggers (0013), as 0015 explains.
    op.add_column(
        "posts",
        sa.Column("anonymous", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("posts") as batch:
        batch.drop_column("anonymous")
