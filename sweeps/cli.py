"""The `sweeps` command line: one subcommand per entry of `COMMANDS`.

Heavy imports (torch, optuna) happen inside the commands, so `sweeps --help` stays fast.
Exit codes: 0 ok, 1 run failed, 2 bad input (one ``error:`` line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sweeps import schedules_cmd
from sweeps.errors import UsageError

# (help, add the command's arguments, run it and return the exit code)
Command = tuple[
    str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]
]

COMMANDS: dict[str, Command] = {
    "schedules": (schedules_cmd.HELP, schedules_cmd.add_arguments, schedules_cmd.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeps", description="Hyperparameter sweeps over learning-rate schedules."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, _, run = COMMANDS[args.command]
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
