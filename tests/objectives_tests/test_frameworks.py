"""A Lightning module and an HF Trainer model swept through the CLI with one call of glue
(`objectives.lightning.fit`, `objectives.transformers.train`): two workers finish exactly
the budget with pruning, the lr each framework applied (read back from its optimizer) is
the schedule's at every step, a SIGKILLed worker's trial resumes from the framework's own
checkpoint (Lightning's loaded weights-only: a pickle put in it runs no code), and SIGTERM
hands the trial back."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import FrozenTrial, TrialState

import objectives
from storage.optuna_internals import storage_of, trial_id_of
from sweeps.trial_attrs import params_of
from sweeps_helpers import config, sweeps, wait_until

pytestmark = pytest.mark.slow
pytest.importorskip("lightning")
pytest.importorskip("transformers")

POINTS, BATCH = 96, 32  # 3 optimizer steps an epoch

# Each objective writes the (step, lr) its framework applied, read from its optimizer in
# the training step, to applied-<trial>.json; `pause` slows each epoch down to be killed.
DATA = f"""
import json, time
import torch
from torch import nn

def points():
    g = torch.Generator().manual_seed(0)
    x = torch.randn({POINTS}, 2, generator=g)
    return x, x[:, :1] * x[:, 1:]

APPLIED = []  # this trial's: a worker runs many trials

def save_applied(run):
    with open(f"applied-{{run.trial.number}}.json", "w") as f:
        json.dump(APPLIED, f)
    APPLIED.clear()
"""

LIGHTNING = (
    DATA
    + """
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from objectives.lightning import fit

class Regressor(pl.LightningModule):
    def __init__(self, width=8, pause=0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 1))

    def training_step(self, batch, _):
        APPLIED.append((self.global_step, self.optimizers().param_groups[0]["lr"]))
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_score", -nn.functional.mse_loss(self.net(x), y))
        time.sleep(self.hparams.pause)

def objective(run):
    data = TensorDataset(*points())
    try:
        return fit(run, lambda: Regressor(**run.args), monitor="val_score",
                   train_dataloaders=DataLoader(data, batch_size=run.params["batch_size"],
                                                shuffle=True),
                   val_dataloaders=DataLoader(data, batch_size=256))
    finally:
        save_applied(run)
"""
)

TRANSFORMERS = (
    DATA
    + """
import transformers
from objectives.transformers import train

