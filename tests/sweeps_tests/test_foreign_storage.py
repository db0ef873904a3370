"""A storage that no wait can make usable is one error line and exit 2 at once: another
program's SQLite file, a text file, a folder, a missing folder, a wrong password. Nothing is
retried, and nothing is written to a file that was not already a study database."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import storage
from sweeps.cli import main
from sweeps_helpers import config

# Commands that open a study database that must already be there, and those that make one.
READING = {
    "status": ["status", "--study", "t"],
    "export": ["export", "--study", "t", "--out", "{tmp}/t.csv"],
    "report": ["report", "--study", "t", "--out", "{tmp}/report"],
    "dashboard": ["dashboard", "--port", "1"],  # refused before it would listen
    "worker": ["worker", "--study", "t"],
}
CREATING = {
    "launch": ["launch", "{config}"],
    "run": ["run", "{config}"],
}


def foreign_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as db:  # another program's "studies"
        db.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, title TEXT)")
        db.execute("INSERT INTO studies (title) VALUES ('not a sweep')")
    db.close()


# What the file at the --storage path is, and the error that names it (URL: the --storage).
NOT_STUDY_DATABASES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "foreign SQLite": (foreign_sqlite, "{url} is not a study database (it has tables: studies)"),
    "text": (lambda p: p.write_text("hello\n"), "{url} is not an SQLite database file"),
    "folder": (Path.mkdir, "{url}: {path} is a folder, not a database file"),
}


@pytest.fixture(autouse=True)
def short_retry_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long enough that a retried error would log its retries, short enough that such a
    regression still ends."""
    monkeypatch.setenv("SWEEPS_DB_RETRY_SECONDS", "3")


def refused(argv: list[str], capsys: Any, caplog: Any) -> str:
    """Run ``sweeps ARGV`` in this process; it must exit 2 without a single retry. Returns
    its one line of stderr."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sweeps.storage"):
        code = main(argv)
    err = capsys.readouterr().err
    assert [r.getMessage() for r in caplog.records if "retry" in r.getMessage()] == []
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


def argv_for(command: list[str], tmp: Path, url: str) -> list[str]:
    cfg = str(config(tmp))
    return [a.format(tmp=tmp, config=cfg) for a in command] + ["--storage", url]


def snapshot(path: Path) -> object:
    """What is at ``path`` and beside it: a file's bytes, a folder's entries."""
    if path.is_dir():
        return sorted(p.name for p in path.iterdir())
    return path.read_bytes() if path.exists() else None


def beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


@pytest.mark.parametrize("kind", NOT_STUDY_DATABASES)
@pytest.mark.parametrize("command", [*READING, *CREATING])
def test_a_file_that_is_not_a_study_database_is_refused_untouched(
    tmp_path: Path, command: str, kind: str, capsys: Any, caplog: Any
) -> None:
    make, message = NOT_STUDY_DATABASES[kind]
    path = tmp_path / "sweeps.db"
    make(path)
    url = f"sqlite:///{path}"
    before = snapshot(path)
    argv = argv_for({**READING, **CREATING}[command], tmp_path, url)

    err = refused(argv, capsys, caplog)

    assert err == "error: --storage: " + message.format(url=url, path=path)
    assert snapshot(path) == before
    assert beside(path) == ["sweeps.db"]  # no -wal, no -shm, no -journal


@pytest.mark.parametrize("command", READING)
def test_a_command_that_reads_never_writes_an_empty_file(
    tmp_path: Path, command: str, capsys: Any, caplog: Any
) -> None:
    path = tmp_path / "sweeps.db"
    path.touch()
    url = f"sqlite:///{path}"

    err = refused(argv_for(READING[command], tmp_path, url), capsys, caplog)

    assert err == (
        f"error: --storage: {url} is not a study database (it is empty); "
        "create one with 'sweeps launch'"
    )
    assert path.read_bytes() == b""
    assert beside(path) == ["sweeps.db"]


@pytest.mark.parametrize("command", [*READING, *CREATING])
def test_a_missing_folder_is_named(tmp_path: Path, command: str, capsys: Any, caplog: Any) -> None:
    folder = tmp_path / "nonexistent-dir"
    url = f"sqlite:///{folder / 'x.db'}"

    err = refused(argv_for({**READING, **CREATING}[command], tmp_path, url), capsys, caplog)

    assert err == f"error: --storage: {url}: folder {folder} does not exist"
    assert not folder.exists()


def test_launch_still_makes_a_study_database_of_an_empty_file(tmp_path: Path, capsys: Any) -> None:
    """An empty file is what SQLite itself makes of a new database: launch may fill it, and
    the commands that read find the study in it."""
    path = tmp_path / "sweeps.db"
    path.touch()
    url = f"sqlite:///{path}"
    assert main(argv_for(CREATING["launch"], tmp_path, url)) == 0
    assert main(argv_for(READING["status"], tmp_path, url)) == 0
    assert "t" in capsys.readouterr().out


def test_a_read_only_database_is_refused_at_once(tmp_path: Path, capsys: Any, caplog: Any) -> None:
    """Opened read-only (as a read-only file would be; tests here run as root, whom file
    modes do not stop), SQLite's refusal to write is not retried."""
    path = tmp_path / "sweeps.db"
    path.touch()
    url = f"sqlite:///file:{path}?mode=ro&uri=true"

    err = refused(argv_for(CREATING["launch"], tmp_path, url), capsys, caplog)

    assert err == (
        f"error: --storage: {storage.mask_url(url)}: attempt to write a readonly database"
    )
    assert path.read_bytes() == b""


