"""What pruning saves: the demo study with no pruning, median, successive halving and
hyperband, side by side.

    .venv/bin/python bench/pruning.py [CONFIG] [--trials 60] [--seeds 3] [--processes 2]

CONFIG (default examples/digits.yaml) is run as written except for its pruner, its trial
count (``--trials``) and its seed (0, 1, ... ``--seeds``), one trial at a time (pruners
decide against finished trials; a stack would start many blind). For each seed the study
without pruning sets the target: its best value, less 0.5 accuracy points (0.005; for a
minimized metric, plus 0.005). Printed per pruner, over seeds:

- ``epochs_total_<pruner>``: epochs trained by the whole study;
- ``best_<pruner>``: its best value;
- ``epochs_to_match_<pruner>``: epochs trained (trials in order) until a finished trial
  first reached the target; a study that never did counts its total and is counted in
  ``unmatched_seeds_<pruner>``;
- ``fraction_<pruner>``: that over the unpruned study's total epochs (the same seed).

``epoch_budget_fraction_to_match_full_search`` is the lowest mean fraction among pruners that
matched on every seed.
"""

from __future__ import annotations

import statistics
from typing import Any

from studies import Trial, best_value, config_arguments, run_variants

PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"name": "none"},
    "median": {"name": "median", "n_startup_trials": 8, "n_warmup_steps": 4},
    "successive_halving": {"name": "successive_halving", "min_resource": 1, "reduction_factor": 3},
    "hyperband": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3},
}
MARGIN = 0.005  # half an accuracy point


def epochs_to_reach(trials: list[Trial], target: float, direction: str) -> int | None:
    """Epochs trained by trials in number order up to the first finished one at ``target``."""
    spent = 0
    for t in trials:
        spent += t.epochs
        if t.state == "COMPLETE" and t.value is not None:
            if (t.value >= target) if direction == "maximize" else (t.value <= target):
                return spent
    return None


def main() -> None:
    args = config_arguments(__doc__ or "", trials=60)
    direction, results = run_variants(args, {p: {"pruner": v} for p, v in PRUNERS.items()})
    fractions: dict[str, float] = {}
    matched_everywhere: set[str] = set()
    for pruner in PRUNERS:
        totals, bests, spent, fraction, unmatched = [], [], [], [], 0
        for seed in range(args.seeds):
            full = results[("none", seed)]
            full_best = best_value(full, direction)
            target = full_best - MARGIN if direction == "maximize" else full_best + MARGIN
            trials = results[(pruner, seed)]
            total = sum(t.epochs for t in trials)
            reached = epochs_to_reach(trials, target, direction)
            unmatched += reached is None
            totals.append(total)
            bests.append(best_value(trials, direction))
            spent.append(total if reached is None else reached)
            fraction.append(spent[-1] / sum(t.epochs for t in full))
        fractions[pruner] = statistics.fmean(fraction)
        if not unmatched:
            matched_everywhere.add(pruner)
        print(f"epochs_total_{pruner}: {statistics.fmean(totals):.0f}")
        print(f"best_{pruner}: {statistics.fmean(bests):.4f}")
        print(f"best_{pruner}_per_seed: {' '.join(f'{b:.4f}' for b in bests)}")
        print(f"epochs_to_match_{pruner}: {statistics.fmean(spent):.0f}")
        print(f"epochs_to_match_{pruner}_per_seed: {' '.join(map(str, spent))}")
        print(f"fraction_{pruner}: {fractions[pruner]:.3f}")
        print(f"unmatched_seeds_{pruner}: {unmatched}")
    pruned = [p for p in PRUNERS if p != "none" and p in matched_everywhere]
    if pruned:
        winner = min(pruned, key=fractions.__getitem__)
        print(f"best_pruner: {winner}")
        print(f"epoch_budget_fraction_to_match_full_search: {fractions[winner]:.3f}")
    else:
        print("best_pruner: none matched the unpruned study on every seed")


if __name__ == "__main__":
    main()
