"""Does tuning the schedule family pay? An equal trial budget per family, on three tasks.

    .venv/bin/python bench/families.py [--tasks digits_mlp,digits_cnn,tiny_lm] [--seeds 3]
                                       [--trials 12,8,8] [--stack 4] [--processes 2]

For every task, schedule family (constant, step, polynomial, inverse_power, grad_norm,
cosine, linear, wsd, onecycle) and seed: one study of ``--trials`` trials (per task) of TPE
(the first half random) over that family's parameters, the lr and the warmup
(`studies.Task.family_space`), with the optimizer and batch size fixed, no pruning, stacks of
``--stack``. Seed s gives every family's study the same sampler seed and the same trial
initialisations. All studies of one run share the machine (``--processes`` at a time).

Printed per task and family, over the seeds: the best trial's validation accuracy
(``acc``; digits) and validation loss (``loss``; for digits that of the most accurate trial),
as ``_mean``, ``_std``, ``_min``, ``_max``; then per task how constant and the best decaying
family compare, seed by seed (``_wins`` counts seeds where the decaying family is better).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from studies import FAMILIES, TASKS, Trial, best, config, run_studies

DEFAULT_TRIALS = {"digits_mlp": 12, "digits_cnn": 8, "tiny_lm": 8}


def figures(trials: list[Trial], direction: str) -> dict[str, float]:
    """The best trial's accuracy (digits) and validation loss."""
    found = best(trials, direction)
    if found is None or found.value is None:
        return {"loss": float("nan")} | ({"acc": float("nan")} if direction == "maximize" else {})
    loss = found.value if direction == "minimize" else found.val_loss
    out = {"loss": float("nan") if loss is None else loss}
    return out | ({"acc": found.value} if direction == "maximize" else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits_mlp,digits_cnn,tiny_lm")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", default=None, help="per task, comma-separated")
    parser.add_argument("--stack", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    counts = (
        dict(zip(tasks, map(int, args.trials.split(",")), strict=True))
        if args.trials
        else {t: DEFAULT_TRIALS[t] for t in tasks}
    )
    jobs: list[tuple[str, str, int]] = []
    configs: list[dict[str, Any]] = []
    for name in tasks:
        task = TASKS[name]
        for seed in range(args.seeds):
            for family in FAMILIES:
                jobs.append((name, family, seed))
                trials = counts[name]
                sampler = {"name": "tpe", "n_startup_trials": trials // 2}
                space = task.family_space(family)
                configs.append(
                    config(
                        task, space, trials=trials, seed=seed, sampler=sampler, stack=args.stack
                    )
                )
    # The last task listed first: tiny_lm's studies are the longest, so the pool ends evenly.
    order = sorted(range(len(jobs)), key=lambda i: -tasks.index(jobs[i][0]))
    start = time.perf_counter()
    ran = run_studies([configs[i] for i in order], args.processes)
    results = dict(zip(order, ran, strict=True))
    print(f"seconds_total: {time.perf_counter() - start:.0f}")

    for name in tasks:
        task = TASKS[name]
        print(f"trials_per_family_{name}: {counts[name]}")
        per_family: dict[str, list[dict[str, float]]] = {}
        for i, (task_name, family, _) in enumerate(jobs):
            if task_name == name:
                per_family.setdefault(family, []).append(figures(results[i], task.direction))
        for family, seeds in per_family.items():
            for key in seeds[0]:
                values = [s[key] for s in seeds]
                print(f"{name}_{family}_{key}_mean: {statistics.fmean(values):.4f}")
                print(f"{name}_{family}_{key}_std: {statistics.stdev(values):.4f}")
                print(f"{name}_{family}_{key}_min: {min(values):.4f}")
                print(f"{name}_{family}_{key}_max: {max(values):.4f}")
        key = "acc" if task.direction == "maximize" else "loss"
        sign = 1 if task.direction == "maximize" else -1
        means = {f: statistics.fmean(s[key] for s in v) for f, v in per_family.items()}
        ranked = sorted(means, key=lambda f: -sign * means[f])
        print(f"{name}_ranking: {' > '.join(ranked)}")
        top = next(f for f in ranked if f != "constant")
        gaps = [
            sign * (a[key] - c[key])
            for a, c in zip(per_family[top], per_family["constant"], strict=True)
        ]
        print(f"{name}_best_decay_family: {top}")
        print(f"{name}_{top}_minus_constant_{key}_mean: {statistics.fmean(gaps):+.4f}")
        print(f"{name}_{top}_beats_constant_seeds: {sum(g > 0 for g in gaps)}/{len(gaps)}")


if __name__ == "__main__":
    main()
