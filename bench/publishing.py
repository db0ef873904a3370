"""What keeping optuna-dashboard current costs a worker, beside what a trial's training costs.

    .venv/bin/python bench/publishing.py [CONFIG]      # default examples/digits.yaml

Side by side in one process, on a fresh SQLite study of the config (medians of repeats):

- train_seconds_per_trial: one trial of the config trained alone to the last epoch
  (the config's task, epochs and first batch size; a cosine schedule).
- trial_artifacts_seconds: `Publisher.trial_started` and `Publisher.trial_ended` for one
  trial with those curves: its SVG and two CSVs attached, empty, as it starts, then drawn as
  it ends (every trial pays this once).
- trial_artifacts_fraction_of_training: the two above divided.
- study_pages_seconds: `publish_study` (note + three graphs) on a study of `budget.trials`
  finished trials with curves of that size (paid at most every 10 s per study, by one worker).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

import objectives
from storage import Database
from storage.optuna_internals import trial_id_of
from sweeps.config import load_yaml, parse_config
from sweeps.results.artifact_store import artifact_store
from sweeps.results.curves import Curves
from sweeps.results.dashboard import Publisher, publish_study
from sweeps.study import launch
from sweeps.trial_attrs import PARAMS


def median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="examples/digits.yaml")
    config = parse_config(load_yaml(Path(parser.parse_args().config)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # as each of `sweeps run --workers 2`'s workers on 2 cores
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        handle = launch(db, config)
        task = objectives.resolve(config.objective)
        batch = config.space["batch_size"]
        params: dict[str, Any] = {
            "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
            "weight_decay": 1e-4, "batch_size": batch[0] if isinstance(batch, list) else batch,
            "schedule": "cosine", "cosine.warmup_steps": 0,
        }  # fmt: skip

        def train() -> objectives.Run:
            trial = handle.study.ask()
            run = objectives.Run(
                trial, params, seed=0, epochs=config.budget.epochs, args=config.objective_args
            )
            task(run)
            handle.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return run

        train_seconds = median_seconds(train, 3)
        curves = Curves.of_run(train())
        publisher = Publisher(db, handle, artifact_store(Path(tmp)))
        trials = iter([handle.study.ask() for _ in range(21)])  # asked beforehand: not timed

        def publish() -> None:
            trial = next(trials)
            publisher.trial_started(trial, "trial")
            publisher.trial_ended(trial, curves, "trial")

        publish()  # warm-up
        artifacts_seconds = median_seconds(publish, 20)

        # A finished study of budget.trials trials, each with curves of this size.
        for i in range(config.budget.trials):
            t = handle.study.ask()
            t.set_user_attr(PARAMS, {**params, "lr": 0.01 * (1 + i % 10)})
            for point in curves.epochs:
                t.report(point["value"], point["epoch"])
            db.add_curves(trial_id_of(t), curves.steps, curves.epochs)
            handle.study.tell(t, curves.epochs[-1]["value"] - 0.001 * (i % 7))
        pages_seconds = median_seconds(lambda: publish_study(db, handle), 5)

    print(f"train_seconds_per_trial: {train_seconds:.3f}")
    print(f"trial_artifacts_seconds: {artifacts_seconds:.3f}")
    print(f"trial_artifacts_fraction_of_training: {artifacts_seconds / train_seconds:.3f}")
    print(f"study_pages_seconds: {pages_seconds:.3f}")


if __name__ == "__main__":
    main()
