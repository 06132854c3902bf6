"""partner groups: a third visibility, `partners`, and the table of a group's partner domains

Revision ID: 0026_partner_groups
Revises: 0025_professionals
Create Date: 2026-12-07 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import node.storage.models

revision = "0026_partner_groups"
down_revision = "0025_professionals"
branch_labels = None
depends_on = None

TABLE = "condition_groups"
# (constraint name, old condition, new condition)
CHECKS = (
    (
        "ck_condition_groups_visibility",
        "visibility IN ('public', 'private')",
        "visibility IN ('public', 'private', 'partners')",
    ),
    (
        "ck_condition_groups_policy_matches_visibility",
        "(visibility = 'public' AND join_policy = 'open')"
        " OR (visibility = 'private' AND join_policy IN ('request', 'invite'))",
        "(visibility = 'public' AND join_policy = 'open')"
        " OR (visibility IN ('private', 'partners') AND join_policy IN ('request', 'invite'))",
    ),
)


def _sqlite_rewrite_checks(pairs: list[tuple[str, str]]) -> None:
    """Change CHECK conditions of condition_groups in place, SQLite's documented procedure
    for loosening a constraint (sqlite.org/lang_altertable.html, section 7: writable_schema,
    then a new schema_version), inside the migration's transaction.

    Not a batch rebuild: the engine runs with foreign_keys=ON, and dropping the old table in
    a rebuild performs an implicit DELETE that cascades to memberships, threads, posts and
    every other table that references a group (and the moderation log's trigger names the
    table, as 0015 explains). Every existing row satisfies the new condition."""
    bind = op.get_bind()
    (sql,) = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).one()
    for old, new in pairs:
        if old not in sql:
            raise RuntimeError(f"{TABLE}: the CHECK {old!r} is not in the schema as expected")
        sql = sql.replace(old, new)
    (version,) = bind.exec_driver_sql("PRAGMA schema_version").one()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql, TABLE)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")
    (check,) = bind.exec_driver_sql("PRAGMA integrity_check").one()
    if check != "ok":
        raise RuntimeError(f"{TABLE}: integrity check after the CHECK change: {check}")


def _change_checks(forward: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rewrite_checks([(old, new) if forward else (new, old) for _, old, new in CHECKS])
        return
    for name, old, new in CHECKS:
        op.drop_constraint(op.f(name), TABLE, type_="check")
        op.create_check_constraint(op.f(name), TABLE, new if forward else old)


def upgrade() -> None:
    _change_checks(forward=True)
    op.create_table(
        "group_partners",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("created_at", node.storage.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["condition_groups.id"],
            name=op.f("fk_group_partners_group_id_condition_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "domain", name=op.f("pk_group_partners")),
    )


def downgrade() -> None:
    op.drop_table("group_partners")
    # A partner group becomes a private one: it stops federating, nothing is exposed.
    op.execute("UPDATE condition_groups SET visibility = 'private' WHERE visibility = 'partners'")
    _change_checks(forward=False)
