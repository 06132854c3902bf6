"""the moderation queue: a member's unread notices, and a moderation log the database itself
keeps append-only

Revision ID: 0013_moderation_queue
Revises: 0012_reports_and_moderation
Create Date: 2026-12-06 23:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_moderation_queue"
down_revision = "0012_reports_and_moderation"
branch_labels = None
depends_on = None

REFUSAL = "the moderation log is append-only"

# Two writes are let through, both made by the database's own foreign keys, never by a page or
# a command: erasing a member empties `actor_id` (ON DELETE SET NULL; the label stays), and
# deleting a group takes its entries with it (ON DELETE CASCADE; the group is gone by then).
SQLITE_UNCHANGED = " AND ".join(
    f"NEW.{column} IS OLD.{column}"
    for column in (
        "id", "group_id", "actor_label", "action", "post_id", "thread_id", "member_id",
        "report_id", "reason", "created_at",
    )
)  # fmt: skip
SQLITE_TRIGGERS = (
    f"""
    CREATE TRIGGER moderation_log_no_update BEFORE UPDATE ON moderation_log
    WHEN NOT (NEW.actor_id IS NULL AND {SQLITE_UNCHANGED})
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
    f"""
    CREATE TRIGGER moderation_log_no_delete BEFORE DELETE ON moderation_log
    WHEN OLD.group_id IS NULL
      OR EXISTS (SELECT 1 FROM condition_groups WHERE condition_groups.id = OLD.group_id)
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
)
POSTGRESQL_TRIGGERS = (
    f"""
    CREATE FUNCTION moderation_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND NEW.actor_id IS NULL
         AND to_jsonb(NEW) - 'actor_id' = to_jsonb(OLD) - 'actor_id' THEN
        RETURN NEW;
      END IF;
      IF TG_OP = 'DELETE' AND OLD.group_id IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM condition_groups WHERE id = OLD.group_id) THEN
        RETURN OLD;
      END IF;
      RAISE EXCEPTION '{REFUSAL}';
    END
    $$
    """,
    """
    CREATE TRIGGER moderation_log_append_only BEFORE UPDATE OR DELETE ON moderation_log
    FOR EACH ROW EXECUTE FUNCTION moderation_log_append_only()
    """,
)


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(
            sa.Column("unread_notices", sa.Integer(), nullable=False, server_default="0")
        )
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER moderation_log_append_only ON moderation_log")
        op.execute("DROP FUNCTION moderation_log_append_only()")
    else:
        op.execute("DROP TRIGGER moderation_log_no_update")
        op.execute("DROP TRIGGER moderation_log_no_delete")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("unread_notices")
