"""Real studies for the evidence benchmarks (families, pruning, samplers), run through the
project's own code: `sweeps.study.launch` and `sweeps.worker.Worker` on a fresh SQLite file
per study, in a pool of processes (one torch thread each, as `sweeps run` gives each of its
workers on 2 cores).

A study is a plain config dict; `run_studies` returns each one's finished trials as
`Trial` records in trial-number order.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import optuna
import yaml

from objectives import BUILTIN

# The search space of each schedule family, per task, as the benchmarks tune it. Every
# family may warm up (so the comparison is of what follows warmup); `total_steps` is
# derived from the epochs, so decaying families end at zero at the end of the run.
FAMILIES: dict[str, dict[str, Any]] = {
    "constant": {},
    "step": {"decay_rate": {"low": 0.1, "high": 0.9}},  # and decay_steps: `family_space`
    "polynomial": {"power": {"low": 0.5, "high": 3.0}},
    "inverse_power": {"power": {"low": 0.1, "high": 2.0}},
    "grad_norm": {"window": [10, 50], "min_ratio": {"low": 0.01, "high": 0.5, "log": True}},
    "cosine": {},
    "linear": {},
    "wsd": {"decay_fraction": {"low": 0.1, "high": 0.5}, "decay_shape": ["linear", "1-sqrt"]},
    "onecycle": {"pct_start": {"low": 0.1, "high": 0.5}},
}


@dataclass(frozen=True)
class Task:
    """One task as the benchmarks sweep it: a fixed optimizer and batch size (so every
    family sees the same training), the lr range, and the run length."""

    objective: str
    epochs: int
    fixed: dict[str, Any]  # optimizer settings and batch size
    lr: dict[str, Any]
    args: dict[str, Any]

    @property
    def direction(self) -> str:
        return BUILTIN[self.objective].direction

    @property
    def steps(self) -> int:
        return self.epochs * BUILTIN[self.objective].steps_per_epoch(self.fixed["batch_size"])

    def family_space(self, family: str) -> dict[str, Any]:
        """This task's space for one family: lr, the family's parameters, warmup (a tenth
        of the run, or none). A step schedule decays every 5% to 50% of the run."""
        params = dict(FAMILIES[family])
        if family == "step":
            low, high = max(1, self.steps // 20), max(2, self.steps // 2)
            params["decay_steps"] = {"low": low, "high": high, "log": True}
        params["warmup_steps"] = [0, max(1, self.steps // 10)]
        return {"lr": self.lr, **self.fixed, "schedule": {family: params}}


SGD = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
TASKS: dict[str, Task] = {
    "digits_mlp": Task(
        "digits_mlp", 15, {**SGD, "batch_size": 64},
        {"low": 1e-3, "high": 1.0, "log": True}, {"hidden": 128},
    ),
    "digits_cnn": Task(
        "digits_cnn", 8, {**SGD, "batch_size": 64},
        {"low": 1e-3, "high": 1.0, "log": True}, {"channels": 16},
    ),
    "tiny_lm": Task(
        "tiny_lm", 6,
        {"optimizer": "adamw", "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.01,
         "batch_size": 16},
        {"low": 3e-4, "high": 3e-2, "log": True}, {},
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Trial:
    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    epochs: int  # epochs trained (reports made)
    params: dict[str, Any]
    val_loss: float | None  # at the last epoch trained
    reused: int = 0  # of ``epochs``, those a branch took from its trunk (`sweeps.branches`)


def config(
    task: Task,
    space: dict[str, Any],
    *,
    trials: int,
    seed: int,
    sampler: dict[str, Any],
    pruner: dict[str, Any] | None = None,
    stack: int = 1,
) -> dict[str, Any]:
    """A sweep config (as its YAML would read) for ``task`` over ``space``."""
    return {
        "study": "bench",
        "objective": task.objective,
        "objective_args": task.args,
        "direction": task.direction,
        "budget": {"trials": trials, "epochs": task.epochs},
        "sampler": {**sampler, "seed": seed},
        "pruner": pruner or {"name": "none"},
        "seed": seed,
        "stack": stack,
        "space": space,
    }


def _run_one(config: dict[str, Any]) -> list[Trial]:
    import torch

    from storage import Database
    from storage.optuna_internals import trial_id_of
    from sweeps.branches import BRANCHED_AT
    from sweeps.config import parse_config
    from sweeps.study import launch
    from sweeps.worker import Worker

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'study.db'}")
        launch(db, parse_config(config))
        Worker(db, config["study"], artifacts=Path(tmp) / "artifacts", log=lambda _: None).run()
        study = optuna.load_study(study_name=config["study"], storage=db.optuna)
        trials = []
        for t in sorted(study.trials, key=lambda t: t.number):
            curve = db.epoch_curve(trial_id_of(t))
            val_loss = curve[-1].val_loss if curve else None
            reused = int(t.user_attrs.get(BRANCHED_AT, 0))
            epochs = len(t.intermediate_values)
            trials.append(
                Trial(t.number, t.state.name, t.value, epochs, t.params, val_loss, reused)
            )
        db.engine.dispose()
    return trials


def run_studies(configs: Sequence[dict[str, Any]], processes: int = 2) -> list[list[Trial]]:
    """Run every config as its own study, ``processes`` at a time; trials per config."""
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_run_one, configs))


def best(trials: Sequence[Trial], direction: str) -> Trial | None:
    """The best COMPLETE trial."""
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not done:
        return None
    sign = 1 if direction == "maximize" else -1
    return max(done, key=lambda t: sign * (t.value or 0.0))


def best_value(trials: Sequence[Trial], direction: str) -> float:
    found = best(trials, direction)
    return math.nan if found is None or found.value is None else found.value


def spread(values: Sequence[float]) -> str:
    """``mean ± sample std (min–max)`` of per-seed figures."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "nan"
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.4f} ± {std:.4f} ({min(finite):.4f}–{max(finite):.4f})"


def config_arguments(doc: str, *, trials: int) -> argparse.Namespace:
    """The command line of a benchmark that varies one part of a config file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("config", nargs="?", default="examples/digits.yaml")
    parser.add_argument("--trials", type=int, default=trials)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    return parser.parse_args()


def run_variants(
    args: argparse.Namespace, variants: dict[str, dict[str, Any]]
) -> tuple[str, dict[tuple[str, int], list[Trial]]]:
    """Run ``args.config`` once per variant (top-level keys replaced) and seed, one trial at
    a time, with ``args.trials`` trials; the config's direction and each run's trials by
    (variant, seed)."""
    base = yaml.safe_load(Path(args.config).read_text())
    jobs = [(name, seed) for seed in range(args.seeds) for name in variants]
    configs = []
    for name, seed in jobs:
        study = base | variants[name]
        study["budget"] = study["budget"] | {"trials": args.trials}
        study["sampler"] = study["sampler"] | {"seed": seed}
        configs.append(study | {"seed": seed, "stack": 1})
    start = time.perf_counter()
    results = dict(zip(jobs, run_studies(configs, args.processes), strict=True))
    print(f"seconds_total: {time.perf_counter() - start:.0f}")
    print(f"trials_per_study: {args.trials}")
    return base.get("direction", "maximize"), results
