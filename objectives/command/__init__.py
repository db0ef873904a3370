"""A training script as the objective: a command per trial, its metrics read from its output,
every process it starts ended with the trial (DESIGN.md, "Command trials").

    objective:
      command: torchrun --nproc_per_node=2 --master_port={port} train.py --lr={lr}
      report: 'step (?P<step>\\d+): val loss (?P<value>\\S+)'

Checking a command (`template`, `output`) needs no torch; running one (`Command`,
`CommandPool`) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from objectives.command.output import (
    GROUPS,
    LOG_NOTE,
    OutputReader,
    ReportFormatError,
    compile_report,
)
from objectives.command.template import ALWAYS, TemplateError

if TYPE_CHECKING:
    from objectives.command.pool import CommandPool
    from objectives.command.trial import Command, CommandFailed

_LAZY = {
    "CommandPool": "objectives.command.pool",
    **dict.fromkeys(["Command", "CommandFailed"], "objectives.command.trial"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'objectives.command' has no attribute {name!r}")


__all__ = [
    "ALWAYS",
    "Command",
    "CommandFailed",
    "CommandPool",
    "GROUPS",
    "LOG_NOTE",
    "OutputReader",
    "ReportFormatError",
    "TemplateError",
    "compile_report",
]
