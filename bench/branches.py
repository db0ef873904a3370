"""Cooldown branches: the same warmup-stable-decay search with and without
`branches: {per_trunk: M}`, side by side, several seeds.

    .venv/bin/python bench/branches.py                    # digits_mlp and tiny_lm, 3 seeds

Each study runs through lr-sweeps' own code (`bench/studies.py`: launch + one in-process
worker on a fresh SQLite file, one trial at a time, no pruner, so every trial trains to its
end and the epochs compare cleanly). The space is the task's `wsd` search of
`bench/studies.py` (``decay_fraction`` 0.1–0.5, a warmup of none or a tenth of the run) with
the ``decay_shape`` searched too. Printed per task:

- epochs_trained_ratio: the epochs the studies with branches trained (reported minus those
  their branches took from trunks) over those without, summed over the seeds (the goal:
  at most 0.5);
- best_without / best_with: each seed's best value, as mean ± std (min–max);
- branches_per_study: branch trials per study, and their trunks.
"""

from __future__ import annotations

import argparse
from typing import Any

from studies import TASKS, best_value, config, run_studies, spread

DEFAULT_TRIALS = {"digits_mlp": 32, "tiny_lm": 16}


def wsd_space(task: str) -> dict[str, Any]:
    space = TASKS[task].family_space("wsd")
    space["schedule"]["wsd"]["decay_shape"] = ["linear", "cosine", "1-sqrt"]
    return space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits_mlp,tiny_lm")
    parser.add_argument("--trials", type=int, help="per study (default: 32 digits, 16 tiny_lm)")
    parser.add_argument("--per-trunk", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if unknown := [t for t in tasks if t not in TASKS]:
        parser.error(f"--tasks: unknown {', '.join(unknown)}; known: {', '.join(TASKS)}")
    if not 2 <= args.per_trunk <= 64:
        parser.error(f"--per-trunk: must be in 2..64, got {args.per_trunk}")
    jobs = [(task, seed, on) for task in tasks for seed in range(args.seeds) for on in (0, 1)]
    configs = []
    for task, seed, on in jobs:
        trials = args.trials or DEFAULT_TRIALS.get(task, 16)
        study = config(
            TASKS[task],
            wsd_space(task),
            trials=trials,
            seed=seed,
            sampler={"name": "tpe", "n_startup_trials": 8},
        )
        configs.append(study | ({"branches": {"per_trunk": args.per_trunk}} if on else {}))
    results = dict(zip(jobs, run_studies(configs, args.processes), strict=True))
    for task in tasks:
        direction = TASKS[task].direction
        trained = {0: 0, 1: 0}
        best: dict[int, list[float]] = {0: [], 1: []}
        branches = []
        for seed in range(args.seeds):
            for on in (0, 1):
                trials = results[(task, seed, on)]
                trained[on] += sum(t.epochs - t.reused for t in trials)
                best[on].append(best_value(trials, direction))
            branches.append(sum(t.reused > 0 for t in results[(task, seed, 1)]))
        print(f"# {task}: {direction}, {args.seeds} seeds, per_trunk {args.per_trunk}")
        print(f"{task}_epochs_trained_without: {trained[0]}")
        print(f"{task}_epochs_trained_with: {trained[1]}")
        print(f"{task}_epochs_trained_ratio: {trained[1] / trained[0]:.3f}")
        print(f"{task}_best_without: {spread(best[0])}")
        print(f"{task}_best_with: {spread(best[1])}")
        print(f"{task}_branches_per_study: {branches}")


if __name__ == "__main__":
    main()
