"""Alembic environment: migrations run on the connection ``corral.store.database.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from corral.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
