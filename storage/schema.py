"""Create and migrate lr-sweeps' tables with alembic, under a version table of our own."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "sweeps_alembic_version"
_MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory lock (scoped to one database) held while a process creates the schema.
_CREATION_LOCK = zlib.crc32(b"lr-sweeps schema")


def _config(connection: sqlalchemy.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: sqlalchemy.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def upgrade(engine: sqlalchemy.Engine) -> None:
    """Bring lr-sweeps' tables to the newest revision (Optuna's tables must exist first).

    Safe to call from several processes at once: a loser of the race finds the schema
    already at head.
    """
    if current(engine) == head():
        return
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), "head")
    except sqlalchemy.exc.DBAPIError:
        if current(engine) != head():
            raise


@contextlib.contextmanager
def creation_lock(engine: sqlalchemy.Engine) -> Iterator[None]:
    """Hold, on PostgreSQL, a lock that makes the processes creating a study database's
    schema take turns, until ours is at head (where there is nothing left to create, no lock
    is taken). Optuna's `RDBStorage` creates its alembic table in a transaction of its own
    after its other tables: a worker that sees those tables while the launcher is still at
    it would create the same table at once, and one of the two would fail with a duplicate
    key in ``pg_type``.
    """
    if engine.dialect.name != "postgresql" or current(engine) == head():
        yield
        return
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _CREATION_LOCK})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(
                sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _CREATION_LOCK}
            )
            conn.commit()
