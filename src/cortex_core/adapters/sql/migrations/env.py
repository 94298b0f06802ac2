"""Alembic environment: migrations always run on a connection handed in by
:func:`cortex_core.adapters.sql.migrate.upgrade_to_head` (``cortex-core migrate``)."""

from alembic import context

from cortex_core.adapters.sql.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with 'cortex-core migrate', not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
