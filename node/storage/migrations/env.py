"""Alembic environment: always runs on a connection handed over by node.storage.migrate."""

from __future__ import annotations

from alembic import context

from node.storage.models import Base, in_the_models

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `healthnode migrate`, which opens the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=in_the_models,
)
with context.begin_transaction():
    context.run_migrations()
