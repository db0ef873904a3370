"""Faults that once left a traceback or a half-created study: a launch is all or nothing, and
input past what storage, Python or memory can take is one ``error:`` line with exit 2.

In-process through `sweeps.cli.main`, on SQLite and PostgreSQL where storage is involved.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import storage
from sweeps.cli import main
from sweeps.config import MAX_GRID_POINTS, Budget, ConfigError, load_yaml, parse_config
from sweeps.study import CONFIG_ATTR, LAUNCHING_ATTR, launch, load
from sweeps_helpers import BASE, config, wait_until


def one_error(capsys: pytest.CaptureFixture[str], field: str) -> str:
    """The one stderr line, which names ``field``; nothing on stdout."""
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), err
    return lines[0]


def studies(url: str) -> list[str]:
    return optuna.get_all_study_names(storage=url)


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ({"trials": 10**30, "epochs": 3}, "budget.trials"),  # past SQLite's 64-bit INTEGER
        ({"trials": 3_000_000_000, "epochs": 3}, "budget.trials"),  # past PostgreSQL's 32
        ({"trials": 4, "epochs": 2**63}, "budget.epochs"),
    ],
)
def test_launch_with_an_integer_past_storage_exits_2_and_writes_no_study(
    tmp_path: Path,
    storage_url: str,
    capsys: pytest.CaptureFixture[str],
    budget: dict[str, int],
    field: str,
) -> None:
    storage.open_database(storage_url).close()  # the database exists; the study must not
    cfg = config(tmp_path, budget=budget)
    assert main(["launch", str(cfg), "--storage", storage_url]) == 2
    assert "2147483647" in one_error(capsys, field)
    assert studies(storage_url) == []


def test_launch_failing_after_creating_the_study_leaves_nothing(
    tmp_path: Path, storage_url: str
) -> None:
    """Storage refuses the budget (validation would have: past PostgreSQL's INTEGER and
    SQLite's); the study it had created is gone, and the name launches again."""
    good = parse_config(load_yaml(config(tmp_path)))
    refused = Budget.model_construct(**{**good.budget.model_dump(), "trials": 10**30})
    db = storage.open_database(storage_url)
    try:
        with pytest.raises(Exception):  # noqa: B017 (the driver's own, per backend)
            launch(db, good.model_copy(update={"budget": refused}))
        assert studies(storage_url) == []
        handle = launch(db, good)
        assert db.budget(handle.study_id) == (good.budget.trials, 0)
        assert load(db, good.study).config == good
    finally:
        db.close()


@pytest.fixture
def launched(tmp_path: Path) -> str:
    """A launched study's SQLite URL."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["launch", str(config(tmp_path)), "--storage", url]) == 0
    return url


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ("[" * 60_000 + "]" * 60_000, "--params"),  # past Python's recursion limit
        ('{"lr": ' + "1" * 5000 + "}", "--params"),  # past Python's 4300 digits
        ('{"lr": [[[0.1]]]}', "lr"),
    ],
    ids=["nested 60000 deep", "a 5000-digit number", "a nested value"],
)
def test_enqueue_refuses_params_python_cannot_take(
    launched: str, capsys: pytest.CaptureFixture[str], params: str, field: str
) -> None:
    capsys.readouterr()
    assert main(["enqueue", "--study", "t", "--params", params, "--storage", launched]) == 2
    one_error(capsys, field)
    assert optuna.load_study(study_name="t", storage=launched).trials == []


def test_a_worker_whose_stored_objective_is_gone_exits_2_in_one_line(
    launched: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = optuna.load_study(study_name="t", storage=launched)
    stored = study.user_attrs[CONFIG_ATTR]
    study.set_user_attr(CONFIG_ATTR, {**stored, "objective": "removed_module:objective"})
    capsys.readouterr()
    argv = ["worker", "--study", "t", "--storage", launched, "--artifacts", str(tmp_path / "a")]
    assert main(argv) == 2
    assert "removed_module" in one_error(capsys, "objective")
    assert study.trials == []


def test_a_stored_config_this_version_cannot_read_is_one_error_line(
    launched: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stored by a newer lr-sweeps, with a field this one does not know."""
    study = optuna.load_study(study_name="t", storage=launched)
    stored = study.user_attrs[CONFIG_ATTR]
    study.set_user_attr(CONFIG_ATTR, {**stored, "sampler": {"name": "random", "warm": True}})
    capsys.readouterr()
    assert main(["status", "--study", "t", "--storage", launched]) == 2
    assert "sampler.warm: unknown field" in one_error(capsys, "--study")


def test_a_study_stored_before_the_range_checks_still_reads_and_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older lr-sweeps stored seeds the config checks now refuse (a negative study seed,
    which trial seeds always wrapped; a sampler seed past numpy's): the study still loads for
    every command, and a worker finishes it."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(tmp_path, budget={"trials": 2, "epochs": 1})
    assert main(["launch", str(cfg), "--storage", url]) == 0
    study = optuna.load_study(study_name="t", storage=url)
    stored = study.user_attrs[CONFIG_ATTR]
    old = {**stored, "seed": -1, "sampler": {"name": "random", "seed": 2**40}}
    study.set_user_attr(CONFIG_ATTR, old)
    with pytest.raises(ConfigError, match="sampler.seed"):
        parse_config(old)  # refused as a new config
    capsys.readouterr()
    assert main(["status", "--study", "t", "--storage", url]) == 0
    assert "finished 0 of 2 trials" in capsys.readouterr().out
    argv = ["worker", "--study", "t", "--storage", url, "--artifacts", str(tmp_path / "a")]
    assert main(argv) == 0
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert main(["status", "--study", "t", "--storage", url]) == 0
    assert "finished 2 of 2 trials" in capsys.readouterr().out


# A grid of 100 x 13 x 3 = 3900 points, which launch queues for some seconds.
GRID = {
    "sampler": {"name": "grid", "seed": 0},
    "budget": {"trials": 3900, "epochs": 1},
    "space": {
        **BASE["space"],
        "lr": [round(0.001 * (i + 1), 3) for i in range(100)],
        "batch_size": list(range(16, 29)),
    },
}


def queued(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM trials").fetchone()[0])
        except sqlite3.OperationalError:  # no tables yet
            return 0


def test_a_launch_killed_part_way_is_replaced_by_the_next_launch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILLed while it queues a grid, a launch leaves a half-created study: no config, some
    queued trials. `launch` and `launch --resume` (what the Kubernetes launcher re-runs) each
    replace it, saying so in one line, and the study is launched whole."""
    killed = tmp_path / "killed.db"
    url = f"sqlite:///{killed}"
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "sweeps", "launch", str(config(tmp_path, "grid.yaml", **GRID))],
        cwd=tmp_path,
        env={**os.environ, "SWEEPS_STORAGE": url},
    )
    try:
        wait_until(lambda: queued(killed) > 0 or process.poll() is not None)
    finally:
        process.kill()
        process.wait()
    assert 0 < queued(killed) < 3900, "the launch was not killed while queueing"
    study = optuna.load_study(study_name="t", storage=url)
    assert CONFIG_ATTR not in study.user_attrs
    copy = tmp_path / "copy.db"
    with (
        contextlib.closing(sqlite3.connect(killed)) as a,
        contextlib.closing(sqlite3.connect(copy)) as b,
    ):
        a.backup(b)  # a second half-created study, WAL and all

    cfg = str(config(tmp_path))  # the sweep launched again (under another config, even)
    for path, resume in [(killed, []), (copy, ["--resume"])]:
        capsys.readouterr()
        assert main(["launch", cfg, "--storage", f"sqlite:///{path}", *resume]) == 0
        out, err = capsys.readouterr()
        assert err.splitlines() == [
            f"note: study 't' in sqlite:///{path} was left half-created by an interrupted "
            "launch; created it again"
        ]
        assert out.startswith("created study 't'")
        db = storage.open_database(f"sqlite:///{path}")
        try:
            handle = load(db, "t")
            assert handle.config == parse_config(load_yaml(Path(cfg)))
            assert handle.study.trials == []  # the grid's queue went with the half-created study
        finally:
            db.close()
        assert studies(f"sqlite:///{path}") == ["t"]


def test_a_grid_too_large_to_queue_quickly_is_refused_naming_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Launch queues a grid's points at a few hundred a second: 5100 points are refused."""
    space = {**GRID["space"], "batch_size": list(range(16, 33))}  # 100 x 17 x 3 points
    assert main(["validate", str(config(tmp_path, **{**GRID, "space": space}))]) == 2
    line = one_error(capsys, "space")
    assert f"has 5100 points, more than the {MAX_GRID_POINTS} allowed" in line


def gone_launch() -> dict[str, object]:
    """The launch mark of a launch whose process has ended, on this machine."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return {"host": socket.gethostname(), "pid": int(ended.stdout), "token": "t", "at": 0.0}


def test_a_launch_still_running_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its half-created study is refused, saying a launch runs, and stays; once that
    launch's process is gone, the next launch replaces it."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=url, study_name="t")
    db = storage.open_database(url)
    try:
        study_id = db.optuna.get_study_id_from_name("t")
        running = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t", "at": 0.0}
        db.optuna.set_study_system_attr(study_id, LAUNCHING_ATTR, running)
        cfg = str(config(tmp_path))
        for resume in ([], ["--resume"]):
            assert main(["launch", cfg, "--storage", url, *resume]) == 2
            assert "is being launched right now" in one_error(capsys, "study")
        assert main(["status", "--study", "t", "--storage", url]) == 2
        assert "is being launched" in one_error(capsys, "--study")
        db.optuna.set_study_system_attr(study_id, LAUNCHING_ATTR, gone_launch())
    finally:
        db.close()
    assert main(["launch", cfg, "--storage", url]) == 0
    assert "interrupted launch; created it again" in capsys.readouterr().err


def test_a_study_launch_did_not_create_is_never_replaced(
    storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study of plain Optuna's (no config, no launch mark), and a half-created one whose
    trial a worker started, hold what a user stored: both are refused, and stay."""
    optuna.create_study(storage=storage_url, study_name="t").enqueue_trial({"lr": 0.1})
    cfg = str(config(tmp_path))
    assert main(["launch", cfg, "--storage", storage_url]) == 2
    one_error(capsys, "study")
    assert main(["launch", cfg, "--storage", storage_url, "--resume"]) == 2
    assert "was not created by 'sweeps launch'" in one_error(capsys, "study")

    db = storage.open_database(storage_url)
    try:
        study_id = db.optuna.get_study_id_from_name("t")
        db.optuna.set_study_system_attr(study_id, LAUNCHING_ATTR, gone_launch())
        assert main(["status", "--study", "t", "--storage", storage_url]) == 2
        assert "interrupted launch; run 'sweeps launch' again" in one_error(capsys, "--study")
        optuna.load_study(study_name="t", storage=storage_url).ask()  # a started trial
        assert main(["launch", cfg, "--storage", storage_url, "--resume"]) == 2
        one_error(capsys, "study")
        assert len(optuna.load_study(study_name="t", storage=storage_url).trials) == 1
    finally:
        db.close()


@pytest.mark.parametrize(
    "url", ["postgresql+nosuch://user:secret@127.0.0.1/db", "sqlite+nosuch:///secret.db"]
)
def test_a_storage_url_with_a_driver_that_is_not_there_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    assert main(["launch", str(config(tmp_path)), "--storage", url]) == 2
    assert "no driver 'nosuch'" in one_error(capsys, "--storage")


def test_validate_reads_a_device_no_further_than_the_size_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "/dev/zero"]) == 2
    one_error(capsys, "/dev/zero")
