"""SQLAlchemy engines tuned per backend."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import event

# How long a SQLite writer waits for another process's lock before failing, in seconds.
SQLITE_BUSY_TIMEOUT_S = 60


def create_engine(url: str, **kwargs: Any) -> sqlalchemy.Engine:
    """An engine for ``url``: SQLite in WAL mode with a busy timeout, so several local worker
    processes read while one writes and wait instead of failing with "database is locked";
    PostgreSQL with pre-ping, so connections dropped by a server restart are replaced."""
    if sqlalchemy.make_url(url).get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        engine = sqlalchemy.create_engine(url, **kwargs)
        tune_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sqlalchemy.create_engine(url, **kwargs)


def tune_sqlite(engine: sqlalchemy.Engine) -> None:
    """Every new connection of ``engine`` runs in WAL mode with synchronous=NORMAL: a commit
    then costs no fsync (durable against process crashes, the fault workers meet)."""
    event.listen(engine, "connect", _sqlite_pragmas)
    engine.dispose()  # connections made before this point would lack the pragmas


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
