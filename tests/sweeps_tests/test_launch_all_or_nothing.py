"""Faults that once left a traceback or a half-created study: a launch is all or nothing, and
input past what storage, Python or memory can take is one ``error:`` line with exit 2.

In-process through `sweeps.cli.main`, on SQLite and PostgreSQL where storage is involved.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import storage
from sweeps.cli import main
from sweeps.config import Budget, load_yaml, parse_config
from sweeps.study import CONFIG_ATTR, launch, load
from sweeps_helpers import config


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


def test_a_stored_config_that_no_longer_validates_is_one_error_line(
    launched: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stored by an lr-sweeps that did not yet check seeds."""
    study = optuna.load_study(study_name="t", storage=launched)
    stored = study.user_attrs[CONFIG_ATTR]
    study.set_user_attr(CONFIG_ATTR, {**stored, "sampler": {"name": "random", "seed": 2**40}})
    capsys.readouterr()
    assert main(["status", "--study", "t", "--storage", launched]) == 2
    assert "sampler.seed" in one_error(capsys, "--study")


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
