"""the receiving server of each delivery, for the circuit breaker's claim

Revision ID: 0006_delivery_host
Revises: 0005_outbox_object_type
Create Date: 2026-12-06 19:40:00
"""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0006_delivery_host"
down_revision = "0005_outbox_object_type"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(
            sa.Column("host", sa.String(length=255), server_default="", nullable=False)
        )
    deliveries = sa.table(
        "deliveries", sa.column("id", sa.Integer), sa.column("inbox_url", sa.String),
        sa.column("host", sa.String),
    )  # fmt: skip
    connection = op.get_bind()
    by_host: dict[str, list[int]] = {}
    for delivery_id, inbox_url in connection.execute(
        sa.select(deliveries.c.id, deliveries.c.inbox_url)
    ):
        by_host.setdefault(urlsplit(inbox_url).netloc.lower(), []).append(delivery_id)
    for host, ids in by_host.items():
        for start in range(0, len(ids), 500):
            connection.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids[start : start + 500]))
                .values(host=host)
            )
    op.create_index("ix_deliveries_host_state", "deliveries", ["host", "state"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_host_state", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("host")
