"""`sweeps launch CONFIG`: create the study in storage, ready for workers."""

from __future__ import annotations

import argparse

from sweeps.commands.common import add_storage_arguments

HELP = "create the study from a config (refuses an existing name unless --resume)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the sweep's YAML config")
    add_storage_arguments(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing study of this name (its budget may grow)",
    )


def run(args: argparse.Namespace) -> int:
    from storage import mask_url
    from sweeps.commands.common import load_checked_config, open_database
    from sweeps.study import launch

    config = load_checked_config(args.config)
    db = open_database(args, create=True)
    handle = launch(db, config, resume=args.resume)
    verb = "resumed" if args.resume else "created"
    print(
        f"{verb} study {config.study!r} in {mask_url(db.url)}: "
        f"{config.budget.trials} trials of up to {config.budget.epochs} epochs"
    )
    print(f"start workers with: sweeps worker --study {handle.config.study}")
    return 0
