"""A command trial's processes, for real: every process the command starts (in sessions of its
own, as torchrun starts its ranks) ends with the trial, and with a worker that is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from objectives.command.process import CommandProcess
from sweeps_helpers import wait_until

# Like torchrun: a launcher starting "ranks" in new sessions; each rank starts a helper of its
# own; all record their pids, then wait forever. With IGNORE_TERM, the ranks shrug SIGTERM off.
LAUNCHER = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    out, rank = sys.argv[1], len(sys.argv) > 2
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not rank:
        for _ in range(2):
            subprocess.Popen([sys.executable, __file__, out, "rank"], start_new_session=True)
    else:
        subprocess.Popen(["sleep", "1000"])
    with open(out, "a") as f:
        f.write(f"{os.getpid()}\\n")
    print("started", flush=True)
    time.sleep(1000)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def launch(tmp_path: Path, **env: str) -> tuple[CommandProcess, Path]:
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    pids = tmp_path / "pids"
    process = CommandProcess(
        [sys.executable, str(script), str(pids)], env={**os.environ, **env}, grace=0.5
    )
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 3, timeout=60)
    return process, pids


def family(pids: Path) -> list[int]:
    """The launcher, its ranks, and the ranks' children (found from /proc)."""
    ours = [int(p) for p in pids.read_text().split()]
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) in ours:
                children.append(int(entry))
    return sorted(set(ours + children))


def test_end_ends_every_process_even_in_other_sessions(tmp_path: Path) -> None:
    process, pids = launch(tmp_path)
    everyone = family(pids)
    assert len(everyone) >= 5  # launcher, 2 ranks, 2 helpers
    process.end()
    assert not [pid for pid in everyone if alive(pid)]


def test_end_kills_what_ignores_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    process, pids = launch(tmp_path, IGNORE_TERM="1")
    everyone = family(pids)
    process.end()
    assert not [pid for pid in everyone if alive(pid)]


def test_a_sigkilled_workers_command_processes_all_end(tmp_path: Path) -> None:
    """The worker dies without a word: the guard sees its lifeline close."""
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    pids = tmp_path / "pids"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from objectives.command.process import CommandProcess; "
            f"p = CommandProcess([sys.executable, {str(script)!r}, {str(pids)!r}], "
            "env={}, grace=0.5); time.sleep(1000)",
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 3, timeout=60)
    everyone = family(pids)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    wait_until(lambda: not [pid for pid in everyone if alive(pid)], timeout=10)


def test_a_guard_told_to_stop_exits_with_its_commands_signal(tmp_path: Path) -> None:
    """SIGTERM to the worker's whole group (a scheduler's stop) reaches the guard too: the
    command it ends is no success."""
    process, pids = launch(tmp_path)
    process.proc.send_signal(signal.SIGTERM)
    assert process.wait() == 128 + signal.SIGTERM
    assert not [pid for pid in family(pids) if alive(pid)]


def test_the_commands_output_and_exit_code_come_through(tmp_path: Path) -> None:
    process = CommandProcess(
        ["sh", "-c", "echo one; echo two >&2; printf three; exit 3"], env=os.environ, grace=1
    )
    assert [line for line in process.lines() if line is not None] == ["one", "two", "three"]
    assert process.wait() == 3


def test_a_progress_bars_redrawings_are_lines_of_their_own(tmp_path: Path) -> None:
    process = CommandProcess(["printf", '10%%\\r50%%\\r{"value": 1}\\n'], env=os.environ, grace=1)
    assert [line for line in process.lines() if line is not None] == ["10%", "50%", '{"value": 1}']
    assert process.wait() == 0


def test_a_command_killed_by_a_signal_exits_128_plus_it(tmp_path: Path) -> None:
    process = CommandProcess(["sh", "-c", "kill -9 $$"], env=os.environ, grace=1)
    list(process.lines())
    assert process.wait() == 128 + signal.SIGKILL


def test_what_a_command_leaves_running_ends_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon"
    process = CommandProcess(
        ["sh", "-c", f"setsid sleep 1000 > /dev/null 2>&1 & echo $! > {pid_file}"],
        env=os.environ,
        grace=1,
    )
    list(process.lines())
    assert process.wait() == 0
    assert not alive(int(pid_file.read_text()))


def test_a_program_that_is_not_there_says_so(tmp_path: Path) -> None:
    process = CommandProcess(["no-such-program-here"], env=os.environ, grace=1)
    lines = [line for line in process.lines() if line is not None]
    assert process.wait() == 127
    assert lines == ["error: cannot run 'no-such-program-here': No such file or directory"]
