"""What a command trial's output says: the metric it reports, the curve points it logs, and,
when it fails, why.

A line is read as JSON (the default) or by a regular expression with named groups. Either
way ``value`` is the reported metric and ``step`` its step; ``lr``, ``loss`` and
``grad_norm`` are one optimizer step's curve point. Numbers are read in every form Python
prints them (``1e-05``, ``-3.2E+01``, ``nan``, ``inf``), and a value that is not a number
never ends in a silently truncated one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

LOG_NOTE = " (log: "  # how a reason names its trial's log; `sweeps.failures` compares before it
GROUPS = ("value", "step", "lr", "loss", "grad_norm")
JSON_LINES = "JSON lines with a 'value' (and 'step')"
# A number at the start of a captured field: a regex's `\S+` may take a trailing comma.
_NUMBER = re.compile(
    r"[-+]?(?:(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)", re.IGNORECASE
)
# Terminal control sequences (a progress bar's cursor moves, colours).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Prefixes torchrun and its ranks put before a line: `[rank1]:`, `[default0]:`, `0:`.
_RANK_PREFIX = re.compile(r"^(?:\[(?:rank|default)?\d+\]:|\d+:)\s*")
# A Python exception line (`ValueError: bad`, `torch.OutOfMemoryError: ...`).
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b:?")
# torchrun's own summary of a failed rank names no cause of its own.
_LAUNCHER = ("torch.distributed.elastic", "ChildFailedError")


class ReportFormatError(ValueError):
    """A `report` pattern that cannot read a metric."""


@dataclass(frozen=True)
class Reading:
    """What one line says: a metric (``value``) and/or a curve point (``lr`` ...)."""

    step: int | None = None
    value: float | None = None
    lr: float | None = None
    loss: float | None = None
    grad_norm: float | None = None


class OutputReader:
    """Reads the metric and curve points of a command's output, one line at a time."""

    def __init__(self, pattern: str | None = None) -> None:
        """``pattern``: a regular expression with a ``value`` group; None reads JSON lines.

        Raises:
            ReportFormatError: the pattern does not compile, lacks ``value``, or names
                another group than `GROUPS`.
        """
        self.pattern = compile_report(pattern) if pattern is not None else None

    @property
    def waits_for(self) -> str:
        """What a line that reports a value looks like, for a failure's reason."""
        return JSON_LINES if self.pattern is None else f"lines matching {self.pattern.pattern!r}"

    def read(self, line: str) -> Reading | None:
        fields = self._fields(_ANSI.sub("", line))
        if not fields:
            return None
        numbers = {k: number(v) for k, v in fields.items() if k in GROUPS and v is not None}
        step = numbers.pop("step", None)
        if step is not None and (not math.isfinite(step) or step != int(step) or step < 0):
            step = None  # not a step count: this is no report
            numbers.pop("value", None)
        if not any(v is not None for v in numbers.values()):
            return None
        return Reading(step=None if step is None else int(step), **numbers)

    def _fields(self, line: str) -> dict[str, object] | None:
        if self.pattern is not None:
            match = self.pattern.search(line)
            return match.groupdict() if match else None
        start = line.find("{")  # after a prefix, if any (`[rank0]: `, a logger's)
        if start < 0:
            return None
        try:
            data = json.loads(line[start:])
        except (ValueError, RecursionError):  # not JSON, or nested past Python's stack
            return None
        return data if isinstance(data, dict) else None


def compile_report(pattern: str) -> re.Pattern[str]:
    """Compile a `report` pattern.

    Raises:
        ReportFormatError: it does not compile, lacks a ``value`` group, or has a named
            group other than `GROUPS`.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ReportFormatError(f"not a regular expression: {e}") from None
    if "value" not in compiled.groupindex:
        raise ReportFormatError(
            "needs a group (?P<value>...) for the metric; optional: " + ", ".join(GROUPS[1:])
        )
    unknown = sorted(set(compiled.groupindex) - set(GROUPS))
    if unknown:
        raise ReportFormatError(
            f"unknown group {unknown[0]!r}; groups: value (required), {', '.join(GROUPS[1:])}"
        )
    return compiled


def number(text: object) -> float | None:
    """A number as Python (or JSON) prints it, or None: ``1e-05``, ``-3.2E+01``, ``nan``,
    ``inf``, ``Infinity``; trailing punctuation (``2.61,``) is dropped, nothing else."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        try:
            return float(text)
        except OverflowError:  # an integer past float's range: as good as infinite
            return math.inf if text > 0 else -math.inf
    if not isinstance(text, str):
        return None
    match = _NUMBER.match(text.strip())
    if match is None:
        return None
    rest = text.strip()[match.end() :]
    if rest and (rest[0].isalnum() or rest[0] in "._"):
        return None  # `2.6abc`, `1.2.3`: not a number cut short
    return float(match.group().replace("_", ""))


class ErrorLine:
    """The line that says why a command failed: its last exception line (rank prefixes
    removed, so every rank's copy reads the same), else its last line."""

    def __init__(self) -> None:
        self.exception = ""
        self.last = ""

    def see(self, line: str) -> None:
        text = _RANK_PREFIX.sub("", _ANSI.sub("", line).strip())
        if not text:
            return
        self.last = text
        if _EXCEPTION.match(text) and not any(s in text for s in _LAUNCHER):
            self.exception = text

    def __str__(self) -> str:
        return (self.exception or self.last)[:500]
