"""The `sweeps` CLI run in the test's own process: `sweeps.cli.main`, the function the
`sweeps` program runs, with its output captured. For tests of a command's logic (exit codes,
error lines, what it writes) whose process boundary proves nothing; each such behaviour keeps
one test that runs the real program (`sweeps_helpers.sweeps`).

What a command leaves behind in a process is undone after each call: the working directory,
the environment, ``sys.path`` and the user's modules imported from the directory, Optuna's
verbosity, the storage logger a worker sets up. Warnings a real process would print (Python's
default filters) are added to ``stderr``. An exception that `main` lets through (a traceback
in a real process) fails the test.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

# The project's own packages: imported once and kept (a user's module is forgotten).
PROJECT = {"sweeps", "objectives", "storage", "schedules"}


@dataclass(frozen=True)
class Result:
    """As `subprocess.CompletedProcess` has them."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class InProcess:
    """``cli("status", "--study", "t", cwd=path)``, as ``sweeps_helpers.sweeps`` takes it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
        import optuna

        from sweeps.cli import main

        verbosity = optuna.logging.get_verbosity()
        storage_log = logging.getLogger("sweeps.storage")
        modules = set(sys.modules)
        self.capsys.readouterr()  # what the test printed before is not the command's
        with self.monkeypatch.context() as patch, warnings.catch_warnings(record=True) as shown:
            patch.chdir(cwd)
            patch.syspath_prepend(str(cwd))  # as `python -m sweeps` has it
            for name in [name for name in os.environ if name.startswith("SWEEPS_")]:
                patch.delenv(name)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            patch.setattr(storage_log, "handlers", list(storage_log.handlers))
            patch.setattr(storage_log, "propagate", storage_log.propagate)
            _python_default_warning_filters()
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
            finally:
                optuna.logging.set_verbosity(verbosity)
                _forget_modules_from(cwd, modules)
        out, err = self.capsys.readouterr()
        err += "".join(
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
            for w in shown
        )
        return Result(list(args), code, out, err)


def sweeps_here(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``sweeps ARGS`` run in this process with ``cwd`` as the current directory, without
    pytest's fixtures (for a fixture's or a helper's set-up: ``launch``, ``enqueue``,
    ``status``): its exit code and what it printed, as `sweeps_helpers.sweeps` gives them.
    ``sys.path`` and the modules imported from ``cwd`` are restored afterwards."""
    from sweeps.cli import main

    out, err = io.StringIO(), io.StringIO()
    path, modules = list(sys.path), set(sys.modules)
    try:
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse refusing the arguments
                code = e.code if isinstance(e.code, int) else 2
    finally:
        sys.path[:] = path
        _forget_modules_from(cwd, modules)
    return subprocess.CompletedProcess(["sweeps", *args], code, out.getvalue(), err.getvalue())


def _python_default_warning_filters() -> None:
    """The filters of a plain ``python -m sweeps`` (pytest shows every warning)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
        warnings.simplefilter("ignore", category)
    warnings.simplefilter("ignore", ResourceWarning)


def _forget_modules_from(directory: Path, before: set[str]) -> None:
    """Drop the modules first imported from ``directory`` (a user's objective), so that a
    later test's module of the same name is imported afresh."""
    root = str(directory.resolve())
    for name in set(sys.modules) - before:
        if name.partition(".")[0] in PROJECT:
            continue
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file and os.path.realpath(file).startswith(root + os.sep):
            del sys.modules[name]
