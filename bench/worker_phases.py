"""Where a worker's time goes, one trial at a time and stacked: one in-process worker runs a
whole study per stack size, with a timer around each phase of its loop.

    .venv/bin/python bench/worker_phases.py [CONFIG] [--stacks 1,16] [--threads 1]

For each K it launches CONFIG on a fresh SQLite file and runs one `sweeps.worker.Worker`
with ``--stack K`` until the budget is met (process start-up and `sweeps run`'s own work are
not counted: `bench/stacked_study.py` measures the whole command). It prints the worker's
seconds, the epochs it trained, and per phase the seconds and calls: training steps,
evaluation, the epoch's reports and pruning decisions, checkpoints, asking (claim + sample),
joining a stack (models, checkpoints) and finishing (tell, artifacts). Then the ratio of
each stack size's total and training time to K = 1's, and what no stack size changes: the
seconds a fresh `sweeps worker` process spends importing its modules, and ending (with the
interpreter's teardown, and without it as `sweeps` ends).
"""

from __future__ import annotations

import argparse
import collections
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

import objectives.train
import sweeps.worker
from storage import CheckpointStore, Database
from sweeps.config import load_yaml, parse_config
from sweeps.study import launch

HERE = Path(__file__).resolve().parent

PHASES: dict[str, tuple[Any, str]] = {
    "train_steps": (objectives.train.Stack, "_train_steps"),
    "evaluate": (objectives.train, "_evaluate"),
    "report": (objectives.train, "report_all"),
    "prune": (objectives.train, "should_prune_all"),
    "checkpoint": (CheckpointStore, "save"),
    "ask": (sweeps.worker, "ask_batch"),
    "join": (objectives.train.Pool, "join"),
    "finish": (sweeps.worker.Worker, "_finish"),
}


def timed(
    fn: Callable[..., Any],
    seconds: collections.Counter[str],
    calls: collections.Counter[str],
    name: str,
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start
            calls[name] += 1

    return wrapper


def run(
    config: Path, stack: int, workdir: Path
) -> tuple[float, int, dict[str, tuple[float, int]]]:
    url = f"sqlite:///{workdir / f'stack{stack}.db'}"
    db = Database(url)
    spec = parse_config(load_yaml(config))
    launch(db, spec)
    seconds: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    originals = {name: getattr(owner, attr) for name, (owner, attr) in PHASES.items()}
    for name, (owner, attr) in PHASES.items():
        setattr(owner, attr, timed(originals[name], seconds, calls, name))
    try:
        worker = sweeps.worker.Worker(
            db,
            spec.study,
            artifacts=workdir / f"artifacts{stack}",
            stack=stack,
            log=lambda _: None,
        )
        start = time.perf_counter()
        worker.run()
        total = time.perf_counter() - start
    finally:
        for name, (owner, attr) in PHASES.items():
            setattr(owner, attr, originals[name])
    trials = optuna.load_study(study_name=spec.study, storage=url).trials
    epochs = sum(len(t.intermediate_values) for t in trials if t.state.is_finished())
    return total, epochs, {name: (seconds[name], calls[name]) for name in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="examples/digits.yaml")
    parser.add_argument("--stacks", default="1,16")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stacks = [int(k) for k in args.stacks.split(",")]
    results: dict[int, tuple[float, int, dict[str, tuple[float, int]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in stacks:
            results[k] = total, epochs, phases = run(Path(args.config).resolve(), k, Path(tmp))
            print(f"worker_seconds_stack{k}: {total:.1f}")
            print(f"epochs_trained_stack{k}: {epochs}")
            for name, (seconds, calls) in phases.items():
                print(f"seconds_{name}_stack{k}: {seconds:.2f} ({calls} calls)")
    imports, teardown = process_start_and_end(fast=False)
    print(f"seconds_import_worker_process: {imports:.1f}")
    print(f"seconds_exit_with_teardown: {teardown:.2f}")
    print(f"seconds_exit_without_teardown: {process_start_and_end(fast=True)[1]:.2f}")
    first = stacks[0]
    for k in stacks[1:]:
        print(f"worker_speedup_stack{k}: {results[first][0] / results[k][0]:.2f}")
        training = results[first][2]["train_steps"][0] / results[k][2]["train_steps"][0]
        print(f"training_speedup_stack{k}: {training:.2f}")


# A worker process's own start and end: its imports (the first optimizer imports
# torch._dynamo), then the time from its last line to its end, with the interpreter's
# teardown or without it (os._exit, as `sweeps.cli.console` ends).
PROCESS = """
import os, sys, time
start = time.time()
import sweeps.commands.worker, sweeps.worker, torch
torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
print(time.time() - start, time.time(), flush=True)
if sys.argv[1] == "fast":
    os._exit(0)
"""


def process_start_and_end(*, fast: bool) -> tuple[float, float]:
    """(seconds importing, seconds ending) of a fresh worker-like process."""
    child = subprocess.Popen(
        [sys.executable, "-c", PROCESS, "fast" if fast else "slow"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    assert child.stdout is not None
    imports, last_line = map(float, child.stdout.readline().split())
    child.wait()
    return imports, time.time() - last_line


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()
