"""Which sampler finds a good schedule soonest: random, TPE, GP and CMA-ES on one budget.

    .venv/bin/python bench/samplers.py [CONFIG] [--trials 40] [--seeds 3] [--processes 2]

CONFIG (default examples/digits.yaml: nine schedule families, their parameters, optimizer,
batch size, weight decay) runs with each sampler, no pruning (every trial trains to the end,
so the samplers are compared on the same information), one trial at a time, seeds 0, 1, ...
Each sampler keeps its defaults in lr-sweeps (TPE multivariate and grouped; GP and TPE start
with 10 random trials). GP and CMA-ES model only the parameters every trial has (CMA-ES
only the numeric ones); the conditional schedule parameters they sample at random.

Printed: ``best_after_<n>_<sampler>``, the best value after the first n trials (mean over
seeds, and ``_std``), for n = 10, 20, ... up to ``--trials``; ``final_rank`` orders the
samplers by their best after all trials; ``best_params_<sampler>_seed<s>`` shows each study's
best trial (are the config's ranges where the optima are?).
"""

from __future__ import annotations

import statistics
from typing import Any

from studies import best, best_value, config_arguments, run_variants

SAMPLERS = ("random", "tpe", "gp", "cmaes")


def main() -> None:
    args = config_arguments(__doc__ or "", trials=40)
    variants = {n: {"sampler": {"name": n}, "pruner": {"name": "none"}} for n in SAMPLERS}
    direction, results = run_variants(args, variants)
    checkpoints = sorted({*range(10, args.trials + 1, 10), args.trials})
    final: dict[str, float] = {}
    for name in SAMPLERS:
        for n in checkpoints:
            values = [best_value(results[(name, s)][:n], direction) for s in range(args.seeds)]
            print(f"best_after_{n}_{name}: {statistics.fmean(values):.4f}")
            print(f"best_after_{n}_{name}_std: {statistics.stdev(values):.4f}")
            final[name] = statistics.fmean(values)
    for name, seed in results:  # where the optimum lies: are the config's ranges right?
        found = best(results[(name, seed)], direction)
        if found is not None:
            shown = " ".join(f"{k}={_short(v)}" for k, v in sorted(found.params.items()))
            print(f"best_params_{name}_seed{seed}: {shown}")
    sign = 1 if direction == "maximize" else -1
    print(f"final_rank: {' > '.join(sorted(final, key=lambda k: -sign * final[k]))}")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
