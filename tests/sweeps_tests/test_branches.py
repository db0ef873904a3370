"""Cooldown branches (`branches: {per_trunk: M}`, `sweeps.branches`): trials that differ only
in their cooldown share a trunk's stable phase, train only the rest, and end with the curve
the same schedule trains from scratch; in process through the commands' functions, and with
worker processes (the README's example through the CLI; a trunk whose worker is killed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import get_note
from test_user_task import SPACE as USER_SPACE
from test_user_task import kill_mid_trial_then_rescue, study_trials, uninterrupted, user_config

import objectives
from storage import Database
from storage.base import RETRY_OF
from sweeps.branches import BRANCHED_AT, STABLE_EPOCHS, TRUNK
from sweeps.cli import main
from sweeps.trial_attrs import params_of
from sweeps.worker import Worker, trial_seed
from sweeps_helpers import config, sweeps

EPOCHS = 6
SPACE = {
    "lr": {"low": 0.01, "high": 0.5, "log": True},
    "optimizer": ["sgd", "adamw"],
    "batch_size": 128,
    "schedule": {
        "wsd": {
            "warmup_steps": [0, 10],
            "decay_fraction": {"low": 0.2, "high": 0.5},  # a branch starts at epoch 3 or 4
            "decay_shape": ["linear", "cosine"],
        }
    },
}
COOLDOWN = {"wsd.decay_fraction", "wsd.decay_shape", "wsd.min_lr"}


def branched_study(
    tmp_path: Path, trials: int, capsys: pytest.CaptureFixture[str]
) -> list[FrozenTrial]:
    """A branched study launched, run by a worker, and shown by `sweeps status` and
    `sweeps report`: in process, through the functions the commands call."""
    cfg = config(
        tmp_path,
        budget={"trials": trials, "epochs": EPOCHS},
        space=SPACE,
        branches={"per_trunk": 3},
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["launch", str(cfg), "--storage", url]) == 0
    torch.set_num_threads(1)  # as `from_scratch`: the same sums in the same order
    db = Database(url)
    try:
        worker = Worker(db, "t", artifacts=tmp_path / "s.db.artifacts", log=lambda _: None)
        assert worker.run() == 0
    finally:
        db.close()
    capsys.readouterr()
    assert main(["status", "--study", "t", "--storage", url]) == 0
    status = capsys.readouterr().out
    assert "branches: " in status and " reused " in status, status
    out = tmp_path / "r"
    assert main(["report", "--study", "t", "--storage", url, "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<h2>Trunks and branches</h2>" in page and "<li>trunk 0: branches " in page
    # The trunks' kept checkpoints go once the study is over.
    assert not list(tmp_path.glob("s.db.artifacts/t/checkpoints/trunk-*"))
    study = optuna.load_study(study_name="t", storage=url)
    note = get_note(study)  # the dashboard's
    assert "## Trunks and branches" in note and "\n- trunk 0: branches " in note, note
    return study.get_trials()


STEPS = objectives.resolve("digits_mlp").steps_per_epoch(128)  # per epoch


def stable_steps(params: dict[str, Any]) -> float:
    study = optuna.create_study()
    run = objectives.Run(study.ask(), params, seed=0, epochs=EPOCHS)
    stable = run.schedule(total_steps=EPOCHS * STEPS).stable_steps
    assert stable is not None
    return stable


def from_scratch(trial: FrozenTrial, seed_of: int) -> dict[int, float]:
    """The per-epoch values of ``trial``'s parameters trained here from step 0, with the
    seed of trial ``seed_of`` (a branch's trunk)."""
    torch.set_num_threads(1)  # as the worker: the same sums in the same order
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    run = objectives.Run(
        study.ask(),
        params_of(trial),
        seed=trial_seed(0, seed_of),
        epochs=EPOCHS,
        args={"hidden": 32},
    )
    objectives.resolve("digits_mlp")(run)
    return {e["epoch"]: e["value"] for e in run.reported}


def test_branches_share_their_trunks_stable_phase_and_train_the_same_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trials = branched_study(tmp_path, 6, capsys)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6  # no pruner: all finish
    by_number = {t.number: t for t in trials}
    branches = [t for t in trials if TRUNK in t.user_attrs]
    assert len(branches) >= 4
    per_trunk: dict[int, int] = {}
    for branch in branches:
        trunk = by_number[branch.user_attrs[TRUNK]["trial"]]
        per_trunk[trunk.number] = per_trunk.get(trunk.number, 0) + 1
        assert branch.user_attrs[TRUNK]["epochs"] == trunk.user_attrs[STABLE_EPOCHS]
        # Everything but the cooldown is the trunk's; the sampler chose the cooldown.
        mine, theirs = params_of(branch), params_of(trunk)
        assert {k: v for k, v in mine.items() if k not in COOLDOWN} == {
            k: v for k, v in theirs.items() if k not in COOLDOWN
        }
        start = branch.user_attrs[BRANCHED_AT]
        assert start in trunk.user_attrs[STABLE_EPOCHS]
        assert start * STEPS <= stable_steps(mine)  # it started before its own cooldown
        for epoch in range(1, start + 1):  # the trunk's reports, up to where it branched
            assert branch.intermediate_values[epoch] == trunk.intermediate_values[epoch]
    assert max(per_trunk.values()) <= 2  # per_trunk 3: a trunk and two branches (one worker)
    # The same schedule trained from step 0, with the trunk's seed: the same curve.
    branch = max(branches, key=lambda t: t.user_attrs[BRANCHED_AT])
    assert branch.intermediate_values == from_scratch(branch, branch.user_attrs[TRUNK]["trial"])


@pytest.mark.parametrize(
    ("branches", "schedule", "message"),
    [
        (
            {"per_trunk": 3},
            {"cosine": {}},
            "error: branches: needs a family with a cooldown in space.schedule (wsd)",
        ),
        ({"per_trunk": 1}, {"wsd": {}}, "error: branches.per_trunk: "),
        ({"per_trunk": 3, "trunks": 2}, {"wsd": {}}, "error: branches.trunks: unknown field"),
    ],
)
def test_a_bad_branches_setting_is_one_line_naming_it(
    tmp_path: Path,
    branches: dict[str, Any],
    schedule: dict[str, Any],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = config(tmp_path, branches=branches, space={**SPACE, "schedule": schedule})
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_branches_are_refused_with_a_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = {**SPACE, "lr": [0.1, 0.2], "schedule": {"wsd": {"decay_fraction": [0.2, 0.4]}}}
    cfg = config(tmp_path, branches={"per_trunk": 2}, space=grid, sampler={"name": "grid"})
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: branches: not with sampler grid "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.e2e
@pytest.mark.slow
def test_the_branches_example_runs_as_the_readme_shows(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 's.db'}"
    example = "examples/digits_wsd_branches.yaml"
    result = sweeps("run", example, "--workers", "2", "--storage", url, cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "branches: " in result.stdout and " reused " in result.stdout, result.stdout
    study = optuna.load_study(study_name="digits-wsd-branches", storage=url)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 48
    assert study.best_value > 0.95  # validation accuracy on the digits


@pytest.mark.e2e
def test_a_killed_trunk_resumes_like_any_trial_and_then_takes_its_branches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs = 8  # cooldowns of 20-30 %: a trunk keeps epochs 4 to 5 (or 6)
    cfg = user_config(
        tmp_path,
        budget={"trials": 3, "epochs": epochs, "retries": 2},
        heartbeat={"interval": 0.5, "grace_period": 3.0},
        space={**USER_SPACE, "schedule": {"wsd": {"decay_fraction": {"low": 0.2, "high": 0.3}}}},
        branches={"per_trunk": 3},
    )
    monkeypatch.chdir(tmp_path)  # the task's files are here
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["launch", str(cfg), "--storage", url]) == 0
    # Killed in the trunk's stable phase; rescued past the grace period, so the rescuer
    # re-queues the trunk before it asks for a trial.
    _, code, lines = kill_mid_trial_then_rescue(tmp_path, url, pause=4)
    assert code == 0, lines
    trials = study_trials(url)
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == 0]
    assert retry.state == TrialState.COMPLETE
    kept = retry.user_attrs[STABLE_EPOCHS]
    assert kept in ([4, 5], [4, 5, 6])
    branches = [t for t in trials if TRUNK in t.user_attrs]
    assert len(branches) == 2
    for branch in branches:  # of the trunk's retry, which took the slot of the killed one
        assert branch.user_attrs[TRUNK] == {"trial": 0, "epochs": kept}
        assert branch.user_attrs[BRANCHED_AT] in kept
        assert params_of(branch)["lr"] == params_of(retry)["lr"]
    assert retry.intermediate_values == uninterrupted(retry, epochs)
