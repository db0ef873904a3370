"""What a user's own objective meets through the CLI: the README's objective template,
pruning at the last epoch, a framework's SystemExit on SIGTERM, repeated failures. The
workers are real processes; studies are launched and read in this process
(`cli_in_process`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cli_in_process import sweeps_here
from optuna.trial import TrialState

from sweeps_helpers import config, sweeps, wait_until

# The README's "Your own objective" template, filled in with a tiny regression model.
TEMPLATE = """
import optuna
import torch
from torch import nn

STEPS_PER_EPOCH = 8

def make_model(width=8):
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 1))

def objective(run) -> float:
    torch.manual_seed(run.seed)                      # the trial's own initialisation
    model = make_model(run.args["width"])            # objective_args
    opt = run.optimizer(model.parameters())          # SGD or AdamW from the sampled params
    sched = run.scheduler(opt, total_steps=run.epochs * STEPS_PER_EPOCH)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=gen)
    y = x[:, :1] * x[:, 1:]
    first = 1
    saved = run.load_checkpoint()                    # an earlier attempt's state, or None
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        first = saved["epoch"] + 1
    val_metric = 0.0
    for epoch in range(first, run.epochs + 1):
        for i in range(STEPS_PER_EPOCH):
            step = (epoch - 1) * STEPS_PER_EPOCH + i
            idx = torch.arange(i * 32, (i + 1) * 32)
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step(); sched.step()
            run.log_step(step, lr=opt.param_groups[0]["lr"], loss=loss.item())
        with torch.no_grad():
            val_metric = -nn.functional.mse_loss(model(x), y).item()
        if run.args.get("optuna_idiom"):            # pruning as a plain Optuna loop does it
            run.report(val_metric, epoch, prune=False)
            if run.trial.should_prune():
                raise optuna.TrialPruned()
        else:
            run.report(val_metric, epoch)            # raises optuna.TrialPruned when pruned
        run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": epoch})
    return val_metric
"""


def launched(tmp_path: Path, cfg: Path) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    launch = sweeps_here("launch", str(cfg), "--storage", url, cwd=tmp_path)
    assert launch.returncode == 0, launch.stderr
    return url


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("objective", "args", "searched"),
    [
        # Both ways of pruning in one study: run.report's, and a plain Optuna loop's.
        ("template:objective", {"width": 8}, {"optuna_idiom": [True, False]}),
        # Stacks of 4 built-in trials whose searched architecture differs: a stack holds
        # trials of one architecture.
        ("digits_mlp", {}, {"hidden": [8, 32]}),
    ],
    ids=["template", "built-in-stacked"],
)
def test_a_trial_that_trained_every_epoch_ends_complete_and_is_ranked(
    tmp_path: Path, objective: str, args: dict[str, object], searched: dict[str, list[object]]
) -> None:
    """The pruner may prune only at the final epoch, and would prune most trials there; it
    prunes none: a trial that trained its whole budget is COMPLETE with its last value, and
    the family leaderboard ranks it."""
    (tmp_path / "template.py").write_text(TEMPLATE)
    epochs = 3
    cfg = config(
        tmp_path,
        objective=objective,
        objective_args=args,
        budget={"trials": 12, "epochs": epochs},
        pruner={
            "name": "percentile",
            "percentile": 70.0,
            "n_startup_trials": 2,
            "n_warmup_steps": epochs,  # Optuna prunes from step n_warmup_steps on
        },
        stack=4,
        space={
            "lr": {"low": 0.001, "high": 0.5, "log": True},
            "optimizer": "sgd",
            "batch_size": 128,
            "schedule": {"constant": {}, "cosine": {}, "polynomial": {}},
            "args": searched,
        },
    )
    url = launched(tmp_path, cfg)
    result = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    done = optuna.load_study(study_name="t", storage=url).get_trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 12
    assert all(t.value == t.intermediate_values[epochs] for t in done)
    for name, values in searched.items():  # each variant trained, and ended COMPLETE
        assert {t.params[f"args.{name}"] for t in done} == set(values)

    status = sweeps_here(
        "status", "--study", "t", "--storage", url, "--format", "json", cwd=tmp_path
    )
    families = {f["family"]: f for f in json.loads(status.stdout)["families"]}
    for family, ranked in families.items():
        reached = [t.value for t in done if t.params["schedule"] == family]
        assert (ranked["best"] or {}).get("value") == (max(reached) if reached else None)


# What Lightning does on SIGTERM: its handler runs beside the one it found (the worker's),
# and the training loop then raises SIGTERMException, a SystemExit.
EXITS_ON_SIGTERM = """
import pathlib, signal, time

def objective(run):
    received = []
    previous = signal.getsignal(signal.SIGTERM)
    def on_sigterm(signum, frame):
        received.append(signum)
        previous(signum, frame)
    signal.signal(signal.SIGTERM, on_sigterm)
    run.report(0.5, 1)
    pathlib.Path("training").touch()
    while not received:
        time.sleep(0.01)
    raise SystemExit(1)
