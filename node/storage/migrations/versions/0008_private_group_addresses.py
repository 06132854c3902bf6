"""private groups get random, unguessable addresses

A private group's typed slug sat in the namespace shared by usernames and group addresses, so
registering that username or creating a group with that address answered "not available":
anyone could confirm a private group by its name. Each local private group now gets a random
address (as new private groups do, node.groups.private_slug) and its old name is freed. Old
links to it then answer as anything missing does; members find it in their own list.

Revision ID: 0008_private_group_addresses
Revises: 0007_inbox_addressed_group
Create Date: 2026-12-06 22:40:00
"""

from __future__ import annotations

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0008_private_group_addresses"
down_revision = "0007_inbox_addressed_group"
branch_labels = None
depends_on = None

# As node.groups.PRIVATE_SLUG_BYTES; a migration keeps its own copy of what it relies on.
PRIVATE_SLUG_BYTES = 15


def _private_slug() -> str:
    return base64.b32encode(secrets.token_bytes(PRIVATE_SLUG_BYTES)).decode().lower()


def upgrade() -> None:
    connection = op.get_bind()
    groups = sa.table(
        "condition_groups",
        sa.column("id", sa.Integer),
        sa.column("slug", sa.String),
        sa.column("domain", sa.String),
        sa.column("visibility", sa.String),
    )
    handles = sa.table("handles", sa.column("name", sa.String), sa.column("kind", sa.String))
    private = connection.execute(
        sa.select(groups.c.id, groups.c.slug).where(
            groups.c.domain == "", groups.c.visibility == "private"
        )
    ).all()
    for group_id, old_slug in private:
        new_slug = _private_slug()
        connection.execute(
            sa.delete(handles).where(handles.c.name == old_slug, handles.c.kind == "group")
        )
        connection.execute(sa.insert(handles).values(name=new_slug, kind="group"))
        connection.execute(sa.update(groups).where(groups.c.id == group_id).values(slug=new_slug))


def downgrade() -> None:
    """The typed names are not kept anywhere: the random addresses stay."""
