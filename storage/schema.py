"""Create and migrate lr-sweeps' tables with alembic, under a version table of our own."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

VERSION_TABLE = "sweeps_alembic_version"
_MIGRATIONS = Path(__file__).with_name("migrations")


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
