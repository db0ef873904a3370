"""Engines and URLs on every backend (SQLite and the throwaway PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy

import storage
from pg_cluster import PostgresCluster


def test_engine_round_trips_a_row(storage_url: str) -> None:
    engine = storage.create_engine(storage_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE t (x INTEGER)"))
        conn.execute(sqlalchemy.text("INSERT INTO t VALUES (42)"))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT x FROM t")).scalar_one() == 42


def test_sqlite_engine_uses_wal_and_waits_for_locks(tmp_path: object) -> None:
    engine = storage.create_engine(f"sqlite:///{tmp_path}/s.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 60_000


def test_postgres_engine_survives_a_server_restart(postgres: PostgresCluster) -> None:
    engine = storage.create_engine(postgres.create_database("restart_survival"))
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
    postgres.restart()  # every pooled connection is now dead
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 2")).scalar_one() == 2


def test_resolve_url_prefers_flag_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(storage.ENV_VAR, raising=False)
    assert storage.resolve_url(None) == "sqlite:///sweeps.db"
    monkeypatch.setenv(storage.ENV_VAR, "sqlite:///env.db")
    assert storage.resolve_url(None) == "sqlite:///env.db"
    assert storage.resolve_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_plain_postgresql_url_selects_psycopg3() -> None:
    assert storage.resolve_url("postgresql://u:pw@db:5432/s") == (
        "postgresql+psycopg://u:pw@db:5432/s"
    )


def test_redis_urls_name_a_study_in_redis() -> None:
    assert storage.resolve_url("redis://:pw@h:6379/2") == "redis://:pw@h:6379/2"
    assert storage.is_redis("rediss://h/0") and not storage.is_redis("sqlite:///x.db")
    assert storage.mask_url("redis://:s3cr3t@h:6379/0") == "redis://:***@h:6379/0"


def test_mask_url_hides_the_password() -> None:
    masked = storage.mask_url("postgresql+psycopg://sweeper:s3cr3t@db:5432/studies")
    assert masked == "postgresql+psycopg://sweeper:***@db:5432/studies"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root:s3cr3t@localhost/db", "unsupported database 'mysql'"),
        ("not a url s3cr3t", "not a database URL"),
        ("redis+sentinel://:s3cr3t@h:26379/0", "use redis://HOST:PORT/DB"),
        ("redis://:s3cr3t@h:6379/studies", "DB a number"),
        ("redis://:s3cr3t@h:99999/0", "Port out of range"),
        ("redis://:s3cr3t@h:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("postgresql+nosuch://u:s3cr3t@h/db", "no driver 'nosuch' for postgresql"),
        ("sqlite+nosuch:///sweeps.db", "no driver 'nosuch' for sqlite"),
    ],
)
def test_bad_storage_url_is_refused_without_leaking_the_password(url: str, message: str) -> None:
    with pytest.raises(storage.StorageURLError, match=message) as info:
        storage.resolve_url(url)
    assert "s3cr3t" not in str(info.value)
