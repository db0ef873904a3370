"""`sweeps validate CONFIG`: check a config without running or writing anything."""

from __future__ import annotations

import argparse

HELP = "check a config: exit 0 if valid, else 2 with one 'error: field: why' line per problem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the sweep's YAML config")


def run(args: argparse.Namespace) -> int:
    from sweeps.commands.common import load_checked_config

    config = load_checked_config(args.config)
    families = list(config.space["schedule"])
    print(
        f"ok: study {config.study!r}, objective {config.objective_name}, "
        f"{config.budget.trials} trials of up to {config.budget.epochs} epochs, "
        f"{len(families)} schedule families ({', '.join(families)})"
    )
    return 0
