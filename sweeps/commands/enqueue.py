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
    import sys

    from sweeps.commands.common import open_database
    from sweeps.errors import UsageError
    from sweeps.space import check_point
    from sweeps.study import load

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as e:
        raise UsageError(f"--params: not valid JSON: {e.msg} at character {e.pos}") from None
    except RecursionError:
        raise UsageError("--params: nested too deeply; give an object of plain values") from None
    except ValueError:  # an integer past Python's limit on digits
        limit = sys.get_int_max_str_digits()
        raise UsageError(f"--params: holds an integer of more than {limit} digits") from None
    if not isinstance(params, dict):
        raise UsageError("--params: must be a JSON object of parameter names to values")
    for name, value in params.items():
        if not isinstance(value, str | int | float | bool):
            kind = {"list": "an array", "dict": "an object"}.get(type(value).__name__, "null")
            raise UsageError(f"{name}: must be a number, string or boolean, got {kind}")
    db = open_database(args)
    handle = load(db, args.study)
    errors = check_point(handle.space, params)
    if errors:
        raise UsageError("\n".join(errors))
    handle.study.enqueue_trial(params)
    print(f"queued for study {args.study!r}: {json.dumps(params)}")
    return 0
