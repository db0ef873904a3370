"""The `sweeps` command line: one subcommand per entry of `COMMANDS`.

Heavy imports (torch, optuna) happen inside the commands, so `sweeps --help` stays fast.
Exit codes: 0 ok, 1 run failed, 2 bad input (``error:`` lines naming the field, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sweeps.errors import RunFailed, UsageError

# name -> module in sweeps.commands with HELP, add_arguments(parser), run(args) -> int
COMMANDS = {
    "validate": "validate",
    "launch": "launch",
    "worker": "worker",
    "run": "run",
    "status": "status",
    "export": "export",
    "enqueue": "enqueue",
    "schedules": "schedules",
    "report": "report",
    "dashboard": "dashboard",
    "storage-proxy": "storage_proxy",
}


def _command(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"sweeps.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeps", description="Hyperparameter sweeps over learning-rate schedules."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        command = _command(name)
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_optuna()
    try:
        code: int = _command(args.command).run(args)
        return code
    except UsageError as e:
        _print_errors(e)
        return 2
    except RunFailed as e:
        _print_errors(e)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The `sweeps` program: `main`, then end the process without the interpreter's
    teardown. Freeing torch's and Optuna's modules takes over a second (`bench/worker_phases.py`
    prints seconds_exit_with_teardown), which every worker pays when a study ends. Nothing is
    left to write by then: output is flushed and databases closed (SQLite folds its
    write-ahead log into the file)."""
    code = main()
    from sweeps.commands.common import close_databases

    close_databases()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _quiet_optuna() -> None:
    """Our own lines say what happened; Optuna's INFO lines would repeat them. (Optuna sets
    its logger's level when first imported, so setting the level alone is overridden.)"""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _print_errors(error: Exception) -> None:
    for line in str(error).splitlines():
        print(f"error: {line}", file=sys.stderr)
