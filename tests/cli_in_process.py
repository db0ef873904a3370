"""`sweeps` commands run in the test's own process, through `sweeps.cli.main` (what the
program runs): for a test's set-up (``launch``, ``enqueue``) and for reading a study
(``status``, ``export``, ``validate``), where a process of its own would prove nothing more
and costs seconds of imports. The processes under test (workers, their commands) stay
real processes."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path


def sweeps_here(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``sweeps ARGS`` run in this process with ``cwd`` as the current directory: its exit
    code and what it printed, as `sweeps_helpers.sweeps` gives them for a process. What it
    imported from ``cwd`` (a user's objective, which a config check imports) is forgotten
    afterwards, and ``sys.path`` is as it was: the next test may write a module of the same
    name. (Only modules of packages new to this process: the project's own stay.)"""
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
        packages = {name.partition(".")[0] for name in modules}
        for name in set(sys.modules) - modules:
            file = getattr(sys.modules[name], "__file__", None)
            if name.partition(".")[0] in packages or not file:
                continue
            if Path(file).resolve().is_relative_to(cwd.resolve()):
                del sys.modules[name]
    return subprocess.CompletedProcess(["sweeps", *args], code, out.getvalue(), err.getvalue())
