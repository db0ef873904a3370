"""A Lightning module and an HF Trainer model swept with one call of glue
(`objectives.lightning.fit`, `objectives.transformers.train`).

Through the CLI, in real processes: the README's HF example runs as written, two workers
finishing exactly the budget, each step's lr stored as the schedule's and each trial's
curves on the dashboard; a Lightning worker stopped by SIGTERM hands its trial back, and a
SIGKILLed one's trial resumes from Lightning's own checkpoint.

In this process: the README's Lightning example trains a trial as a worker sets it up; and,
on a tiny model whose training step reads the lr back from the framework's optimizer, for
each framework, pruning stops training after the pruned epoch, every step ran at the
schedule's lr, and a trial stopped after an epoch (handed back, killed) resumes from the
framework's checkpoint (Lightning's loaded weights-only: a pickle put in it runs no code)."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from cli_in_process import sweeps_here
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import FrozenTrial, TrialState

import objectives
from objectives.data import digits
from objectives.run import HandBack
from storage.optuna_internals import storage_of, trial_id_of
from sweeps.trial_attrs import params_of
from sweeps_helpers import config, sweeps, wait_until

pytest.importorskip("lightning")
pytest.importorskip("transformers")

POINTS, BATCH = 96, 32  # 3 optimizer steps an epoch

# Each objective writes the (step, lr) its framework applied, read from its optimizer in
# the training step, to applied-<trial>.json.
DATA = f"""
import json, os, time
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
    def __init__(self, width=8):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 1))

    def training_step(self, batch, _):
        # A test's gate: while hold-<N> exists, epoch N+1 waits to start (held-<N> says so),
        # the N epochs before it reported and saved.
        if os.path.exists(f"hold-{self.current_epoch}"):
            open(f"held-{self.current_epoch}", "w").close()
            while os.path.exists(f"hold-{self.current_epoch}"):
                time.sleep(0.05)
        APPLIED.append((self.global_step, self.optimizers().param_groups[0]["lr"]))
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_score", -nn.functional.mse_loss(self.net(x), y))

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
    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        APPLIED.append((state.global_step, optimizer.param_groups[0]["lr"]))

def score(prediction):
    logits, labels = prediction
    return {"score": -float(((logits - labels) ** 2).mean())}

def objective(run):
    try:
        return train(run, lambda: Regressor(**run.args), monitor="score",
                     train_dataset=Points(), eval_dataset=Points(), compute_metrics=score,
                     callbacks=[Applied()])
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
STEPS_PER_EPOCH = POINTS // BATCH


def objective_of(framework: str) -> Callable[[objectives.Run], float]:
    """The tiny model's objective, defined in this process."""
    namespace: dict[str, object] = {}
    exec(FRAMEWORKS[framework], namespace)
    return namespace["objective"]  # type: ignore[return-value]


def applied_matches_the_schedule(
    tmp_path: Path, trial: FrozenTrial | optuna.Trial, params: dict[str, object], epochs: int
) -> list[list[float]]:
    """The (step, lr) the framework applied in ``trial`` (its applied-<trial>.json), each
    lr the schedule's at that step over ``epochs`` epochs of the tiny model."""
    applied = json.loads((tmp_path / f"applied-{trial.number}.json").read_text())
    assert applied, f"trial {trial.number} trained no step"
    run = objectives.Run(None, params, seed=0, epochs=epochs)  # type: ignore[arg-type]
    schedule = run.schedule(total_steps=epochs * STEPS_PER_EPOCH)
    for step, lr in applied:
        assert lr == pytest.approx(schedule.lr_at(step), rel=1e-12, abs=1e-15), step
    return applied  # type: ignore[no-any-return]


