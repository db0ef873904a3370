"""Shared fixtures: the throwaway PostgreSQL cluster and Redis server, and the storage
backends every storage-facing test runs on."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from cli_in_process import InProcess

from backends import Backend
from pg_cluster import PostgresCluster, find_bindir
from redis_server import RedisServer, find_redis_server

# Keras is a test-only reference for schedule formulas; it must run on torch, not TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "torch")

_database_ids = itertools.count()
# The markers that keep a test out of the inner loop (`make check`); see pyproject.toml.
SPEED_MARKERS = ("slow", "e2e")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the whole session (tests may stop and restart it).

    Skips with the reason when PostgreSQL is not installed, unless SWEEPS_REQUIRE_POSTGRES
    is set (as in CI), where a missing PostgreSQL is a failure.
    """
    bindir = find_bindir()
    if bindir is None:
        _missing("PostgreSQL binaries (initdb, pg_ctl) not found", "SWEEPS_REQUIRE_POSTGRES")
    cluster = PostgresCluster(bindir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend: the same test runs on SQLite and PostgreSQL."""
    return _sql_url(request, request.param, tmp_path)


def _sql_url(request: pytest.FixtureRequest, dialect: str, tmp_path: Path) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'sweeps.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"test_{os.getpid()}_{next(_database_ids)}")


@pytest.fixture(params=["sqlite", "postgresql", "redis", "proxy"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Every backend in turn: the contract's suite (`test_backends.py`) runs on each, the
    proxy serving an SQLite database."""
    from storage import open_database
    from storage.remote import serve
    from sweeps_helpers import free_port

    if request.param != "proxy":
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
        else:
            url = _sql_url(request, request.param, tmp_path)
        db = open_database(url)
        yield Backend(url, db, db)
        db.close()
        return
    database = open_database(_sql_url(request, "sqlite", tmp_path))
    port = free_port()
    server = serve(database, "127.0.0.1", port)
    url = f"grpc://127.0.0.1:{port}"
    remote = open_database(url, wait=True)
    yield Backend(url, remote, database)
    remote.close()
    server.stop(grace=None)
    database.close()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcess:
    """``cli("status", ...)``: the `sweeps` CLI run in the test's process (`cli_in_process`)."""
    return InProcess(monkeypatch, capsys)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread while a test trains in this process, as `sweeps run` gives each
    of two workers on two cores: beside the other test process, a second thread only waits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway Redis server for the whole session (tests may stop and restart it).

    Skips with the reason when ``redis-server`` is not installed, unless
    SWEEPS_REQUIRE_REDIS is set (as in CI), where a missing Redis is a failure.
    """
    binary = find_redis_server()
    if binary is None:
        _missing("redis-server not found", "SWEEPS_REQUIRE_REDIS")
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """An empty Redis for this test (the server's data is flushed first)."""
    import redis

    redis.Redis.from_url(redis_server.url()).flushall()
    return redis_server.url()


def _missing(reason: str, required_by: str) -> NoReturn:
    """Skip for a server that is not installed, or fail where ``$required_by`` says it must
    be (CI)."""
    if os.environ.get(required_by):
        pytest.fail(f"{reason}, and {required_by} is set")
    pytest.skip(reason)


# --- the suite's own time (`bench/suite_time.py`) -------------------------------------------

# node id -> [seconds of setup, call and teardown, speed markers]
_TEST_SECONDS: dict[str, tuple[float, list[str]]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--times-json",
        metavar="FILE",
        help="write each test's seconds (setup, call and teardown) and its markers to FILE",
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    seconds, _ = _TEST_SECONDS.get(report.nodeid, (0.0, []))
    markers = [name for name in SPEED_MARKERS if name in report.keywords]
    _TEST_SECONDS[report.nodeid] = (seconds + report.duration, markers)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, then e2e ones, then the rest (each group in file order): the two
    pytest-xdist processes then end together, not one waiting on a long test handed out
    last."""

    def group(item: pytest.Item) -> int:
        marked = [name for name in SPEED_MARKERS if item.get_closest_marker(name)]
        return SPEED_MARKERS.index(marked[0]) if marked else len(SPEED_MARKERS)

    items.sort(key=group)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--times-json")
    if path and not hasattr(session.config, "workerinput"):  # the controller holds them all
        Path(path).write_text(json.dumps(_TEST_SECONDS, indent=0))
