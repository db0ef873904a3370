"""Processes that open a new PostgreSQL study database at once (a launcher and the workers
waiting for it, or several launchers) take turns creating its schema: each one opens it,
none fails on the other's half-made tables."""

from __future__ import annotations

import threading
from typing import Any

from pg_cluster import PostgresCluster
from storage import Database

OPENERS = 4  # without the lock, each such race failed here


def test_openers_racing_on_a_new_postgresql_database_all_open_it(
    postgres: PostgresCluster,
) -> None:
    url = postgres.create_database("schema_race")
    start = threading.Barrier(OPENERS)
    opened: list[Database] = []
    failed: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            opened.append(Database(url))
        except BaseException as e:  # noqa: BLE001 (the test reports every failure)
            failed.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == [], [str(e) for e in failed]
    names: list[Any] = [db.optuna.get_all_studies() for db in opened]
    assert names == [[]] * OPENERS
    for db in opened:
        db.close()