"""


@pytest.mark.e2e
def test_an_objective_exiting_on_sigterm_hands_its_trial_back(tmp_path: Path) -> None:
    (tmp_path / "exits.py").write_text(EXITS_ON_SIGTERM)
    cfg = config(tmp_path, objective="exits:objective", budget={"trials": 2, "epochs": 3})
    url = launched(tmp_path, cfg)
    worker = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--storage", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until(lambda: (tmp_path / "training").exists() or worker.poll() is not None)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert "handed back after epoch 1 (SystemExit while the worker stopped)" in out
    assert "back in the queue as WAITING" in out
    (trial,) = optuna.load_study(study_name="t", storage=url).get_trials()
    assert trial.state == TrialState.WAITING
    assert trial.intermediate_values == {1: 0.5}


@pytest.mark.e2e
def test_an_objective_exiting_by_itself_fails_its_trial(tmp_path: Path) -> None:
    """SystemExit without a stop is the trial's own fault: FAIL, and the worker goes on to
    the next trial (the study stops at max_failures)."""
    (tmp_path / "exits.py").write_text("def objective(run):\n    raise SystemExit(3)\n")
    cfg = config(
        tmp_path,
        objective="exits:objective",
        budget={"trials": 2, "epochs": 1, "retries": 0, "max_failures": 2},
    )
    url = launched(tmp_path, cfg)
    result = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    done = optuna.load_study(study_name="t", storage=url).get_trials()
    assert [t.user_attrs["sweeps:reason"] for t in done] == ["SystemExit: 3"] * 2


# An objective that reports the hyperparameters it was handed.
OWN_ARGS = """
def objective(run):
    assert run.args["activation"] == "tanh"                  # objective_args, fixed
    value = run.args["width"] + run.args["dropout"] + run.args["tied"]
    assert value == run.params["args.width"] + run.params["args.dropout"] + run.params["args.tied"]
    run.report(value, 1)
    return value
"""


@pytest.mark.e2e
def test_the_objectives_own_hyperparameters_are_searched_and_handed_to_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "own.py").write_text(OWN_ARGS)
    cfg = config(
        tmp_path,
        objective="own:objective",
        objective_args={"activation": "tanh"},
        budget={"trials": 6, "epochs": 1},
        space={
            "lr": 0.1,
            "batch_size": 32,
            "schedule": {"constant": {}},
            "args": {
                "width": [64, 128],
                "dropout": {"low": 0.0, "high": 0.5},
                "tied": True,
            },
        },
    )
    url = launched(tmp_path, cfg)
    bad = '{"schedule": "constant", "args.width": 96}'
    refused = sweeps_here(
        "enqueue", "--study", "t", "--params", bad, "--storage", url, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: args.width: must be one of [64, 128], got 96")
    good = '{"schedule": "constant", "args.width": 128, "args.dropout": 0.25}'
    queued = sweeps_here(
        "enqueue", "--study", "t", "--params", good, "--storage", url, cwd=tmp_path
    )
    assert queued.returncode == 0, queued.stderr
    result = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    done = optuna.load_study(study_name="t", storage=url).get_trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 6
    # Optuna parameters under stable names (the dashboard shows them); fixed ones are not.
    assert {name for t in done for name in t.params} == {"args.width", "args.dropout"}
    assert done[0].params == {"args.width": 128, "args.dropout": 0.25}
    assert all(0.0 <= t.params["args.dropout"] <= 0.5 for t in done)
    assert all(t.value == t.params["args.width"] + t.params["args.dropout"] + 1 for t in done)
    exported = sweeps_here(
        "export", "--study", "t", "--out", "t.csv", "--storage", url, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    header = (tmp_path / "t.csv").read_text().splitlines()[0]
    assert "param:args.width" in header and "param:args.tied" in header


# A module failing as it is imported: the error line says where, and what caused it.
BUGGY = """import math


def helper(x):
    return math.sqrt(x)


# the tenth line
# the eleventh line
SCALE = helpr(4)
"""
LOADER = """def load_backend():
    raise ValueError("backend config has no key 'device'\\n(see the docs)")
"""
WRAPS_ITS_CAUSE = """import import_cause_loader

try:
    import_cause_loader.load_backend()
except ValueError as e:
    raise ImportError("could not import the model classes"){}
"""


def validate_in_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    **cfg: object,
) -> list[str]:
    """``sweeps validate`` run in this process (the user's module imported here too): its
    exit code must be 2; its error lines."""
    from sweeps.cli import main

    path = config(tmp_path, **cfg)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err.splitlines()


def test_an_error_importing_the_users_module_names_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "import_buggy.py").write_text(BUGGY)
    assert validate_in_process(tmp_path, monkeypatch, capsys, objective="import_buggy:fn") == [
        "error: objective: importing 'import_buggy' failed: NameError: name 'helpr' is not "
        "defined (import_buggy.py:10)"
    ]


@pytest.mark.parametrize("chained", [" from e", ""], ids=["__cause__", "__context__"])
def test_an_import_error_wrapping_its_cause_shows_the_cause_on_the_same_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    chained: str,
) -> None:
    """As transformers' lazy imports do: the ImportError says little, its cause the rest."""
    (tmp_path / "import_cause_loader.py").write_text(LOADER)
    module = f"import_wraps{len(chained)}"  # a module of its own for each case
    (tmp_path / f"{module}.py").write_text(WRAPS_ITS_CAUSE.format(chained))
    assert validate_in_process(tmp_path, monkeypatch, capsys, objective=f"{module}:fn") == [
        f"error: objective: importing '{module}' failed: ImportError: could not import the "
        f"model classes ({module}.py:6); caused by ValueError: backend config has no key "
        "'device' (see the docs)"
    ]
