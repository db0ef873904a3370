"""Alembic environment for lr-sweeps' tables; run through `storage.schema.upgrade`."""

from alembic import context

from storage.schema import VERSION_TABLE
from storage.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    # Optuna's tables share the database; autogenerate must leave them alone.
    include_name=lambda name, type_, _parent: type_ != "table" or str(name).startswith("sweeps_"),
)
with context.begin_transaction():
    context.run_migrations()
