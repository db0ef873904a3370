"""Surviving database outages: transient errors are retried with backoff and jitter.

A PostgreSQL restart, a dropped connection or a busy SQLite file raise errors that go away
by themselves. Workers retry them for up to ``$SWEEPS_DB_RETRY_SECONDS`` (default 120 s),
waiting 0.1 s, 0.2 s, ... up to 5 s between attempts, each wait drawn at random below its
cap ("full jitter") so that many workers reconnecting after a restart do not stampede.

A retried write must not store twice what the first attempt stored before its acknowledgement
was lost. Every write retried here is idempotent (an upsert, an insert that ignores
duplicates, a conditional state change, or a claim that finds its own earlier trial by its
token, `storage.trial_slots`); Optuna's two creating calls (``create_new_study``,
``create_new_trial``) are retried only when the connection could not even be opened, when
nothing can have been stored.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import optuna
import sqlalchemy
from optuna.storages import BaseStorage
from optuna.trial import TrialState

ENV_VAR = "SWEEPS_DB_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
FIRST_WAIT_S, MAX_WAIT_S = 0.1, 5.0

T = TypeVar("T")
P = ParamSpec("P")
_log = logging.getLogger("sweeps.storage")


def retry_seconds() -> float:
    """``$SWEEPS_DB_RETRY_SECONDS``, else the default.

    Raises:
        ValueError: the variable is not a number of seconds >= 0 (the message names it).
    """
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return DEFAULT_RETRY_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ValueError(f"${ENV_VAR}: must be a number of seconds >= 0, got {raw!r}")
    return seconds


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it: Optuna wraps SQLAlchemy's errors) is a lost or
    refused connection, a server shutting down, a lock timeout or a deadlock; or, for a
    worker behind a storage proxy (`storage.remote`), a proxy it cannot reach; or Redis
    unreachable or loading (`storage.redis_journal`). Never one that `permanent_reason`
    names: waiting cannot fix those."""
    seen: BaseException | None = error
    while seen is not None:
        if permanent_reason(seen) is not None:
            return False
        if _proxy_unreachable(seen) or _redis_unreachable(seen):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(seen, sqlite3.OperationalError):  # bare, as `storage.preflight` reads
            return True
        if isinstance(seen, sqlalchemy.exc.TimeoutError):  # no pooled connection in time
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# SQLite result codes (``sqlite3.Error.sqlite_errorname``, extended codes included) that no
# wait fixes, matched exactly: an extended code may say the opposite of its primary one
# (SQLITE_READONLY_RECOVERY and _CANTINIT pass once another connection has set up a WAL
# file's shared memory, SQLITE_ERROR_RETRY asks to retry, and a bare SQLITE_CANTOPEN may be
# a process out of file descriptors). Permanent: a read-only file or folder, a path that
# cannot be opened as given, not a database, a corrupt one, refused access; and
# SQLITE_ERROR, a statement the schema cannot run (a foreign "studies": "no such column").
_SQLITE_PERMANENT = frozenset(
    {
        "SQLITE_READONLY",
        "SQLITE_READONLY_ROLLBACK",
        "SQLITE_READONLY_DBMOVED",
        "SQLITE_READONLY_DIRECTORY",
        "SQLITE_CANTOPEN_ISDIR",
        "SQLITE_CANTOPEN_FULLPATH",
        "SQLITE_CANTOPEN_CONVPATH",
        "SQLITE_CANTOPEN_SYMLINK",
        "SQLITE_NOTADB",
        "SQLITE_CORRUPT",
        "SQLITE_CORRUPT_VTAB",
        "SQLITE_CORRUPT_SEQUENCE",
        "SQLITE_CORRUPT_INDEX",
        "SQLITE_PERM",
        "SQLITE_AUTH",
        "SQLITE_AUTH_USER",
        "SQLITE_ERROR",
        "SQLITE_ERROR_MISSING_COLLSEQ",
    }
)
# PostgreSQL refusing a connection for good. The server's reason reaches psycopg as the text
# of a failed connection, without an SQLSTATE.
_POSTGRES_PERMANENT = re.compile(
    r"(password authentication failed for user .*"
    r"|no pg_hba\.conf entry for .*"
    r"|role .* does not exist"
    r"|database .* does not exist"
    r"|fe_sendauth: no password supplied)"
)