class Regressor(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

class Points(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = points()
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}

class Applied(transformers.TrainerCallback):
    def __init__(self, pause):
        self.pause = pause
    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        APPLIED.append((state.global_step, optimizer.param_groups[0]["lr"]))
    def on_evaluate(self, args, state, control, **kwargs):
        time.sleep(self.pause)

def score(prediction):
    logits, labels = prediction
    return {"score": -float(((logits - labels) ** 2).mean())}

def objective(run):
    pause = run.args.pop("pause", 0.0)
    try:
        return train(run, lambda: Regressor(**run.args), monitor="score",
                     train_dataset=Points(), eval_dataset=Points(), compute_metrics=score,
                     callbacks=[Applied(pause)])
    finally:
        save_applied(run)
"""
)

FRAMEWORKS = {"lightning": LIGHTNING, "transformers": TRANSFORMERS}
SPACE = {
    "lr": {"low": 1e-3, "high": 0.2, "log": True},
    "optimizer": "sgd",
    "batch_size": BATCH,
    "schedule": {"cosine": {"warmup_steps": 2}, "step": {"decay_steps": 4}, "linear": {}},
}
EPOCHS = 4


def study_config(tmp_path: Path, framework: str, **changes: object) -> Path:
    (tmp_path / "model.py").write_text(FRAMEWORKS[framework])
    defaults = {"objective_args": {"width": 8}, "budget": {"trials": 6, "epochs": EPOCHS}}
    return config(tmp_path, objective="model:objective", space=SPACE, **(defaults | changes))


def applied_matches_the_schedule(tmp_path: Path, trial: FrozenTrial) -> None:
    applied = json.loads((tmp_path / f"applied-{trial.number}.json").read_text())
    assert applied, f"trial {trial.number} trained no step"
    run = objectives.Run(None, params_of(trial), seed=0, epochs=EPOCHS)  # type: ignore[arg-type]
    schedule = run.schedule(total_steps=EPOCHS * POINTS // BATCH)
    for step, lr in applied:
        assert lr == pytest.approx(schedule.lr_at(step), rel=1e-12, abs=1e-15), step


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_workers_sweep_exactly_the_budget_with_pruning(tmp_path: Path, framework: str) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = study_config(
        tmp_path,
        framework,
        pruner={"name": "percentile", "percentile": 50.0, "n_startup_trials": 1},
    )
    assert sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    # Two good trials first; the rest barely learn and fall below the percentile at once.
    good, bad = {"lr": 0.2, "schedule": "cosine"}, {"lr": 1e-3, "schedule": "linear"}
    for params in (good, good, bad, bad, bad, bad):
        queued = sweeps(
            "enqueue",
            "--study",
            "t",
            "--params",
            json.dumps(params),
            "--storage",
            url,
            cwd=tmp_path,
        )
        assert queued.returncode == 0, queued.stderr
    result = sweeps("run", str(cfg), "--workers", "2", "--resume", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    done = optuna.load_study(study_name="t", storage=url).get_trials()
    states = [t.state for t in done]
    assert len(done) == 6
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    assert TrialState.PRUNED in states, [t.intermediate_values for t in done]
    dashboard = tmp_path / "s.db.artifacts" / "dashboard"
    storage = storage_of(optuna.load_study(study_name="t", storage=url))
    engine = sqlalchemy.create_engine(url)
    for t in done:
        applied_matches_the_schedule(tmp_path, t)
        # Its curves: every step's lr and loss in SQL, and the dashboard's artifacts.
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT step, lr, train_loss FROM sweeps_curve_steps WHERE trial_id = :t"
                ),
                {"t": trial_id_of(t)},
            ).all()
        applied = dict(json.loads((tmp_path / f"applied-{t.number}.json").read_text()))
        assert {step: lr for step, lr, _ in rows} == pytest.approx(applied)
        assert all(loss is not None and loss >= 0 for _, _, loss in rows)
        metas = {m.filename: m for m in get_all_artifact_meta(t, storage=storage)}
        svg = metas[f"trial-{t.number}-curves.svg"]
        assert (dashboard / svg.artifact_id).stat().st_size > 0  # what optuna-dashboard serves
        if t.state == TrialState.COMPLETE:
            assert len(t.intermediate_values) == EPOCHS
        else:  # pruned after an epoch, before the last: the framework stopped there
            assert len(t.intermediate_values) < EPOCHS
            assert len(json.loads((tmp_path / f"applied-{t.number}.json").read_text())) == (
                len(t.intermediate_values) * POINTS // BATCH
            )


def start_worker(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--storage", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def slow_study(tmp_path: Path, framework: str, url: str) -> Path:
    """One trial whose epochs last a while, heartbeats a worker loses quickly."""
    cfg = study_config(
        tmp_path,
        framework,
        objective_args={"width": 8, "pause": 0.5},
        budget={"trials": 1, "epochs": EPOCHS},
        heartbeat={"interval": 0.2, "grace_period": 1.0},
        pruner={"name": "none"},
    )
    assert sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    return cfg


def reported(url: str, number: int) -> dict[int, float]:
    trials = optuna.load_study(study_name="t", storage=url).get_trials()
    return trials[number].intermediate_values if len(trials) > number else {}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_killed_workers_trial_resumes_from_the_frameworks_checkpoint(
    tmp_path: Path, framework: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    slow_study(tmp_path, framework, url)
    files = tmp_path / "s.db.artifacts" / "t" / "checkpoints" / "trial-0.files"
    worker = start_worker(tmp_path, url)
    wait_until(lambda: len(reported(url, 0)) >= 2 or worker.poll() is not None)
    wait_until(lambda: (tmp_path / "s.db.artifacts/t/checkpoints/trial-0.pt").exists())
    worker.kill()
    worker.wait()
    assert any(files.iterdir()), "the framework saved no checkpoint"
    (tmp_path / "applied-1.json").unlink(missing_ok=True)
    again = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    first, retry = optuna.load_study(study_name="t", storage=url).get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert "trial 1 resumes from the checkpoint of trial 0" in again.stdout
    # The retry trained only the epochs after the last checkpoint, at the schedule's lrs.
    applied = json.loads((tmp_path / "applied-1.json").read_text())
    steps_per_epoch = POINTS // BATCH
    assert applied[0][0] % steps_per_epoch == 0 and applied[0][0] >= steps_per_epoch
    assert applied[-1][0] == EPOCHS * steps_per_epoch - 1
    applied_matches_the_schedule(tmp_path, retry)
    assert len(retry.intermediate_values) == EPOCHS
    resumed_after = applied[0][0] // steps_per_epoch  # epochs the checkpoint held
    kept = {e: v for e, v in first.intermediate_values.items() if e <= resumed_after}
    assert len(kept) == resumed_after
    assert {e: retry.intermediate_values[e] for e in kept} == kept
    assert not files.exists()  # the trial ended: its checkpoint files went with it


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sigterm_hands_the_trial_back(tmp_path: Path, framework: str) -> None:
    """The worker exits 0 and the trial waits in the queue for the next worker, which
    finishes it; under Lightning too, which turns SIGTERM into SIGTERMException (a
    SystemExit) at its next batch."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    slow_study(tmp_path, framework, url)
    worker = start_worker(tmp_path, url)
    wait_until(lambda: len(reported(url, 0)) >= 1 or worker.poll() is not None)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    assert "back in the queue as WAITING" in out
    (trial,) = optuna.load_study(study_name="t", storage=url).get_trials()
    assert trial.state == TrialState.WAITING
    again = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    (trial,) = optuna.load_study(study_name="t", storage=url).get_trials()
    assert trial.state == TrialState.COMPLETE and len(trial.intermediate_values) == EPOCHS


@pytest.mark.parametrize("example", ["lightning", "hf"])
def test_the_examples_run_as_the_readme_shows(tmp_path: Path, example: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = sweeps(
        "run", f"examples/{example}.yaml", "--workers", "2", "--storage", url, cwd=repo
    )
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name=f"{example}-schedules", storage=url)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == 12
    assert study.best_value > 0.6  # validation accuracy on the digits, 10 classes
    assert {t.params["schedule"] for t in done} >= {"constant", "cosine", "linear"}


class RunsCode:
    """Unpickled, creates the file ``path``: what a planted checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.path)!r}, 'w').close()",)


class Killed(Exception):
    """Ends a run after the epoch its checkpoint saved, as a SIGKILL would."""


def trial_run(tmp_path: Path, saved: dict[str, object], *, kill_after: int = 0) -> objectives.Run:
    """A trial run in this process, its checkpoint kept in ``saved`` (shared by the runs
    given the same: a retry's); ``kill_after`` epochs, it raises Killed."""

    def save(state: dict[str, object]) -> None:
        saved.update(state)
        if len(state["epochs"]) == kill_after:  # type: ignore[arg-type]
            raise Killed

    study = optuna.create_study(direction="maximize")
    params = {
        "lr": 0.1,
        "optimizer": "sgd",
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 0.0,
        "batch_size": BATCH,
        "schedule": "cosine",
        "cosine.warmup_steps": 2,
    }
    return objectives.Run(
        study.ask(),
        params,
        seed=0,
        epochs=EPOCHS,
        args={"width": 8},
        checkpoint=(save, lambda: dict(saved) or None),
        checkpoint_dir=tmp_path / "trial.files",
    )


def test_lightning_resumes_weights_only_and_runs_no_code_planted_in_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the objective writes applied-<trial>.json here
    objective: dict[str, object] = {}
    exec(LIGHTNING, objective)
    fit_trial = objective["objective"]
    saved: dict[str, object] = {}
    with pytest.raises(Killed):
        fit_trial(trial_run(tmp_path, saved, kill_after=2))  # type: ignore[operator]
    retry = trial_run(tmp_path, saved)
    assert fit_trial(retry) == retry.reported[-1]["value"]  # type: ignore[operator]
    applied = json.loads((tmp_path / f"applied-{retry.trial.number}.json").read_text())
    assert applied[0][0] == 2 * POINTS // BATCH  # it went on from the checkpoint's epochs
    schedule = retry.schedule(total_steps=EPOCHS * POINTS // BATCH)
    assert [lr for _, lr in applied] == pytest.approx([schedule.lr_at(s) for s, _ in applied])

    ckpt = tmp_path / "trial.files" / saved["user"]["lightning"]  # type: ignore[index]
    planted = torch.load(ckpt, weights_only=True) | {"extra": RunsCode(tmp_path / "ran")}
    torch.save(planted, ckpt)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        fit_trial(trial_run(tmp_path, saved))  # type: ignore[operator]
    assert not (tmp_path / "ran").exists()


def test_an_hf_trial_draws_no_progress_bars_in_the_workers_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import transformers

    from objectives.transformers import train

    tiny = transformers.BertConfig(
        vocab_size=16,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        num_labels=2,
    )
    data = [{"input_ids": torch.tensor([1, 2, i % 16]), "labels": i % 2} for i in range(POINTS)]
    train(
        trial_run(tmp_path, {}),
        lambda: transformers.BertForSequenceClassification(tiny),  # saved as shards
        monitor="loss",
        train_dataset=data,
        eval_dataset=data,
    )
    assert any((tmp_path / "trial.files").glob("checkpoint-*/model.safetensors"))
    assert "Writing model shards" not in capfd.readouterr().err
