"""Before anything is written: is this a study database, or a place where one may be made?

Opening a `Database` writes at once (an SQLite file's WAL mode, Optuna's and lr-sweeps'
tables), so what it opens is looked at first: a command that only reads never writes to what
is not already a study database, and no command turns another program's SQLite file (or a
text file, or a folder) into one. An SQLite file is read through a read-only connection,
which leaves a file that is not in WAL mode exactly as it was (no -wal/-shm files either).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from contextlib import closing
from pathlib import Path

import sqlalchemy

from storage._engine import SQLITE_BUSY_TIMEOUT_S
from storage._url import mask_url
from storage.base import NoStudyDatabaseYet, StorageError, StorageRefused
from storage.optuna_internals import models
from storage.resilience import permanent_reason

# Tables every Optuna schema has: a database holding them is a study database.
OPTUNA_CORE = frozenset({"studies", "trials", "version_info"})
OPTUNA_TABLES = frozenset(models.BaseModel.metadata.tables)
_LISTED = 4  # tables named in a refusal


def check_study_database(engine: sqlalchemy.Engine, *, create: bool) -> None:
    """Refuse, before anything is written, what ``engine`` names unless it is a study
    database (Optuna's tables) or, with ``create``, an SQLite file with no tables yet or
    not there yet (in a folder that is), or a PostgreSQL database without Optuna's tables:
    it may hold other programs' tables, and Optuna's go beside them, unless some of theirs
    are there already without the rest (another program's "studies").

    Raises:
        NoStudyDatabaseYet: without ``create``, a PostgreSQL database with none of Optuna's
            tables (empty, or another program's).
        StorageRefused: not a study database (or, without ``create``, not yet one), a
            folder instead of a file, a missing folder, an unreadable file.
    """
    url = engine.url
    where = mask_url(url.render_as_string(hide_password=False))
    if url.get_backend_name() == "sqlite":
        tables = _sqlite_tables(url, where, create=create)
        if tables is None:  # nothing on disk yet, or in memory
            return
        shared = False
    else:  # connecting writes nothing
        with engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
        shared = True
    if OPTUNA_CORE <= tables:
        return
    if not tables & OPTUNA_TABLES and (shared or not tables):
        # Nothing of Optuna's: a study database may be made here (beside a server
        # database's other tables), by a command that creates one and by nothing else.
        if create:
            return
        refusal = NoStudyDatabaseYet if shared else StorageRefused
        raise refusal(
            f"storage: {where} is not a study database ({_holding(tables)}); create one "
            "with 'sweeps launch'"
        )
    raise StorageRefused(f"storage: {where} is not a study database ({_holding(tables)})")


def _holding(tables: set[str]) -> str:
    if not tables:
        return "it is empty"
    names = ", ".join(sorted(tables)[:_LISTED]) + (", ..." if len(tables) > _LISTED else "")
    return f"it has tables: {names}"


def _sqlite_tables(url: sqlalchemy.URL, where: str, *, create: bool) -> set[str] | None:
    """The tables in the SQLite file ``url`` names, read without writing; None when there
    is no file to look at (in memory, a ``file:`` URI, or not there yet and ``create``)."""
    path = url.database
    if not path or path == ":memory:" or url.query.get("uri") not in (None, "false"):
        return None
    file = Path(path)
    if file.is_dir():
        raise StorageRefused(f"storage: {where}: {path} is a folder, not a database file")
    if not file.exists():
        folder = file.parent
        if not folder.is_dir():
            raise StorageRefused(f"storage: {where}: folder {folder} does not exist")
        if not create:
            raise StorageRefused(
                f"storage: no database at {path}; create one with 'sweeps launch'"
            )
        return None
    if not os.access(file, os.R_OK):  # SQLite's own refusal might be a passing one
        raise StorageRefused(f"storage: {where}: {path} cannot be read (permission denied)")
    if create and not os.access(file, os.W_OK):
        raise StorageRefused(f"storage: {where}: {path} is read-only")
    readonly = f"file:{urllib.parse.quote(str(file.resolve()))}?mode=ro"
    try:
        with closing(sqlite3.connect(readonly, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as e:
        if getattr(e, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise StorageRefused(f"storage: {where} is not an SQLite database file") from None
        if permanent_reason(e) is not None:
            raise StorageRefused(f"storage: {where}: {e}") from None
        raise StorageError(f"storage: {where}: {e}") from e
    return {name for (name,) in rows}
