"""A whole study with and without stacking, side by side: `sweeps run` on the same config.

    .venv/bin/python bench/stacked_study.py [CONFIG] [--workers 2] [--stack 16] [--repeat 1]

Runs the config twice on fresh SQLite files (one at a time, so they don't share the cores)
and prints the wall time of each (and where it went: before the first trial, the trials'
span, after the last trial), their ratio, and the best value and finished count of each,
so speed and result quality are read together. ``--repeat N`` runs N such pairs back to back
(on a shared machine, other load shifts single runs) and also prints the median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def run(
    config: Path, workers: int, stack: int, workdir: Path
) -> tuple[float, optuna.Study, float]:
    url = f"sqlite:///{workdir / f'stack{stack}.db'}"
    cmd = [
        sys.executable,
        "-m",
        "sweeps",
        "run",
        str(config),
        "--workers",
        str(workers),
        "--stack",
        str(stack),
        "--storage",
        url,
    ]
    start, wall = time.perf_counter(), time.time()
    subprocess.run(cmd, check=True, capture_output=True, cwd=workdir)
    seconds = time.perf_counter() - start
    name = optuna.get_all_study_names(storage=url)[0]
    return seconds, optuna.load_study(study_name=name, storage=url), wall


def timeline(study: optuna.Study, wall: float, seconds: float) -> dict[str, float]:
    """Where the command's seconds went: before the first trial started (the launch, the
    workers' start), the trials' span, and after the last one ended (the workers' end, the
    summary)."""
    first = min(t.datetime_start.timestamp() for t in study.trials if t.datetime_start)
    last = max(t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete)
    return {
        "to_first_trial": first - wall,
        "trials_span": last - first,
        "after_last_trial": wall + seconds - last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="examples/digits.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stack", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    config = Path(args.config).resolve()
    ratios = []
    for pair in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory() as tmp:
            results = {k: run(config, args.workers, k, Path(tmp)) for k in (1, args.stack)}
        suffix = f"_run{pair}" if args.repeat > 1 else ""
        for k, (seconds, study, wall) in results.items():
            finished = [t for t in study.trials if t.state.is_finished()]
            epochs = sum(len(t.intermediate_values) for t in finished)
            print(f"seconds_stack{k}{suffix}: {seconds:.1f}")
            for part, part_seconds in timeline(study, wall, seconds).items():
                print(f"seconds_{part}_stack{k}{suffix}: {part_seconds:.1f}")
            print(f"best_value_stack{k}{suffix}: {study.best_value:.4f}")
            print(f"finished_trials_stack{k}{suffix}: {len(finished)}")
            print(f"epochs_trained_stack{k}{suffix}: {epochs}")
        ratios.append(results[1][0] / results[args.stack][0])
        print(f"study_speedup_stack{args.stack}{suffix}: {ratios[-1]:.2f}", flush=True)
    if args.repeat > 1:
        print(f"study_speedup_stack{args.stack}_median: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()
