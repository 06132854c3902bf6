"""the type of an outbox activity's embedded object

Revision ID: 0005_outbox_object_type
Revises: 0004_deleted_objects
Create Date: 2026-11-28 08:40:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005_outbox_object_type"
down_revision = "0004_deleted_objects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_activities") as batch:
        batch.add_column(
            sa.Column("object_type", sa.String(length=40), server_default="", nullable=False)
        )
    # Activities published before this column existed: read the type from the stored body.
    outbox = sa.table(
        "outbox_activities",
        sa.column("id", sa.String),
        sa.column("body", sa.Text),
        sa.column("object_type", sa.String),
    )
    connection = op.get_bind()
    for activity_id, body in connection.execute(sa.select(outbox.c.id, outbox.c.body)):
        try:
            embedded = json.loads(body).get("object")
        except (ValueError, AttributeError):
            continue
        kind = embedded.get("type") if isinstance(embedded, dict) else None
        if isinstance(kind, str) and kind:
            connection.execute(
                outbox.update().where(outbox.c.id == activity_id).values(object_type=kind[:40])
            )


def downgrade() -> None:
    with op.batch_alter_table("outbox_activities") as batch:
        batch.drop_column("object_type")
