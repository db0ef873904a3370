"""Built-in tasks: ``objective: digits_mlp`` or ``objective: digits_cnn`` in a config.

A `ClassifierTask` is an objective (``task(run) -> float``, one trial) that also tells the
trainer how to build its model and data, so K of its trials can train as one stack
(`objectives.train.train_stack`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from objectives import models
from objectives.data import Split, digits
from objectives.run import Run
from objectives.train import train_stack


@dataclass(frozen=True)
class ClassifierTask:
    name: str
    make_model: Callable[[dict[str, Any]], nn.Module]  # from objective_args
    data: Callable[[torch.device], Split]

    def model(self, run: Run) -> nn.Module:
        """The trial's model, initialised from the trial's own seed."""
        torch.manual_seed(run.seed)
        return self.make_model(run.args)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.data(torch.device("cpu")).x_train) / batch_size)

    def __call__(self, run: Run) -> float:
        (outcome,) = train_stack(self, [run])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


digits_mlp = ClassifierTask(
    "digits_mlp",
    lambda args: models.mlp(hidden=int(args.get("hidden", 128)), depth=int(args.get("depth", 1))),
    digits,
)
"""An MLP on scikit-learn's digits. ``objective_args``: ``hidden`` (128), ``depth`` (1)."""

digits_cnn = ClassifierTask(
    "digits_cnn", lambda args: models.cnn(channels=int(args.get("channels", 16))), digits
)
"""A small CNN on scikit-learn's digits. ``objective_args``: ``channels`` (16)."""
