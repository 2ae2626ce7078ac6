"""Alembic's entry point: runs on the connection `siaga.store.upgrade` hands over (online only)."""

from __future__ import annotations

from alembic import context

from siaga.store import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Siaga's migrations run through siaga.store.upgrade(), not the alembic CLI")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: autogenerate batch operations
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
