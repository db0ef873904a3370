"""Progress of a study for `sweeps run` and `sweeps worker`: on a terminal a bar redrawn in
place (trials finished of budget, running trials, best so far); elsewhere (log files, CI,
pipes) a plain line when the numbers changed, at most every few seconds."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

BAR = 24  # characters of the bar itself
EVERY = 1.0  # seconds between status reads (each reads the study's trials)
PLAIN_EVERY = 5.0  # seconds between plain lines: a log should not get one per trial


class Progress:
    def __init__(self, status: Callable[[], dict[str, Any]], stream: TextIO | None = None) -> None:
        """``status`` returns a `sweeps.summary.summarize` dict (read at most every
        `EVERY` seconds)."""
        self.status = status
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._line = ""  # the bar as last drawn (terminal)
        self._text = ""  # the status as last printed (elsewhere)
        self._read_at = -EVERY
        self._printed_at = -PLAIN_EVERY
        self._closed = False

    def update(self, *, force: bool = False) -> None:
        """Read the status (at most every `EVERY` seconds unless ``force``) and show it."""
        now = time.monotonic()
        if not force and now - self._read_at < EVERY:
            return
        self._read_at = now
        summary = self.status()
        text, clock = status_text(summary), _clock(now - self.started)
        if self.tty:
            line = f"{_bar(summary['finished'], summary['budget'])} {text}  {clock}"
            self._line = line[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r\033[K" + self._line)
            self.stream.flush()
        elif text != self._text and (force or now - self._printed_at >= PLAIN_EVERY):
            self._text, self._printed_at = text, now
            print(f"[{clock}] {text}", file=self.stream, flush=True)

    def log(self, line: str) -> None:
        """Print one of the caller's lines (above the bar on a terminal), then the status."""
        if self.tty:
            self.stream.write("\r\033[K")
        print(line, file=self.stream, flush=True)
        if self.tty:
            self.stream.write(self._line)
        self.update()

    def close(self) -> None:
        """Show the final numbers (and end the bar's line); once."""
        if self._closed:
            return
        self._closed = True
        self.update(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def status_text(summary: dict[str, Any]) -> str:
    """``45/120 finished, 2 running, best 0.9833 (trial 33)``"""
    parts = [
        f"{summary['finished']}/{summary['budget']} finished",
        f"{summary['states']['RUNNING']} running",
    ]
    best = summary["best"]
    if best:
        parts.append(f"best {best['value']:.4f} (trial {best['number']})")
    return ", ".join(parts)


def _bar(done: int, total: int) -> str:
    filled = min(BAR, round(BAR * done / total)) if total else BAR
    return f"[{'#' * filled}{'.' * (BAR - filled)}]"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"
