"""The `sweeps` command line: one subcommand per entry of `COMMANDS`.

Heavy imports (torch, optuna) happen inside the commands, so `sweeps --help` stays fast;
only training imports torch, so checking a config or reading a study skips its seconds of
import (`tests/sweeps_tests/test_startup.py`).
Exit codes: 0 ok, 1 run failed, 2 bad input (``error:`` lines naming the field, no traceback).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import sys
import threading
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
    "lr-range": "lr_range",
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
    from sweeps.commands.common import close_databases

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
    except BrokenPipeError:  # the reader went away (`sweeps schedules | head`): say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        close_databases()


def console() -> None:
    """The `sweeps` program: `main`, then end the process without the interpreter's
    teardown, which takes over a second (freeing torch's, Optuna's and scikit-learn's
    modules: `bench/worker_phases.py` prints seconds_exit_with_teardown) and which every
    worker pays when a study ends. What matters of an ending still runs: the exit functions
    that libraries and user objectives registered (logging's flush among them), and the
    output streams are flushed; `main` has closed the databases (SQLite folds its write-ahead
    log into the file). A profiler or coverage tool, or a thread still running (a user
    objective's), gets the usual exit.
    """
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if sys.getprofile() or sys.gettrace() or any(not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed or no reader
            stream.flush()
    os._exit(code)


def _quiet_optuna() -> None:
    """Our own lines say what happened; Optuna's INFO lines would repeat them. (Optuna sets
    its logger's level when first imported, so setting the level alone is overridden.)"""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _print_errors(error: Exception) -> None:
    for line in str(error).splitlines():
        print(f"error: {line}", file=sys.stderr)
