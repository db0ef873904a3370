"""`sweeps lr-range CONFIG`: an lr range test for the config's task, for each optimizer in
its space; prints a suggested ``space.lr`` range and plots loss against lr
(`objectives.lr_range`). ``--write`` puts the range into a copy of the config."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from sweeps.errors import UsageError

HELP = "lr range test: suggest the space's lr range from a short run with a growing lr"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the sweep's YAML config (a built-in task)")
    parser.add_argument(
        "--steps", type=int, default=300, help="optimizer steps per test (default 300)"
    )
    parser.add_argument("--min-lr", type=float, default=1e-5, help="first lr (default 1e-5)")
    parser.add_argument("--max-lr", type=float, default=10.0, help="last lr (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="init and batches (default 0)")
    parser.add_argument(
        "--out",
        metavar="FILE.png",
        default=None,
        help="the plot of loss against lr (default: <config>.lr-range.png beside the config)",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="also write a copy of the config with the suggested range (<config>.lr-range.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    import objectives
    from objectives.lr_range import run_test
    from sweeps.commands.common import load_checked_config
    from sweeps.config import load_yaml
    from sweeps.results.lr_range_png import plot
    from sweeps.space import parse_space

    if args.steps < 50:
        raise UsageError(f"--steps: must be an integer >= 50, got {args.steps}")
    if not 0 < args.min_lr < args.max_lr:
        raise UsageError(
            f"--min-lr, --max-lr: must satisfy 0 < min-lr < max-lr, got {args.min_lr:g} "
            f"and {args.max_lr:g}"
        )
    config = load_checked_config(args.config)
    task = objectives.resolve(config.objective_spec)
    if not isinstance(task, objectives.Task):
        raise UsageError(
            f"objective: lr-range trains a task (objectives.Task or a built-in one); "
            f"{config.objective_name} runs its own loop"
        )
    source = Path(args.config)
    out = Path(args.out or source.with_suffix(".lr-range.png"))
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: must name a .png file, got {str(out)!r}")
    space = parse_space(config.space)
    tests = []
    for optimizer in space.training["optimizer"].values():
        params = space.center(optimizer)
        try:
            test = run_test(
                task,
                params,
                args=space.run_args(config.objective_args, params),
                steps=args.steps,
                min_lr=args.min_lr,
                max_lr=args.max_lr,
                seed=args.seed,
            )
        except ValueError as e:  # diverged before the loss could be read
            raise UsageError(f"--min-lr: {e}") from None
        low, high = test.suggested
        print(
            f"{optimizer}: loss falls fastest at lr {test.steepest:.3g} and is lowest at "
            f"{test.lowest:.3g} ({len(test.lrs)} steps, batch {params['batch_size']})"
        )
        tests.append(test)
    low = _round(min(t.suggested[0] for t in tests))
    high = _round(max(t.suggested[1] for t in tests))
    suggestion = {"low": low, "high": high, "log": True}
    print(f"suggested space.lr: {{low: {low:g}, high: {high:g}, log: true}}")
    plot(tests, out, title=f"lr range test: {config.objective_name} ({config.study})")
    print(f"plot: {out}")
    if args.write:
        data: dict[str, Any] = load_yaml(source)
        data["space"]["lr"] = suggestion
        copy = source.with_suffix(".lr-range.yaml")
        copy.write_text(
            f"# {source.name} with the lr range `sweeps lr-range` suggested\n"
            + yaml.safe_dump(data, sort_keys=False)
        )
        print(f"config with this range: {copy}")
    return 0


def _round(lr: float) -> float:
    """Two significant digits: a range, not a measurement."""
    return float(f"{lr:.2g}") if math.isfinite(lr) else lr
