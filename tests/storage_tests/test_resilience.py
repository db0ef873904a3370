"""Surviving outages (`storage.resilience`): the retrying Optuna storage passes Optuna's own
storage test suite on SQLite, PostgreSQL and Redis, and workers' storage calls ride out a
PostgreSQL restart."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import types
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages import BaseStorage
from optuna.testing.pytest_storages import StorageTestCase

from pg_cluster import PostgresCluster
from storage import Database, StorageError, open_database, preflight, resilience
from storage.resilience import (
    RetryingStorage,
    is_transient,
    never_connected,
    permanent_reason,
    retrying,
)
from storage.trial_slots import TrialSlots
from sweeps_helpers import rounds_around_an_outage


@pytest.fixture
def storage(storage_url: str) -> BaseStorage:
    storage = Database(storage_url).optuna
    assert isinstance(storage, RetryingStorage)
    return storage


class TestRetryingStorageIsAnOptunaStorage(StorageTestCase):
    """Every test of Optuna's suite, run on the storage workers use (the fixture above)."""


class TestTheRedisStorageIsAnOptunaStorage(StorageTestCase):
    """The same suite on what workers use for a ``redis://`` study: Optuna's journal on
    Redis, retried (`storage.redis_journal`)."""

    @pytest.fixture
    def storage(self, redis_url: str) -> BaseStorage:
        storage = open_database(redis_url).optuna
        assert isinstance(storage, RetryingStorage)
        return storage


def test_storage_calls_and_claims_ride_out_a_postgresql_restart(
    postgres: PostgresCluster,
) -> None:
    db = Database(postgres.create_database("restart"))
    study = optuna.create_study(storage=db.optuna, study_name="t")
    study_id = db.rdb.get_study_id_from_name("t")
    db.set_budget(study_id, 1000)
    slots = TrialSlots(db, study_id, retries=0)
    taken: list[int | None] = []

    def one_round() -> None:  # a worker's calls, each of which may meet the outage
        trial_id = slots.claim()
        taken.append(trial_id)
        assert trial_id is not None
        trial = optuna.Trial(study, trial_id)
        trial.report(0.5, 1)
        study.tell(trial, 1.0)
        db.add_curves(trial_id, [{"step": 0, "lr": 0.1}], [])
        assert slots.reap_stale(60.0) == []  # a worker's loop: look for lost trials
        assert slots.counts()[optuna.trial.TrialState.COMPLETE] == len(taken)

    rounds = rounds_around_an_outage(one_round, stop=postgres.stop, start=postgres.start)
    trials = study.get_trials()
    assert len(trials) == len(taken) == rounds
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.intermediate_values == {1: 0.5} for t in trials)


def test_transient_errors_are_told_apart() -> None:
    error = _raised(lambda: Database("postgresql+psycopg://u@127.0.0.1:1/x"))  # refused
    assert is_transient(error) and never_connected(error)
    lost = _operational()  # a statement was sent: it may have been stored
    assert is_transient(lost) and not never_connected(lost)
    assert not is_transient(ValueError("bad value"))


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("SELECT study_name FROM studies", "no such column: study_name"),  # a foreign schema
        ("INSERT INTO studies VALUES (2)", "attempt to write a readonly database"),
    ],
)
def test_sqlite_errors_no_wait_fixes_are_not_retried(
    tmp_path: Path, statement: str, reason: str
) -> None:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE studies (id INTEGER)")
    db.close()
    engine = sqlalchemy.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with engine.connect() as conn:
        error = _raised(lambda: conn.execute(sqlalchemy.text(statement)))
    assert permanent_reason(error) == reason
    assert not is_transient(error)
    wrapped = _raised(lambda: _raise(optuna.exceptions.StorageInternalError("x"), error))
    assert not is_transient(wrapped)  # as Optuna raises it


def test_a_locked_sqlite_database_is_still_waited_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    holder = sqlalchemy.create_engine(url).connect()
    holder.exec_driver_sql("BEGIN EXCLUSIVE")
    waiter = sqlalchemy.create_engine(url, connect_args={"timeout": 0})
    with waiter.connect() as conn:
        error = _raised(lambda: conn.exec_driver_sql("SELECT * FROM sqlite_master"))
    holder.close()
    assert "database is locked" in str(error)
    assert permanent_reason(error) is None and is_transient(error)


def _sqlite_error(name: str, message: str = "sqlite says no") -> sqlite3.Error:
    """An error as SQLite raises it with result code ``name``: most cannot be brought
    about here (a WAL file's recovery, a process out of file descriptors)."""
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = name
    error.sqlite_errorcode = getattr(sqlite3, name)
    return error


