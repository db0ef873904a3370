"""A user's own task run by real workers: stacked workers finish the budget, and a
SIGKILLed worker's trial resumes from its checkpoint with the same curve. The commands run
in process (`sweeps.cli.main`), in the study's folder; the workers they start, and the
killed one, are processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

import objectives
from storage import open_database
from storage.base import RETRY_OF, first_attempt
from storage.checkpoints import default_root
from sweeps.cli import main
from sweeps.trial_attrs import params_of
from sweeps.worker import Worker, trial_seed
from sweeps_helpers import config, study_trials, wait_until

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "shapes_task.py"
# The README's example task on fewer, smaller images: quick enough for a test. With
# SMALL_HOLD_AFTER=N set, the process's evaluations after its N-th wait until the process
# is killed: a test that kills a worker finds its first trial running, N epochs reported
# and checkpointed, however loaded the machine (the values stay the same).
SMALL = """
import os, time
import objectives
from shapes_task import ShapesTask, shapes

EVALUATIONS = [0]

class SmallShapes(ShapesTask):
    def data(self, device):
        return objectives.Split(*shapes(256, seed=1), *shapes(128, seed=2))

    def metric(self, output, target):
        EVALUATIONS[0] += 1
        while EVALUATIONS[0] > int(os.environ.get("SMALL_HOLD_AFTER", 1 << 30)):
            time.sleep(0.5)
        return super().metric(output, target)
"""
ARGS = {"width": 4, "dropout": 0.1}
SPACE = {
    "lr": {"low": 0.01, "high": 0.2, "log": True},
    "optimizer": ["sgd", "adamw"],
    "batch_size": 32,
    "schedule": {"constant": {}, "cosine": {}, "wsd": {}},
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def user_config(tmp_path: Path, **changes: object) -> Path:
    """The study's config beside the task's files in ``tmp_path``: make it the current
    folder (``monkeypatch.chdir``) to run commands in process."""
    shutil.copy(EXAMPLE, tmp_path / "shapes_task.py")
    (tmp_path / "small.py").write_text(SMALL)
    defaults: dict[str, object] = {
        "objective": "small:SmallShapes",
        "objective_args": ARGS,
        "space": SPACE,
    }
    return config(tmp_path, **(defaults | changes))


def test_a_user_task_with_batchnorm_runs_stacked_on_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = user_config(tmp_path, budget={"trials": 8, "epochs": 2})
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = main(["run", str(cfg), "--workers", "2", "--stack", "4", "--storage", url])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "cannot be stacked" not in out + err
    trials = study_trials(url)
    assert sum(t.state in FINISHED for t in trials) == 8
    assert all(len(t.intermediate_values) == 2 for t in trials)


BRANCHY = """
from torch import nn
from small import SmallShapes

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))

    def forward(self, x):
        out = self.body(x)
        return out * 2 if x.mean() > 0.5 else out  # data-dependent: vmap cannot batch it

class BranchyTask(SmallShapes):
    def model(self, args):
        return Branchy()
"""


def test_a_task_vmap_cannot_batch_is_said_in_one_line_and_trains_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each worker finds it (in its log); `sweeps run`'s console says it once."""
    cfg = user_config(tmp_path, objective="branchy:BranchyTask", budget={"trials": 4, "epochs": 1})
    (tmp_path / "branchy.py").write_text(BRANCHY)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = main(["run", str(cfg), "--workers", "2", "--stack", "4", "--storage", url])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    said = [line for line in out.splitlines() if "cannot be stacked" in line]
    assert len(said) == 1, out
    assert said[0].startswith("note: BranchyTask cannot be stacked (RuntimeError: ")
    assert said[0].endswith("; running trials one at a time")
    logs = (tmp_path / "s.db.artifacts" / "t" / "logs").glob("worker-*.log")
    assert any(said[0] in log.read_text() for log in logs)
    assert sum(t.state in FINISHED for t in study_trials(url)) == 4


def uninterrupted(trial: FrozenTrial, epochs: int) -> dict[int, float]:
    """The per-epoch values of ``trial``'s parameters trained in one go, here."""
    torch.set_num_threads(1)  # as the workers: the same sums in the same order
    sys.path.insert(0, str(Path.cwd()))
    task = objectives.resolve("small:SmallShapes")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    run = objectives.Run(
        study.ask(),
        params_of(trial),
        seed=trial_seed(0, first_attempt(trial)),
        epochs=epochs,
        args=ARGS,
    )
    task(run)
    return {e["epoch"]: e["value"] for e in run.reported}


def kill_mid_trial_then_rescue(
    tmp_path: Path, url: str, *, pause: float = 0.0
) -> tuple[FrozenTrial, int, list[str]]:
    """In the launched study at ``url``, from its folder ``tmp_path`` (the current one): a
    worker process is SIGKILLed while its first trial, 3 epochs reported, evaluates the
    4th (held there: ``SMALL_HOLD_AFTER``); ``pause`` seconds later another worker, here,
    finishes the study. The killed trial as it was, and the rescuer's exit code and log."""
    env = {**os.environ, "SWEEPS_STORAGE": url, "SMALL_HOLD_AFTER": "3"}
    worker = [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--threads", "1"]
    with (tmp_path / "victim.log").open("w") as log:
        victim = subprocess.Popen(worker, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_until(
            lambda: any(
                t.state == TrialState.RUNNING and len(t.intermediate_values) == 3
                for t in study_trials(url)
            )
        )
    finally:
        victim.kill()  # SIGKILL: no chance to clean up
        victim.wait()
    (killed,) = [t for t in study_trials(url) if t.state == TrialState.RUNNING]
    time.sleep(pause)
    torch.set_num_threads(1)  # as the killed worker: the same sums in the same order
    lines: list[str] = []
    db = open_database(url)
    try:
        code = Worker(db, "t", artifacts=default_root(url), log=lines.append).run()
    finally:
        db.close()
    return killed, code, lines


def test_a_killed_workers_user_task_trial_resumes_with_the_same_curve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs = 6
    cfg = user_config(
        tmp_path,
        budget={"trials": 2, "epochs": epochs, "retries": 2},
        heartbeat={"interval": 0.5, "grace_period": 3.0},
    )
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["launch", str(cfg), "--storage", url]) == 0
    killed, code, lines = kill_mid_trial_then_rescue(tmp_path, url)
    assert code == 0, lines
    (retry,) = [t for t in study_trials(url) if t.user_attrs.get(RETRY_OF) == killed.number]
    assert retry.state == TrialState.COMPLETE
    assert f"trial {retry.number} resumes from the checkpoint of trial {killed.number}" in lines
    assert retry.intermediate_values == uninterrupted(retry, epochs)
