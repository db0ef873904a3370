"""Shared fixtures: the throwaway PostgreSQL cluster and the storage backends every
storage-facing test runs on."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_cluster import PostgresCluster, find_bindir

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
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found"
        if os.environ.get("SWEEPS_REQUIRE_POSTGRES"):
            pytest.fail(f"{reason}, and SWEEPS_REQUIRE_POSTGRES is set")
        pytest.skip(reason)
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
