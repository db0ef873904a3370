"""Every sampler and pruner the config offers builds and drives a real (tiny) sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from cli_in_process import InProcess
from optuna.trial import TrialState

from storage import Database
from sweeps.config import SweepConfig, parse_config
from sweeps.samplers import PRUNERS, SAMPLERS, build_pruner, build_sampler
from sweeps.study import launch
from sweeps.worker import Worker
from sweeps_helpers import config

SPACE: dict[str, Any] = {
    "lr": {"low": 0.01, "high": 0.3, "log": True},
    "batch_size": 256,
    "schedule": {"constant": {}, "linear": {}},
}
GRID_SPACE: dict[str, Any] = {
    "lr": [0.05, 0.1],
    "batch_size": 256,
    "schedule": {"constant": {}, "linear": {}},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(sampler: dict[str, Any], pruner: dict[str, Any], trials: int = 4) -> SweepConfig:
    space = GRID_SPACE if sampler["name"] == "grid" else SPACE
    return parse_config(
        {
            "study": "s",
            "objective": "digits_mlp",
            "objective_args": {"hidden": 8},
            "budget": {"trials": trials, "epochs": 3},
            "sampler": sampler,
            "pruner": pruner,
            "space": space,
        }
    )


def sweep(tmp_path: Path, config: SweepConfig) -> list[optuna.trial.FrozenTrial]:
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    launch(db, config)
    assert Worker(db, "s", artifacts=tmp_path, log=lambda _: None).run() == 0
    return optuna.load_study(study_name="s", storage=db.optuna).get_trials()


SAMPLER_CONFIGS = [
    {"name": "tpe", "n_startup_trials": 2},
    {"name": "gp", "n_startup_trials": 2},
    {"name": "cmaes"},
    {"name": "random"},
    {"name": "qmc", "qmc_type": "halton"},
    {"name": "grid"},
]


def test_every_sampler_is_covered() -> None:
    names = {c["name"] for c in SAMPLER_CONFIGS}
    assert names == {cls.model_fields["name"].annotation.__args__[0] for cls in SAMPLERS}


@pytest.mark.parametrize("sampler", SAMPLER_CONFIGS, ids=lambda c: c["name"])
def test_sampler_drives_a_sweep_to_its_budget(tmp_path: Path, sampler: dict[str, Any]) -> None:
    done = sweep(tmp_path, tiny(sampler, {"name": "none"}))
    assert [t.state for t in done] == [TrialState.COMPLETE] * 4
    if sampler["name"] == "grid":
        points = {(t.params["lr"], t.params["schedule"]) for t in done}
        assert len(points) == 4  # the 2 x 2 grid, each point once


def test_samplers_are_seeded_per_worker() -> None:
    config = tiny({"name": "random", "seed": 7}, {"name": "none"})
    first = [
        build_sampler(config, 0).sample_independent(
            optuna.create_study(),
            optuna.create_study().ask(),
            "x",
            optuna.distributions.FloatDistribution(0, 1),
        )
        for _ in range(2)
    ]
    again = build_sampler(config, 0).sample_independent(
        optuna.create_study(),
        optuna.create_study().ask(),
        "x",
        optuna.distributions.FloatDistribution(0, 1),
    )
    other = build_sampler(config, 1).sample_independent(
        optuna.create_study(),
        optuna.create_study().ask(),
        "x",
        optuna.distributions.FloatDistribution(0, 1),
    )
    assert again == first[0] and other != first[0]


PRUNER_CONFIGS = [
    {"name": "none"},
    {"name": "median", "n_startup_trials": 1},
    {"name": "percentile", "percentile": 25.0, "n_startup_trials": 1},
    {"name": "successive_halving", "min_resource": 1},
    {"name": "hyperband", "min_resource": 1},
    {"name": "wilcoxon", "n_startup_steps": 1},
]


def test_every_pruner_is_covered() -> None:
    names = {c["name"] for c in PRUNER_CONFIGS}
    assert names == {cls.model_fields["name"].annotation.__args__[0] for cls in PRUNERS}


@pytest.mark.parametrize("pruner", PRUNER_CONFIGS, ids=lambda c: c["name"])
def test_pruner_runs_and_finished_trials_fill_the_budget(
    tmp_path: Path, pruner: dict[str, Any]
) -> None:
    config = tiny({"name": "random"}, pruner, trials=6)
    assert isinstance(build_pruner(config), optuna.pruners.BasePruner)
    done = sweep(tmp_path, config)
    assert len(done) == 6
    assert {t.state for t in done} <= {TrialState.COMPLETE, TrialState.PRUNED}


FAVOURS_CONSTANT = """
def objective(run):
    value = 1.0 if run.params["schedule"] == "constant" else run.params["lr"]
    run.report(value, 1)
    return value
"""
FAMILIES: dict[str, Any] = {
    "constant": {},
    "cosine": {},
    "linear": {},
    "step": {"decay_steps": 10},
    "exponential": {"decay_steps": 10, "decay_rate": 0.5},
}


def test_every_family_gets_its_minimum_and_the_summary_names_those_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TPE would spend a study on the family that wins at once; min_trials_per_family gives
    each family its trials first (round-robin), and an enqueued trial keeps its family. A
    budget too small for the minimum is named in the summary. (`sweeps launch`, `enqueue`
    and `status` in this process, and the worker they leave the study to.)"""
    (tmp_path / "samplers_favours.py").write_text(FAVOURS_CONSTANT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = InProcess(monkeypatch, capsys)
    url = f"sqlite:///{tmp_path / 's.db'}"

    def study(name: str, trials: int) -> list[optuna.trial.FrozenTrial]:
        cfg = config(
            tmp_path,
            study=name,
            objective="samplers_favours:objective",
            budget={"trials": trials, "epochs": 1},
            sampler={"name": "tpe", "seed": 0, "n_startup_trials": 1},
            min_trials_per_family=2,
            space={**SPACE, "schedule": FAMILIES},
        )
        assert cli("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
        step = '{"schedule": "step"}'
        queued = cli("enqueue", "--study", name, "--params", step, "--storage", url, cwd=tmp_path)
        assert queued.returncode == 0, queued.stderr
        db = Database(url)
        assert Worker(db, name, artifacts=tmp_path / "artifacts", log=lambda _: None).run() == 0
        db.close()
        return optuna.load_study(study_name=name, storage=url).get_trials()

    done = study("t", trials=14)
    assert done[0].params["schedule"] == "step"
    tried = {f: sum(t.params["schedule"] == f for t in done) for f in FAMILIES}
    assert min(tried.values()) >= 2, tried
    assert tried["constant"] > 2, tried  # then TPE chooses: it favours what won

    done = study("u", trials=4)
    assert {t.params["schedule"] for t in done} == {"step", "constant", "cosine", "linear"}
    status = cli("status", "--study", "u", "--storage", url, cwd=tmp_path)
    (note,) = [line for line in status.stdout.splitlines() if line.startswith("note:")]
    assert note.startswith("note: fewer than min_trials_per_family=2 finished trials in ")
    for short in ("constant (1)", "cosine (1)", "linear (1)", "step (1)", "exponential (0)"):
        assert short in note