def permanent_reason(error: BaseException) -> str | None:
    """Why ``error`` (a database driver's, bare or wrapped by SQLAlchemy) will recur however
    long one waits, in one line; None when it may go away (or is not a database's).

    SQLite: a read-only file, a path it cannot open, a file that is not a database, a schema
    that is not the one expected. PostgreSQL: authentication refused, a role or database
    that does not exist.
    """
    driver_error = getattr(error, "orig", None) or error
    if isinstance(driver_error, sqlite3.Error):
        name = getattr(driver_error, "sqlite_errorname", None)  # None: not SQLite's own
        message = str(driver_error)
        if name in _SQLITE_PERMANENT and "already exists" not in message:
            return message  # "already exists": a schema another process was creating
        return None
    psycopg = sys.modules.get("psycopg")  # not imported: the error cannot be one of its own
    if psycopg is not None and isinstance(driver_error, psycopg.OperationalError):
        found = _POSTGRES_PERMANENT.search(str(driver_error))
        return found.group(1).strip() if found else None
    return None


def _proxy_unreachable(error: BaseException) -> bool:
    """A storage proxy down, restarting, or stopping (which cancels the calls it cannot
    finish in its grace period): retried like a lost database connection."""
    grpc = sys.modules.get("grpc")  # not imported: the error cannot be one of its own
    if grpc is None or not isinstance(error, grpc.RpcError):
        return False
    gone = (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    return error.code() in gone


def _redis_unreachable(error: BaseException) -> bool:
    """Redis down, restarting or still loading its data, or a study lock lost
    (`storage.redis_journal`)."""
    redis = sys.modules.get("redis")  # not imported: the error cannot be one of its own
    if redis is None:
        return False
    gone = (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.BusyLoadingError,
        redis.exceptions.LockError,  # a study lock that expired mid-operation: start again
    )
    return isinstance(error, gone)


def never_connected(error: BaseException) -> bool:
    """Whether ``error`` came from opening a connection, so no statement reached the server."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.statement is None:
            return is_transient(seen)
        seen = seen.__cause__ or seen.__context__
    return False


def retrying(
    operation: Callable[[], T],
    *,
    what: str,
    retry_if: Callable[[BaseException], bool] = is_transient,
) -> T:
    """``operation()``, retried while it raises an error ``retry_if`` accepts, for up to
    `retry_seconds`; then the last error is raised."""
    deadline = time.monotonic() + retry_seconds()
    attempt = 0
    while True:
        try:
            return operation()
        except Exception as e:
            if not retry_if(e) or time.monotonic() >= deadline:
                raise
            cap = min(MAX_WAIT_S, FIRST_WAIT_S * 2**attempt)
            attempt += 1
            _log.warning("%s: %s; retry %d", what, type(e).__name__, attempt)
            time.sleep(random.uniform(0, cap))


def retried(method: Callable[P, T]) -> Callable[P, T]:
    """``method``, `retrying` itself on transient errors (it must be idempotent)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return retrying(lambda: method(*args, **kwargs), what=method.__name__)

    return wrapper


class _Retrying(BaseStorage):
    """The Optuna storage methods that need more than a plain retry."""

    def __init__(self, storage: BaseStorage) -> None:
        self.inner = storage

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.inner, name)
        retry_if = never_connected if name in _CREATING else is_transient
        return retrying(lambda: method(*args, **kwargs), what=f"storage.{name}", retry_if=retry_if)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """A retry after a lost acknowledgement finds the trial already in ``state``."""
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return bool(self.inner.set_trial_state_values(trial_id, state, values))
            except optuna.exceptions.UpdateFinishedTrialError:
                if attempts > 1 and self.inner.get_trial(trial_id).state == state:
                    return True
                raise

        return retrying(attempt, what="storage.set_trial_state_values")


_CREATING = {"create_new_study", "create_new_trial"}


def _delegate(name: str) -> Any:
    def method(self: _Retrying, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


# Every other public method of BaseStorage goes to the wrapped storage through `_call`.
RetryingStorage = type(
    "RetryingStorage",
    (_Retrying,),
    {
        "__module__": __name__,  # picklable, as Optuna storages are
        **{
            name: _delegate(name)
            for name in dir(BaseStorage)
            if not name.startswith("_") and name not in _Retrying.__dict__
        },
    },
)
RetryingStorage.__doc__ = """An Optuna storage that retries what `is_transient` on the one it
wraps (``RetryingStorage(optuna_storage)``); passes Optuna's own storage test suite."""
