"""What a command trial costs beyond its script: the same script run by hand N times, and
swept as N command trials by one worker, side by side in one run.

    .venv/bin/python bench/command_trials.py            # 20 trials; prints `name: value`

The script (written to a temporary folder) is a Python program that prints ``--reports``
JSON lines with a value, like a short training run; its own start-up is Python's. By hand,
each run is one ``subprocess.run`` reading its output. Swept, a `sweeps.worker.Worker`
(in this process, started before the clock: its torch import and database opening are not
per trial) runs a launched study of N trials on SQLite, its command expanded, started under
the guard (`objectives.command.guard`), its output read, every value reported to the pruner
(median) and stored, the trial told.

- seconds_per_trial_by_hand, seconds_per_trial_swept: wall time over N;
- overhead_seconds_per_trial: their difference (the goal: under 1 s);
- overhead_ratio: swept over by hand;
- guard_start_seconds: the guard's share of it (`CommandProcess` of ``true`` against
  ``subprocess.run`` of ``true``, 20 each).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SCRIPT = """
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--reports", type=int)
a = p.parse_args()
for step in range(1, a.reports + 1):
    print(json.dumps({"step": step, "value": (a.lr - 0.01) ** 2 + 1 / step, "lr": a.lr}))
"""


def by_hand(script: Path, trials: int, reports: int) -> float:
    start = time.perf_counter()
    for i in range(trials):
        lr = 10 ** (-3 + 2 * i / trials)
        out = subprocess.run(
            [sys.executable, str(script), f"--lr={lr!r}", f"--reports={reports}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert len(out.splitlines()) == reports
    return time.perf_counter() - start


def swept(folder: Path, script: Path, trials: int, reports: int) -> float:
    import optuna

    import storage
    from sweeps.config import parse_config
    from sweeps.study import launch
    from sweeps.worker import Worker

    config = parse_config(
        {
            "study": "bench",
            "objective": {
                "command": f"{sys.executable} {script} --lr={{lr}} --reports={{epochs}}"
            },
            "direction": "minimize",
            "budget": {"trials": trials, "epochs": reports},
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "median", "n_startup_trials": trials},  # measure, never prune
            "space": {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "schedule": {"cosine": {}}},
        }
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = storage.open_database(f"sqlite:///{folder / 'bench.db'}")
    launch(db, config)
    worker = Worker(db, "bench", artifacts=folder / "artifacts", log=lambda _: None)
    start = time.perf_counter()
    assert worker.run() == 0
    elapsed = time.perf_counter() - start
    done = [t for t in worker.handle.study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == trials and all(len(t.intermediate_values) == reports for t in done)
    db.close()
    return elapsed


def guard_start(folder: Path, runs: int = 20) -> float:
    import os

    from objectives.command.process import CommandProcess

    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run(["true"], check=True)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(runs):
        process = CommandProcess(["true"], env=os.environ, grace=1)
        list(process.lines())
        assert process.wait() == 0
    return (time.perf_counter() - start - plain) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials (runs by hand)")
    parser.add_argument("--reports", type=int, default=10, help="values each run prints")
    args = parser.parse_args()
    if args.trials < 1 or args.reports < 1:
        parser.error("--trials and --reports must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = folder / "train.py"
        script.write_text(SCRIPT)
        hand = by_hand(script, args.trials, args.reports)
        sweep = swept(folder, script, args.trials, args.reports)
        guard = guard_start(folder)
    print(f"trials: {args.trials}, reports per trial: {args.reports}")
    print(f"seconds_per_trial_by_hand: {hand / args.trials:.3f}")
    print(f"seconds_per_trial_swept: {sweep / args.trials:.3f}")
    print(f"overhead_seconds_per_trial: {(sweep - hand) / args.trials:.3f}")
    print(f"overhead_ratio: {sweep / hand:.2f}")
    print(f"guard_start_seconds: {guard:.3f}")


if __name__ == "__main__":
    main()