# --- Through the CLI --------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_the_hf_example_runs_as_the_readme_shows(tmp_path: Path) -> None:
    """``sweeps run examples/hf.yaml --workers 2`` from the repository root: two workers
    finish exactly the budget (pruning on); each trial's stored curve holds, for every step
    it ran, the lr the Trainer applied (read from its optimizer by the adapter), which is
    the schedule's; the dashboard has each trial's curves. (The Lightning example, the same
    but for its framework: `test_the_lightning_example_trains_as_the_readme_shows`.)"""
    example = "hf"
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = sweeps(
        "run", f"examples/{example}.yaml", "--workers", "2", "--storage", url, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name=f"{example}-schedules", storage=url)
    trials = study.get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == len(trials) == 12
    assert study.best_value > 0.6  # validation accuracy on the digits, 10 classes
    assert {t.params["schedule"] for t in done} >= {"constant", "cosine", "linear"}

    epochs, batch = 4, 64  # the examples' budget and batch size
    steps_per_epoch = -(-len(digits(torch.device("cpu")).x_train) // batch)
    dashboard = tmp_path / "s.db.artifacts" / "dashboard"
    storage = storage_of(study)
    engine = sqlalchemy.create_engine(url)
    for t in done:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        else:  # pruned after an epoch, before the last
            assert len(t.intermediate_values) < epochs
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT step, lr, train_loss FROM sweeps_curve_steps WHERE trial_id = :t"
                ),
                {"t": trial_id_of(t)},
            ).all()
        trained = len(t.intermediate_values) * steps_per_epoch
        assert sorted(step for step, _, _ in rows) == list(range(trained)), t.number
        run = objectives.Run(None, params_of(t), seed=0, epochs=epochs)  # type: ignore[arg-type]
        schedule = run.schedule(total_steps=epochs * steps_per_epoch)
        for step, lr, loss in rows:
            assert lr == pytest.approx(schedule.lr_at(step), rel=1e-6), (t.number, step)
            assert loss is not None and loss >= 0
        metas = {m.filename: m for m in get_all_artifact_meta(t, storage=storage)}
        svg = metas[f"trial-{t.number}-curves.svg"]
        assert (dashboard / svg.artifact_id).stat().st_size > 0  # what optuna-dashboard serves
    engine.dispose()


