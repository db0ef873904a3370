"""`sweeps status --study NAME`: trial counts by state, the best trial, the best per family."""

from __future__ import annotations

import argparse
import json

from sweeps.commands.common import add_storage_arguments

HELP = "trial counts by state, best trial, best per schedule family"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study's name")
    add_storage_arguments(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    from sweeps.commands.common import open_database
    from sweeps.study import load
    from sweeps.summary import format_table, summarize

    db = open_database(args)
    summary = summarize(db, load(db, args.study))
    print(json.dumps(summary, indent=2) if args.format == "json" else format_table(summary))
    return 0
