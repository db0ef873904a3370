"""Shared fixtures: the throwaway PostgreSQL cluster and the storage backends every
storage-facing test runs on."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from pg_cluster import PostgresCluster, find_bindir
from redis_server import RedisServer, find_redis_server

# Keras is a test-only reference for schedule formulas; it must run on torch, not TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "torch")

_database_ids = itertools.count()


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
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sweeps.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"test_{os.getpid()}_{next(_database_ids)}")


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
