"""`sweeps schedules`: every family's formula, a sampled lr table, and its parameters."""

from __future__ import annotations

import argparse
from typing import Any

from sweeps.errors import UsageError

HELP = "show every schedule family: formula, sampled lr over a run, parameters and ranges"
FRACTIONS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.9, 1.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=float, default=0.1, help="α0 for the table (default 0.1)")
    parser.add_argument(
        "--total-steps", type=int, default=1000, help="run length T for the table (default 1000)"
    )


def examples(lr: float, total: int) -> dict[str, dict[str, Any]]:
    """Each family at typical settings over a run of ``total`` steps."""
    warm = total // 20
    return {
        "constant": {"lr": lr},
        "polynomial": {"lr": lr, "total_steps": total, "power": 2.0},
        "inverse_power": {"lr": lr, "total_steps": total, "power": 0.5},
        "grad_norm": {"lr": lr, "window": 50},
        "step": {"lr": lr, "decay_rate": 0.5, "decay_steps": max(1, total // 4)},
        "exponential": {"lr": lr, "decay_rate": 0.5, "decay_steps": max(1, total // 4)},
        "cosine": {"lr": lr, "total_steps": total - warm, "warmup_steps": warm},
        "linear": {"lr": lr, "total_steps": total},
        "wsd": {"lr": lr, "total_steps": total - warm, "warmup_steps": warm},
        "onecycle": {"lr": lr, "total_steps": total},
        "plateau": {"lr": lr, "patience": 5},
    }


def run(args: argparse.Namespace) -> int:
    import schedules

    if args.total_steps < 20:
        raise UsageError(f"--total-steps: must be an integer >= 20, got {args.total_steps}")
    total = args.total_steps
    steps = [min(total - 1, round(f * total)) for f in FRACTIONS]
    try:
        built = {name: schedules.build(name, **p) for name, p in examples(args.lr, total).items()}
    except schedules.ScheduleError as e:
        raise UsageError(str(e).replace(".lr:", " --lr:")) from None

    print(f"Learning rate at step t of a {total}-step run (α0 = {args.lr:g}):\n")
    print(f"{'family':14}" + "".join(f"{'t=' + str(t):>11}" for t in steps))
    for name, sched in built.items():
        if sched.closed_form:
            print(f"{name:14}" + "".join(f"{sched.lr_at(t):>11.4g}" for t in steps))
        else:
            print(f"{name:14}{'adaptive: follows training (gradient norms / metric)':>55}")

    print("\nFamilies, formulas and parameters (every family also takes lr and warmup_steps):")
    for name, cls in schedules.SCHEDULES.items():
        print(f"\n{name}: {cls.doc}\n  lr(t) = {cls.formula}")
        for key, param in cls.PARAMS.items():
            note = "required" if param.required else f"default {param.default!r}"
            if param.default is None:
                note = "optional"
            print(f"  {key:16} {param.allowed()}; {note}")
        print(f"  example: {built[name]!r}")
    return 0
