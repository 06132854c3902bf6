"""nothing that discloses a condition: profiles' opt-in group lists, groups open to search
engines, the privacy notice, and the privacy texts members consented to

Revision ID: 0022_disclosure
Revises: 0023_anonymous_posts
Create Date: 2026-12-06 23:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0022_disclosure"
down_revision = "0023_anonymous_posts"
branch_labels = None
depends_on = None

OLD_NOTICE_NAMES = ("guidelines", "emergency_notice")
NEW_NOTICE_NAMES = ("guidelines", "emergency_notice", "privacy")


def _recreate_notices(names: tuple[str, ...]) -> None:
    """node_notices again with a CHECK on `names`, its rows kept. The table holds a handful of
    rows and nothing refers to it: recreating it works alike on SQLite and PostgreSQL."""
    quoted = "(" + ", ".join(f"'{name}'" for name in names) + ")"
    op.execute("CREATE TABLE node_notices_copy AS SELECT name, body, updated_at FROM node_notices")
    op.drop_table("node_notices")
    op.create_table(
        "node_notices",
        sa.Column("name", sa.String(length=30), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.CheckConstraint(f"name IN {quoted}", name=op.f("ck_node_notices_name")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_node_notices")),
    )
    op.execute(
        "INSERT INTO node_notices (name, body, updated_at) "
        f"SELECT name, body, updated_at FROM node_notices_copy WHERE name IN {quoted}"
    )
    op.drop_table("node_notices_copy")


def upgrade() -> None:
    # Plain ADD COLUMNs, not batches: rebuilding condition_groups on SQLite would trip over the
    # moderation log's triggers (0013).
    op.add_column(
        "members",
        sa.Column("show_groups", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "condition_groups",
        sa.Column("indexable", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    _recreate_notices(NEW_NOTICE_NAMES)
    op.create_table(
        "consent_texts",
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("first_shown_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_consent_texts")),
    )


def downgrade() -> None:
    op.drop_table("consent_texts")
    _recreate_notices(OLD_NOTICE_NAMES)
    for table, column in (("condition_groups", "indexable"), ("members", "show_groups")):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
