"""`sweeps report --study NAME --out DIR`: an HTML page and PNGs of what the study found."""

from __future__ import annotations

import argparse

from sweeps.commands.common import add_storage_arguments
from sweeps.errors import UsageError

HELP = "write an HTML report (interactive) and PNG images of a study's results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument(
        "--top", type=int, default=8, help="trials shown in the curve plots (default 8)"
    )
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sweeps.commands.common import open_database
    from sweeps.results.report import write_report
    from sweeps.results.study_data import StudyData
    from sweeps.study import load

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory")
    if not 1 <= args.top <= 50:
        raise UsageError(f"--top: must be an integer in [1, 50], got {args.top}")
    db = open_database(args)
    handle = load(db, args.study)
    try:
        written = write_report(StudyData(db, handle), out, top=args.top)
    except OSError as e:
        raise UsageError(f"--out: cannot write {args.out}: {e.strerror or e}") from None
    for path in written:
        print(path)
    return 0