def test_a_wrong_password_is_refused_at_once_without_showing_it(
    postgres: Any, capsys: Any, caplog: Any
) -> None:
    postgres.password_role("sweeps_pw", "right-password")
    url = postgres.url().replace("postgres@", "sweeps_pw:wrong-password-7f3a@")
    for command in (READING["status"], READING["worker"]):  # a worker waits for outages
        err = refused([*command, "--storage", url], capsys, caplog)
        assert err == (
            f"error: --storage: {storage.mask_url(url)}: "
            'password authentication failed for user "sweeps_pw"'
        )
        assert "wrong-password-7f3a" not in err


def test_another_programs_studies_table_in_postgresql_is_refused_untouched(
    postgres: Any, tmp_path: Path, capsys: Any, caplog: Any
) -> None:
    """A server database may hold other programs' tables beside a study's, but not one
    named as Optuna's without the rest."""
    import sqlalchemy

    url = postgres.create_database("foreign_studies")
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE studies (id INTEGER PRIMARY KEY, title TEXT)")
    for command in (READING["status"], CREATING["launch"]):
        err = refused(argv_for(command, tmp_path, url), capsys, caplog)
        assert err == f"error: --storage: {url} is not a study database (it has tables: studies)"
    with engine.connect() as conn:
        assert sqlalchemy.inspect(conn).get_table_names() == ["studies"]
    engine.dispose()


def table_names(url: str) -> list[str]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        names = sorted(sqlalchemy.inspect(conn).get_table_names())
    engine.dispose()
    return names


@pytest.mark.parametrize("others", [False, True], ids=["empty", "other tables"])
@pytest.mark.parametrize("command", [c for c in READING if c != "worker"])
def test_a_command_that_reads_creates_nothing_in_a_postgresql_database_without_studies(
    postgres: Any, tmp_path: Path, command: str, others: bool, capsys: Any, caplog: Any
) -> None:
    url = postgres.create_database(f"no_studies_{command}_{int(others)}")
    if others:  # another program's, beside which launch would put a study database
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        engine.dispose()
    before = table_names(url)

    err = refused(argv_for(READING[command], tmp_path, url), capsys, caplog)

    holding = "it has tables: invoices" if others else "it is empty"
    assert err == (
        f"error: --storage: {url} is not a study database ({holding}); "
        "create one with 'sweeps launch'"
    )
    assert table_names(url) == before


def test_a_worker_waits_for_a_postgresql_database_without_studies_creating_nothing(
    postgres: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a cluster the workers may start before the launcher: they wait for the study
    database it makes, and give up after the retry window (here 3 s) saying why."""
    url = postgres.create_database("no_studies_worker")
    logger = logging.getLogger("sweeps.storage")  # the worker sends retries to its log:
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))  # undone after the test
    monkeypatch.setattr(logger, "propagate", logger.propagate)

    code = main(argv_for(READING["worker"], tmp_path, url))

    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert err.splitlines() == [
        f"error: --storage: {url} is not a study database (it is empty); "
        "create one with 'sweeps launch'"
    ]
    assert "storage: open the database: NoStudyDatabaseYet; retry 1" in out.splitlines()
    assert table_names(url) == []


def test_a_waiting_worker_opens_the_study_database_the_launcher_makes(
    postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from sweeps_helpers import sweeps

    monkeypatch.setenv("SWEEPS_DB_RETRY_SECONDS", "300")  # longer than a launch takes
    url = postgres.create_database("launched_while_waiting")
    waited = threading.Event()

    class FirstRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            waited.set()

    opened: list[Any] = []
    handler = FirstRetry(level=logging.WARNING)
    logger = logging.getLogger("sweeps.storage")
    logger.addHandler(handler)
    worker = threading.Thread(
        target=lambda: opened.append(storage.open_database(url, wait=True, create=False))
    )
    try:
        worker.start()
        assert waited.wait(timeout=60)  # the worker found no study database, and waits
        assert table_names(url) == []
        launched = sweeps("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path)
        assert launched.returncode == 0, launched.stderr
        worker.join()
    finally:
        logger.removeHandler(handler)
    (db,) = opened
    assert [s.study_name for s in db.optuna.get_all_studies()] == ["t"]
    db.close()