def test_the_lightning_example_trains_as_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``examples/lightning.yaml`` is a valid config (`sweeps validate`, run here), and a trial
    of it, sampled and set up as a worker does, trains ``examples/lightning_objective.py``'s
    module on the digits here: every step at the schedule's lr, over 0.6 accuracy. (A sweep
    of an example through the CLI: the HF one's test above; Lightning in worker processes:
    the SIGTERM and SIGKILL test below.)"""
    from sweeps.commands.common import load_checked_config
    from sweeps.space import parse_space

    validated = sweeps_here("validate", "examples/lightning.yaml", cwd=REPO)
    assert validated.returncode == 0, validated.stderr
    config = load_checked_config(str(REPO / "examples/lightning.yaml"))
    space = parse_space(config.space)
    study = optuna.create_study(direction=config.direction)
    point = {"lr": 0.1, "schedule": "cosine", "cosine.warmup_steps": 20, "args.dropout": 0.1}
    study.enqueue_trial(point)
    trial = study.ask()
    params = space.sample(trial)
    run = objectives.Run(
        trial,
        params,
        seed=0,
        epochs=config.budget.epochs,
        direction=config.direction,
        args=space.run_args(config.objective_args, params),
    )
    monkeypatch.syspath_prepend(str(REPO))
    from examples.lightning_objective import objective

    assert objective(run) > 0.6  # validation accuracy on the digits, 10 classes
    assert [p["epoch"] for p in run.reported] == list(range(1, config.budget.epochs + 1))
    steps_per_epoch = -(-len(digits(torch.device("cpu")).x_train) // params["batch_size"])
    total = config.budget.epochs * steps_per_epoch
    schedule = run.schedule(total_steps=total)
    assert [p["step"] for p in run.logged_steps] == list(range(total))
    for point in run.logged_steps:
        assert point["lr"] == pytest.approx(schedule.lr_at(point["step"]), rel=1e-6)


def start_worker(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--storage", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.e2e
def test_sigterm_hands_a_lightning_trial_back_and_a_killed_workers_retry_resumes_from_it(
    tmp_path: Path,
) -> None:
    """One trial through three worker processes, each stopped where the test lets it be
    (``hold-<N>``: the trial waits before epoch N+1, its N epochs reported and saved).

    SIGTERM after epoch 1: Lightning turns it into SIGTERMException (a SystemExit) at its
    next batch; the worker exits 0 and the trial waits in the queue. The next worker takes
    it up from its checkpoint, and is SIGKILLed after epoch 2: the trial fails, and its
    retry, on a third worker, resumes from Lightning's checkpoint of epoch 2, training only
    the epochs after it, at the schedule's lrs."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    (tmp_path / "model.py").write_text(LIGHTNING)
    cfg = config(
        tmp_path,
        objective="model:objective",
        space=SPACE,
        objective_args={"width": 8},
        budget={"trials": 1, "epochs": EPOCHS},
        heartbeat={"interval": 0.2, "grace_period": 1.0},
        pruner={"name": "none"},
    )
    launch = sweeps_here("launch", str(cfg), "--storage", url, cwd=tmp_path)
    assert launch.returncode == 0, launch.stderr
    files = tmp_path / "s.db.artifacts" / "t" / "checkpoints" / "trial-0.files"

    def held(epoch: int, worker: subprocess.Popen[str]) -> None:
        wait_until(lambda: (tmp_path / f"held-{epoch}").exists() or worker.poll() is not None)
        assert worker.poll() is None, worker.communicate()[0]

    (tmp_path / "hold-1").touch()
    stopped = start_worker(tmp_path, url)
    held(1, stopped)
    stopped.send_signal(signal.SIGTERM)
    (tmp_path / "hold-1").unlink()
    out, _ = stopped.communicate(timeout=120)
    assert stopped.returncode == 0, out
    assert "handed back after epoch 1 (SIGTERMException while the worker stopped)" in out, out
    assert "back in the queue as WAITING" in out, out
    (trial,) = optuna.load_study(study_name="t", storage=url).get_trials()
    assert trial.state == TrialState.WAITING and list(trial.intermediate_values) == [1]

    (tmp_path / "hold-2").touch()
    victim = start_worker(tmp_path, url)
    held(2, victim)
    victim.kill()
    out, _ = victim.communicate()
    assert "trial 0 resumes from the checkpoint of trial 0" in out, out
    assert any(files.iterdir()), "Lightning saved no checkpoint"
    (tmp_path / "hold-2").unlink()

    again = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    first, retry = optuna.load_study(study_name="t", storage=url).get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert sorted(first.intermediate_values) == [1, 2]
    assert "trial 1 resumes from the checkpoint of trial 0" in again.stdout
    # The retry trained only the epochs after the checkpoint, at the schedule's lrs.
    applied = applied_matches_the_schedule(tmp_path, retry, params_of(retry), EPOCHS)
    assert [step for step, _ in applied] == list(
        range(2 * STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH)
    )
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    assert {e: retry.intermediate_values[e] for e in (1, 2)} == first.intermediate_values
    assert not files.exists()  # the trial ended: its checkpoint files went with it


# --- In this process ---------------------------------------------------------------------


class PruneAfter(optuna.pruners.BasePruner):
    """Prunes a trial once it reports ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step >= self.epoch


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pruning_stops_the_framework_after_the_pruned_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    """``run.report`` raises TrialPruned out of the framework's training, which stops
    there; every step it ran was at the schedule's lr."""
    monkeypatch.chdir(tmp_path)  # the objective writes applied-<trial>.json here
    run = trial_run(tmp_path, {}, pruner=PruneAfter(2))
    with pytest.raises(optuna.TrialPruned):
        objective_of(framework)(run)
    assert [point["epoch"] for point in run.reported] == [1, 2]
    applied = applied_matches_the_schedule(tmp_path, run.trial, run.params, EPOCHS)
    assert [step for step, _ in applied] == list(range(2 * STEPS_PER_EPOCH))
    assert [p["step"] for p in run.logged_steps] == list(range(2 * STEPS_PER_EPOCH))


