"""`sweeps enqueue --study NAME --params JSON`: queue a known schedule (warm start)."""

from __future__ import annotations

import argparse

from sweeps.commands.common import add_storage_arguments

HELP = "queue a trial with given parameters (a known schedule, to warm-start the search)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument(
        "--params",
        required=True,
        metavar="JSON",
        help='trial parameters, e.g. \'{"schedule": "cosine", "lr": 0.1}\'; '
        "parameters left out are sampled",
    )
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from sweeps.commands.common import open_database
    from sweeps.errors import UsageError
    from sweeps.space import check_point
    from sweeps.study import load

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as e:
        raise UsageError(f"--params: not valid JSON: {e.msg} at character {e.pos}") from None
    if not isinstance(params, dict):
        raise UsageError("--params: must be a JSON object of parameter names to values")
    db = open_database(args)
    handle = load(db, args.study)
    errors = check_point(handle.space, params)
    if errors:
        raise UsageError("\n".join(errors))
    handle.study.enqueue_trial(params)
    print(f"queued for study {args.study!r}: {json.dumps(params)}")
    return 0
