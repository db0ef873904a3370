"""The worker processes `sweeps run` starts on this machine: each with its own log, watched
so that a worker that dies is named on the console as it happens (how it died, its last
words) and, while ``restarts`` last, started again."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from sweeps.commands.worker import LIFELINE_ENV

STOPPED = "stopping:"  # how a worker's log says failures stopped the study (`sweeps.worker`)
NOTE = "note:"  # how it says what the user should know (that a task cannot stack), once


class LocalWorkers:
    def __init__(
        self,
        command: Callable[[int], list[str]],
        env: Callable[[int], dict[str, str]],
        logs: Path,
        count: int,
        *,
        restarts: int = 0,
        say: Callable[[str], None] = print,
    ) -> None:
        """``command(i)`` and ``env(i)``: worker ``i``'s command line and environment;
        ``restarts``: how many times in all a worker that was killed or crashed is started
        again (a worker that failures stopped is not: it would stop again)."""
        self.command, self.env, self.logs = command, env, logs
        self.restarts = restarts
        self.say = say
        self._lifelines: dict[int, int] = {}
        self.procs = [self._start(i, mode="w") for i in range(count)]
        self.failed: list[int] = []  # workers that ended with an error and stay ended
        self._ended: set[int] = set()
        self._read = [0] * count  # how far each worker's log was read for notes
        self._noted: set[str] = set()

    def log(self, i: int) -> Path:
        return self.logs / f"worker-{i}.log"

    def _start(self, i: int, *, mode: str) -> subprocess.Popen[bytes]:
        # The worker holds the read end; the write end stays here, so that the worker
        # stops however `sweeps run` ends (`sweeps.commands.worker.stop_with_parent`).
        if i in self._lifelines:  # the worker it served has ended
            os.close(self._lifelines[i])
        lifeline, self._lifelines[i] = os.pipe()
        try:
            with self.log(i).open(mode) as log:
                return subprocess.Popen(
                    self.command(i),
                    env={**self.env(i), LIFELINE_ENV: str(lifeline)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(lifeline,),
                    start_new_session=True,  # Ctrl-C reaches `sweeps run` alone; it tells each
                )
        finally:
            os.close(lifeline)

    @property
    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def check(self) -> None:
        """Name each worker that ended with an error since the last check; restart it
        while restarts last, unless failures stopped it. Say the workers' new notes."""
        self._pass_notes_on()
        for i, p in enumerate(self.procs):
            if i in self._ended or p.poll() is None:
                continue
            if p.returncode == 0:
                self._ended.add(i)
                continue
            words = last_words(self.log(i))
            died = f"worker {i} (pid {p.pid}) {how_it_ended(p.returncode, words)}"
            if self.restarts and not words.startswith(STOPPED):
                self.restarts -= 1
                self.procs[i] = self._start(i, mode="a")
                self.say(
                    f"{died}; started again as pid {self.procs[i].pid} "
                    f"({self.restarts} restart(s) left)"
                )
                continue
            self._ended.add(i)
            self.failed.append(i)
            self.say(f"{died} (log: {self.log(i)})")

    def _pass_notes_on(self) -> None:
        """Say each note the workers' logs gained since the last check, once: every
        worker finds the same."""
        for i in range(len(self.procs)):
            try:
                with self.log(i).open("rb") as log:
                    log.seek(self._read[i])
                    new = log.read()
            except OSError:
                continue
            whole = new[: new.rfind(b"\n") + 1]  # a line half written is read next time
            self._read[i] += len(whole)
            for line in whole.decode(errors="replace").splitlines():
                if line.startswith(NOTE) and line not in self._noted:
                    self._noted.add(line)
                    self.say(line)

    def terminate(self) -> None:
        for p in self.running:
            p.terminate()

    def wait(self) -> None:
        for p in self.procs:
            p.wait()


def how_it_ended(code: int, words: str) -> str:
    """How a worker ended, and its ``last_words``: the cause when it exited itself; only
    what it did last when a signal from outside killed it (lr-sweeps stops its workers
    with SIGTERM, which they answer by exiting 0)."""
    if code < 0:
        last = (
            f'what its log said last, before the kill: "{words}"' if words else "its log is empty"
        )
        return f"was killed by {signal.Signals(-code).name}, a signal not from lr-sweeps; {last}"
    return f"exited with code {code}: {words or 'no last words'}"


def last_words(log: Path) -> str:
    """What a worker's log says last about why it ended: its failure stop, else the last
    line before its goodbye (a traceback's last line names the exception)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line and not line.startswith("worker done:")]
    stops = [line for line in lines if line.startswith(STOPPED)]
    return (stops or lines or [""])[-1][:500]