@pytest.mark.parametrize(
    ("name", "transient"),
    [
        ("SQLITE_BUSY", True),
        ("SQLITE_BUSY_SNAPSHOT", True),
        ("SQLITE_LOCKED", True),
        ("SQLITE_ERROR_RETRY", True),  # asks to be retried
        ("SQLITE_READONLY_RECOVERY", True),  # another connection recovers a WAL file
        ("SQLITE_READONLY_CANTINIT", True),  # its shared memory is being set up
        ("SQLITE_CANTOPEN", True),  # may be a process out of file descriptors
        ("SQLITE_IOERR_SHORT_READ", True),
        ("SQLITE_ERROR", False),
        ("SQLITE_READONLY", False),
        ("SQLITE_READONLY_DIRECTORY", False),
        ("SQLITE_READONLY_DBMOVED", False),
        ("SQLITE_CANTOPEN_ISDIR", False),
        ("SQLITE_CANTOPEN_FULLPATH", False),
        ("SQLITE_NOTADB", False),
        ("SQLITE_CORRUPT", False),
        ("SQLITE_CORRUPT_INDEX", False),
        ("SQLITE_PERM", False),
        ("SQLITE_AUTH", False),
    ],
)
def test_sqlite_result_codes_are_matched_exactly(name: str, transient: bool) -> None:
    error = _sqlite_error(name)
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, error)
    as_preflight_raises = _raised(
        lambda: _raise(StorageError("storage: x: sqlite says no"), error)
    )
    for seen in (error, wrapped, as_preflight_raises):
        assert is_transient(seen) is transient
    assert (permanent_reason(wrapped) is None) is transient


def test_a_locked_sqlite_file_is_waited_for_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-flight look at the file (`storage.preflight`) meets the lock first: a worker
    waits for it as for any other."""
    monkeypatch.setattr(preflight, "SQLITE_BUSY_TIMEOUT_S", 0)
    monkeypatch.setenv("SWEEPS_DB_RETRY_SECONDS", "60")  # ends a regression
    path = tmp_path / "locked.db"
    Database(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = DELETE")  # a reader must then wait for the writer
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageError) as refused:
        Database(f"sqlite:///{path}", create=False)
    assert "database is locked" in str(refused.value) and is_transient(refused.value)
    timer = threading.Timer(0.5, holder.close)  # the lock is let go while a worker waits
    timer.start()
    try:
        opened = open_database(f"sqlite:///{path}", wait=True, create=False)
    finally:
        timer.join()
    opened.close()


def _raise(error: BaseException, cause: BaseException) -> None:
    raise error from cause


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("UNAVAILABLE", True),  # a storage proxy down or restarting
        ("CANCELLED", True),  # a stopping proxy cancels what it cannot finish
        ("INTERNAL", False),  # the proxy's database call failed for good: not retried
        ("INVALID_ARGUMENT", False),
    ],
)
def test_storage_proxy_errors_are_told_apart(code: str, transient: bool) -> None:
    import grpc

    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode[code]

    assert is_transient(Failed()) is transient
    assert not never_connected(Failed())  # a proxy call may have been run


def _raised(operation: Any) -> BaseException:
    try:
        operation()
    except BaseException as e:
        return e
    raise AssertionError("no error raised")


def test_retrying_gives_up_after_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backing off with capped waits, the last attempt is the first at or past the deadline
    (on a clock of the test's own: no real time passes)."""
    monkeypatch.setenv("SWEEPS_DB_RETRY_SECONDS", "0.5")
    now = [0.0]
    clock = types.SimpleNamespace(
        monotonic=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    monkeypatch.setattr(resilience, "time", clock)
    calls: list[float] = []

    def refused() -> None:
        calls.append(now[0])
        raise optuna.exceptions.StorageInternalError("x") from _operational()

    with pytest.raises(optuna.exceptions.StorageInternalError):
        retrying(refused, what="test")
    assert len(calls) > 2 and calls[-2] < 0.5 <= calls[-1]
    waits = [b - a for a, b in itertools.pairwise(calls)]
    caps = [min(resilience.MAX_WAIT_S, resilience.FIRST_WAIT_S * 2**i) for i in range(len(waits))]
    assert all(0 <= wait <= cap for wait, cap in zip(waits, caps, strict=True))


def _operational() -> BaseException:
    import sqlalchemy

    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
