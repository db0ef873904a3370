"""The guard of one command trial: it starts the command, and ends every process the command
started (torchrun and each of its ranks included) when told to, or when its worker dies.

    python guard.py GRACE -- PROGRAM ARG...

Standard input is the worker's lifeline: a pipe only the worker holds open. Its end (the
worker exited, or was SIGKILLed) or a SIGTERM to the guard ends the command: SIGTERM to every
descendant, up to GRACE seconds for them to exit, then SIGKILL to all that remain.

A process group is not enough: torchrun starts each rank in a session of its own, so a kill of
torchrun's group misses them (and a SIGKILLed torchrun leaves them to PID 1). The guard is a
child subreaper on Linux: a descendant whose parent dies is re-parented to the guard, not to
PID 1, so the guard can always find every one of them in /proc.

When the command exits by itself, whatever it left running is ended as well, and the guard
exits with the command's code (128 + N for a command killed by signal N).

Standard library only, no project import: it starts in milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
POLL = 0.05  # seconds between looks while processes are given time to exit
# SIGKILL rounds before giving up on a process that cannot die (stuck in a driver call).
KILL_TRIES = 100


def main(argv: list[str]) -> int:
    grace = float(argv[0])
    command = argv[2:]
    _become_subreaper()
    # A SIGTERM wakes the wait below through this pipe (Python would resume the select).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; a terminal's ^C is its
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as e:
        print(f"error: cannot run {command[0]!r}: {e.strerror or e}", flush=True)
        return 127
    lifeline = sys.stdin.fileno()
    pidfd = _pidfd(child.pid)
    watched = [lifeline, wake_r] + ([pidfd] if pidfd is not None else [])
    ending = False
    while not ending and child.poll() is None:
        ready, _, _ = select.select(watched, [], [], 1.0 if pidfd is not None else POLL)
        # A signal, or the lifeline's end: the worker ends the trial, or is gone.
        ending = wake_r in ready or (lifeline in ready and not os.read(lifeline, 4096))
    if ending:
        end_descendants(grace)
    else:  # the command ended: end what it left behind (an orphaned rank, a daemon)
        end_descendants(min(grace, 2.0))
    status = _statuses.get(child.pid)
    code = os.waitstatus_to_exitcode(status) if status is not None else child.wait()
    return 128 - code if code < 0 else code


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the descendants still in /proc are found
        pass


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def end_descendants(grace: float) -> None:
    """SIGTERM to every live descendant, up to ``grace`` seconds, then SIGKILL to the rest;
    every zombie re-parented here is reaped."""
    _signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _reap() and time.monotonic() < deadline:
        time.sleep(POLL)
    for _ in range(KILL_TRIES):  # until none is left (one may fork while we look)
        if not _signal_all(signal.SIGKILL):
            break
        time.sleep(POLL)
        _reap()
    _reap()


def _signal_all(signum: int) -> int:
    alive = descendants(os.getpid())
    for pid in alive:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    return len(alive)


# How each child reaped here ended: the command's own status is its exit code.
_statuses: dict[int, int] = {}


def _reap() -> bool:
    """Reap exited children; True while any descendant is still alive."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        _statuses[pid] = status
    return bool(descendants(os.getpid()))


def descendants(root: int) -> list[int]:
    """The live (not zombie) processes below ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    zombies: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces and ')'
        pid, state, ppid = int(entry), fields[0], int(fields[1])
        children.setdefault(ppid, []).append(pid)
        if state in (b"Z", b"X"):
            zombies.add(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return [pid for pid in found if pid not in zombies]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
