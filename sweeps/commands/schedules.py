"""`sweeps schedules`: every family's formula, a sampled lr table, and its parameters.
`sweeps schedules plot CONFIG_OR_FAMILY --out FILE.png`: preview the curves before training."""

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
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    plot = actions.add_parser(
        "plot",
        help="draw sampled lr curves of a config's families (or of named families) to a PNG",
        description="Preview schedules before spending compute: for a config, a sample of "
        "each family's curves from its search space over the configured run length; for "
        "family names (comma-separated, or 'all'), each at typical settings.",
    )
    plot.add_argument("target", metavar="CONFIG_OR_FAMILY", help="a config file, or families")
    plot.add_argument("--out", required=True, metavar="FILE.png", help="the image to write")
    plot.add_argument(
        "--samples", type=int, default=5, help="curves per family from a config (default 5)"
    )
    plot.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    plot.add_argument("--lr", type=float, default=0.1, help="α0 for families (default 0.1)")
    plot.add_argument(
        "--total-steps",
        type=int,
        default=None,
        help="run length (default: from the config's epochs and batch size; 1000 for families)",
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
    if args.action == "plot":
        return plot(args)
    return table(args)


def plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    import schedules
    from sweeps.results.schedule_preview import example_schedules, sample_config
    from sweeps.results.schedule_preview import plot as draw

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: must name a .png file, got {args.out!r}")
    if not 1 <= args.samples <= 20:
        raise UsageError(f"--samples: must be an integer in [1, 20], got {args.samples}")
    if args.total_steps is not None and args.total_steps < 2:
        raise UsageError(f"--total-steps: must be an integer >= 2, got {args.total_steps}")
    if Path(args.target).is_file():
        import objectives
        from sweeps.commands.common import load_checked_config

        config = load_checked_config(args.target)
        if args.total_steps is None and not isinstance(
            objectives.resolve(config.objective_spec), objectives.Task
        ):
            raise UsageError(
                f"--total-steps: required for objective {config.objective_name!r} "
                "(only a task knows its steps per epoch; a function runs its own loop)"
            )
        samples = sample_config(
            config, per_family=args.samples, seed=args.seed, total_steps=args.total_steps
        )
        title = f"{config.study}: {args.samples} sampled schedules per family"
    else:
        names = list(schedules.SCHEDULES) if args.target == "all" else args.target.split(",")
        unknown = [n for n in names if n not in schedules.SCHEDULES]
        if unknown:
            raise UsageError(
                f"CONFIG_OR_FAMILY: {args.target!r} is neither a config file nor families "
                f"(unknown {', '.join(map(repr, unknown))}); families: "
                f"{', '.join(schedules.SCHEDULES)}, or all"
            )
        total = args.total_steps or 1000
        try:
            settings = {n: examples(args.lr, total)[n] for n in names}
            samples = example_schedules(settings, total)
        except schedules.ScheduleError as e:
            raise UsageError(str(e).replace(".lr:", " --lr:")) from None
        title = f"typical settings, α0 = {args.lr:g}, {total} steps"
    try:
        draw(samples, out, title)
    except OSError as e:
        raise UsageError(f"--out: cannot write {args.out}: {e.strerror or e}") from None
    print(out)
    return 0


def table(args: argparse.Namespace) -> int:
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