class RunsCode:
    """Unpickled, creates the file ``path``: what a planted checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.path)!r}, 'w').close()",)


class Killed(Exception):
    """Ends a run after the epoch its checkpoint saved, as a SIGKILL would."""


def trial_run(
    tmp_path: Path,
    saved: dict[str, object],
    *,
    kill_after: int = 0,
    stop_after: int = 0,
    pruner: optuna.pruners.BasePruner | None = None,
) -> objectives.Run:
    """A trial run in this process, its checkpoint kept in ``saved`` (shared by the runs
    given the same: a retry's); ``kill_after`` epochs, it raises Killed; ``stop_after``
    epochs, its worker is stopping (as on SIGTERM)."""

    def save(state: dict[str, object]) -> None:
        saved.update(state)
        if len(state["epochs"]) == kill_after:  # type: ignore[arg-type]
            raise Killed

    def stopping() -> bool:
        return 0 < stop_after <= len(run.reported)

    study = optuna.create_study(direction="maximize", pruner=pruner)
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
    run = objectives.Run(
        study.ask(),
        params,
        seed=0,
        epochs=EPOCHS,
        args={"width": 8},
        checkpoint=(save, lambda: dict(saved) or None),
        stopping=stopping,
        checkpoint_dir=tmp_path / "trial.files",
    )
    return run


def test_lightning_resumes_weights_only_and_runs_no_code_planted_in_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the objective writes applied-<trial>.json here
    fit_trial = objective_of("lightning")
    saved: dict[str, object] = {}
    with pytest.raises(Killed):
        fit_trial(trial_run(tmp_path, saved, kill_after=2))
    retry = trial_run(tmp_path, saved)
    assert fit_trial(retry) == retry.reported[-1]["value"]
    applied = json.loads((tmp_path / f"applied-{retry.trial.number}.json").read_text())
    assert applied[0][0] == 2 * POINTS // BATCH  # it went on from the checkpoint's epochs
    schedule = retry.schedule(total_steps=EPOCHS * POINTS // BATCH)
    assert [lr for _, lr in applied] == pytest.approx([schedule.lr_at(s) for s, _ in applied])

    ckpt = tmp_path / "trial.files" / saved["user"]["lightning"]  # type: ignore[index]
    planted = torch.load(ckpt, weights_only=True) | {"extra": RunsCode(tmp_path / "ran")}
    torch.save(planted, ckpt)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        fit_trial(trial_run(tmp_path, saved))
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


@pytest.mark.parametrize("stopped", ["handed-back", "killed"])
def test_an_hf_trial_stopped_after_an_epoch_resumes_from_the_trainers_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped: str
) -> None:
    """Handed back when its worker stops (SIGTERM), or killed, after epoch 2 (its
    checkpoint saved): the next attempt goes on from the Trainer's checkpoint folder, at
    the schedule's lrs, to the last epoch."""
    monkeypatch.chdir(tmp_path)  # the objective writes applied-<trial>.json here
    train_trial = objective_of("transformers")
    saved: dict[str, object] = {}
    first = trial_run(
        tmp_path, saved, **{"stop_after" if stopped == "handed-back" else "kill_after": 2}
    )
    with pytest.raises(HandBack if stopped == "handed-back" else Killed):
        train_trial(first)
    assert [point["epoch"] for point in first.reported] == [1, 2]
    assert saved["user"] == {"transformers": f"checkpoint-{2 * STEPS_PER_EPOCH}"}
    retry = trial_run(tmp_path, saved)
    assert train_trial(retry) == retry.reported[-1]["value"]
    assert [point["epoch"] for point in retry.reported] == [1, 2, 3, 4]
    applied = applied_matches_the_schedule(tmp_path, retry.trial, retry.params, EPOCHS)
    assert [step for step, _ in applied] == list(
        range(2 * STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH)
    )
