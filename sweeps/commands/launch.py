"""`sweeps launch CONFIG`: create the study in storage, ready for workers."""

from __future__ import annotations

import argparse
import sys

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
    if handle.note:
        print(f"note: {handle.note}", file=sys.stderr)
    verb = "resumed" if args.resume and not handle.note else "created"
    print(
        f"{verb} study {config.study!r} in {mask_url(db.url)}: "
        f"{config.budget.trials} trials of up to {config.budget.epochs} epochs"
    )
    print(f"start workers with: {worker_command(args, handle.config.study, db.url)}")
    return 0


def worker_command(args: argparse.Namespace, study: str, url: str) -> str:
    """A `sweeps worker` command line that opens this database as written, without showing
    a password (a URL with one is left to ``--storage-file``)."""
    import shlex

    from storage import mask_url

    command = f"sweeps worker --study {shlex.quote(study)}"
    if args.storage_file:
        return f"{command} --storage-file {shlex.quote(args.storage_file)}"
    if mask_url(url) != url:
        return f"{command} --storage-file FILE  (FILE: a file holding the database URL)"
    if args.storage:
        return f"{command} --storage {shlex.quote(url)}"
    return command  # $SWEEPS_STORAGE or the default, as here
