"""Progress output: a bar redrawn in place on a terminal, plain lines when the numbers change
elsewhere; and `sweeps run` / `sweeps worker` under a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sweeps.cli import main
from sweeps.results import progress
from sweeps.results.progress import Progress
from sweeps_helpers import config


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Status:
    """A study's status over time: each read takes the next one; the last one stays."""

    def __init__(self, *states: dict[str, Any]) -> None:
        self.states = list(states)

    def __call__(self) -> dict[str, Any]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def summary(finished: int, running: int = 1, best: float | None = None) -> dict[str, Any]:
    return {
        "finished": finished,
        "budget": 8,
        "states": {"RUNNING": running},
        "best": {"value": best, "number": 3} if best is not None else None,
    }


def test_plain_lines_only_when_the_numbers_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "EVERY", 0.0)
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    out = io.StringIO()
    p = Progress(Status(summary(0), summary(0), summary(2, best=0.5)), out)
    for _ in range(3):
        p.update()
    p.log("trial 2 COMPLETE")
    p.close()
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines if line.startswith("[")] == [
        "0/8 finished, 1 running",
        "2/8 finished, 1 running, best 0.5000 (trial 3)",
    ]
    assert "trial 2 COMPLETE" in lines and "\r" not in out.getvalue()


def test_plain_lines_come_at_most_every_few_seconds_but_the_last_always(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "EVERY", 0.0)
    out = io.StringIO()
    p = Progress(Status(*(summary(n) for n in range(5))), out)
    for _ in range(4):
        p.update()  # changed numbers, but within PLAIN_EVERY of the first line
    p.close()  # the final numbers, whenever the last line was
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == [
        "0/8 finished, 1 running",
        "4/8 finished, 1 running",
    ]


def test_terminal_bar_is_redrawn_in_place_under_logged_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "EVERY", 0.0)
    out = Terminal()
    p = Progress(Status(summary(4, best=0.9), summary(8, running=0, best=0.95)), out)
    p.update()
    p.log("trial 7 PRUNED")
    p.close()
    text = out.getvalue()
    assert text.startswith(
        "\r\033[K[############............] 4/8 finished, 1 running, best 0.9000"
    )
    # The line goes above; the bar comes back below it, then is redrawn with new numbers.
    assert "\r\033[Ktrial 7 PRUNED\n[############............]" in text
    assert text.endswith(
        "[########################] 8/8 finished, 0 running, best 0.9500 (trial 3)  0:00\n"
    )


def run_in_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``sweeps ARGS`` with a pseudo-terminal as stdout, as in a person's shell."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps", *args],
        cwd=cwd,
        stdout=follower,
        stderr=follower,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=60), b"".join(chunks).decode()


@pytest.mark.e2e
def test_run_and_worker_show_a_live_bar_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(tmp_path, budget={"trials": 2, "epochs": 1})
    code, out = run_in_terminal(["run", str(cfg), "--storage", url], tmp_path)
    assert code == 0, out
    assert "\r\033[K[" in out
    assert "2/2 finished, 0 running, best" in out

    # A worker on a terminal: its trial lines, with the bar beneath them.
    cfg = config(tmp_path, "more.yaml", study="more", budget={"trials": 2, "epochs": 1})
    assert main(["launch", str(cfg), "--storage", url]) == 0
    code, out = run_in_terminal(["worker", "--study", "more", "--storage", url], tmp_path)
    assert code == 0, out
    assert out.count(" COMPLETE ") == 2
    assert "[########################] 2/2 finished" in out

    # Not a terminal: plain lines, no bar.
    cfg = config(tmp_path, "plain.yaml", study="plain", budget={"trials": 2, "epochs": 1})
    capsys.readouterr()
    assert main(["run", str(cfg), "--storage", url]) == 0
    plain = capsys.readouterr().out
    assert "\r" not in plain and "#" not in plain
    assert "2/2 finished" in plain
