"""A command trial's processes as the worker sees them: started under a guard
(`objectives.command.guard`), their output read line by line (stdout and stderr in one
stream, in the order printed), and ended as a whole.

The guard holds the read end of a pipe whose write end only this object holds: closing it
(`end`), or the worker's death, makes the guard end every process of the command.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

GUARD = Path(__file__).with_name("guard.py")
MAX_LINE = 64 * 1024  # longer lines are cut there (a progress bar redrawn without newlines)
# Above the grace the guard gives: its SIGTERM, wait and SIGKILL take this much more at most.
GUARD_SLACK = 10.0


class CommandProcess:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        grace: float,
        cwd: Path | None = None,
    ) -> None:
        """Start ``argv`` under a guard that gives it ``grace`` seconds between SIGTERM and
        SIGKILL when it is ended."""
        self.grace = grace
        lifeline, self._lifeline = os.pipe()  # both ends are non-inheritable by default
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(GUARD), repr(grace), "--", *argv],
                stdin=lifeline,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                # Its own session: a terminal's Ctrl-C reaches the worker alone, which then
                # ends the trial itself (`end`), after the grace period.
                start_new_session=True,
            )
        except BaseException:
            os.close(self._lifeline)
            raise
        finally:
            os.close(lifeline)
        assert self.proc.stdout is not None
        self._out = self.proc.stdout.fileno()
        self._pending = b""
        self._eof = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self, *, poll: float = 0.25) -> Iterator[str | None]:
        """Each line the command prints, as it comes (without its line end; split at carriage
        returns too), or None after
        ``poll`` seconds of silence (so the caller can look at other things); ends when
        the command's output closes."""
        while not self._eof:
            ready, _, _ = select.select([self._out], [], [], poll)
            if not ready:
                yield None
                continue
            chunk = os.read(self._out, 65536)
            if not chunk:
                self._eof = True
                chunk = b"\n" if self._pending else b""
            *complete, self._pending = (self._pending + chunk).split(b"\n")
            if len(self._pending) > MAX_LINE:
                complete.append(self._pending[:MAX_LINE])
                self._pending = b""
            for line in complete:
                # A progress bar redraws itself after each carriage return: each drawing
                # is a line of its own (a report printed meanwhile starts one).
                for part in line[:MAX_LINE].split(b"\r"):
                    if part:
                        yield part.decode("utf-8", errors="replace")

    def wait(self) -> int:
        """The command's exit code, once it has ended (128 + N when killed by signal N)."""
        code = self.proc.wait()
        self._close()
        return code

    def end(self, on_line: Callable[[str], object] = lambda _: None) -> None:
        """End every process of the command (SIGTERM, the grace period, SIGKILL) and wait
        for that to be done; what it prints meanwhile (a checkpoint's last words) goes to
        ``on_line``, so that a full pipe never blocks it."""
        self._close_lifeline()
        deadline = time.monotonic() + self.grace + GUARD_SLACK
        for line in self.lines(poll=0.1):
            if line is not None:
                on_line(line)
            if time.monotonic() > deadline:
                break
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # the guard itself hangs: its group goes at once
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self._close()

    def _close_lifeline(self) -> None:
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1

    def _close(self) -> None:
        self._close_lifeline()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
