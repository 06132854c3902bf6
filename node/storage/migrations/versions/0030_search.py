"""full-text search: the documents search reads, the database's own index over them, and
the rows that exist already, indexed

Revision ID: 0030_search
Revises: 0028_expert_qa
Create Date: 2026-12-07 04:40:00

SQLite: an FTS5 table over `search_documents` (external content: the text is stored once),
porter stemming over unicode61 without diacritics, kept in step by three triggers, as the FTS5
documentation describes. PostgreSQL: a generated `tsvector` column (the 'english'
configuration; the title weighs more than the body) and a GIN index on it. The marker
characters node/search.py highlights with are taken out of the text, as it does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030_search"
down_revision = "0028_expert_qa"
branch_labels = None
depends_on = None

SQLITE_INDEX = (
    """
    CREATE VIRTUAL TABLE search_index USING fts5(
        title, body, content='search_documents', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2', prefix='3'
    )
    """,
    """
    CREATE TRIGGER search_documents_insert AFTER INSERT ON search_documents BEGIN
        INSERT INTO search_index(rowid, title, body) VALUES (new.id, new.title, new.body);
    END
    """,
    """
    CREATE TRIGGER search_documents_delete AFTER DELETE ON search_documents BEGIN
        INSERT INTO search_index(search_index, rowid, title, body)
        VALUES ('delete', old.id, old.title, old.body);
    END
    """,
    """
    CREATE TRIGGER search_documents_update AFTER UPDATE ON search_documents BEGIN
        INSERT INTO search_index(search_index, rowid, title, body)
        VALUES ('delete', old.id, old.title, old.body);
        INSERT INTO search_index(rowid, title, body) VALUES (new.id, new.title, new.body);
    END
    """,
)
POSTGRESQL_INDEX = (
    """
    ALTER TABLE search_documents ADD COLUMN document tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', body), 'B')
    ) STORED
    """,
    "CREATE INDEX ix_search_documents_document ON search_documents USING gin (document)",
)
# node/search.py's highlight markers (private-use characters), never part of indexed text.
MARKERS = ("\ue000", "\ue001")


def _clean(column: str) -> str:
    return f"replace(replace({column}, :start, ''), :stop, '')"


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("post_id", sa.String(length=20), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["condition_groups.id"],
            name=op.f("fk_search_documents_group_id_condition_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_id"],
            ["posts.id"],
            name=op.f("fk_search_documents_post_id_posts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
        sa.UniqueConstraint("post_id", name=op.f("uq_search_documents_post_id")),
    )
    op.create_index(
        op.f("ix_search_documents_group_id"), "search_documents", ["group_id"], unique=False
    )
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL_INDEX if dialect == "postgresql" else SQLITE_INDEX:
        op.execute(statement)
    tags = (
        "string_agg(tag, ' ' ORDER BY tag)" if dialect == "postgresql" else "group_concat(tag, ' ')"
    )
    markers = {"start": MARKERS[0], "stop": MARKERS[1]}
    bind = op.get_bind()
    # Every group, with its tags; every post not deleted (held ones too: a search filters them
    # out while they wait, and finds them once approved).
    bind.execute(
        sa.text(
            "INSERT INTO search_documents (group_id, post_id, title, body) "
            f"SELECT g.id, NULL, {_clean('g.name')}, "
            f"{_clean('g.description')} || ' ' || COALESCE("
            f"(SELECT {tags} FROM group_conditions c WHERE c.group_id = g.id), '') "
            "FROM condition_groups g ORDER BY g.id"
        ),
        markers,
    )
    bind.execute(
        sa.text(
            "INSERT INTO search_documents (group_id, post_id, title, body) "
            f"SELECT t.group_id, p.id, "
            f"CASE WHEN p.parent_id IS NULL THEN {_clean('t.title')} ELSE '' END, "
            f"{_clean('p.source')} "
            "FROM posts p JOIN threads t ON t.id = p.thread_id "
            "WHERE p.deleted_at IS NULL ORDER BY p.created_at, p.id"
        ),
        markers,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER search_documents_{trigger}")
        op.execute("DROP TABLE search_index")
    op.drop_index(op.f("ix_search_documents_group_id"), table_name="search_documents")
    op.drop_table("search_documents")
