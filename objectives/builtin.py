"""Built-in tasks: ``objective: digits_mlp``, ``digits_cnn`` or ``tiny_lm`` in a config.

A `ClassifierTask` is an objective (``task(run) -> float``, one trial) that also tells the
trainer how to build its model and data, so K of its trials can train as one stack
(`objectives.train.train_stack`). A language model is a classifier of the next character
at every position; it reports validation loss instead of accuracy (``metric``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from objectives import models
from objectives.data import CONTEXT, Split, digits, pydoc_topics, text_vocab
from objectives.run import Run
from objectives.train import train_stack


@dataclass(frozen=True)
class ClassifierTask:
    name: str
    make_model: Callable[[dict[str, Any]], nn.Module]  # from objective_args
    data: Callable[[torch.device], Split]
    # What a trial reports and returns: validation accuracy (maximize) or mean validation
    # cross-entropy (minimize).
    metric: Literal["accuracy", "loss"] = "accuracy"

    def model(self, run: Run) -> nn.Module:
        """The trial's model, initialised from the trial's own seed."""
        torch.manual_seed(run.seed)
        return self.make_model(run.args)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.data(torch.device("cpu")).x_train) / batch_size)

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """How a study must optimise this task's metric."""
        return "maximize" if self.metric == "accuracy" else "minimize"

    def check(self, run: Run) -> None:
        """Raises ValueError when the study optimises the metric the wrong way."""
        if run.direction != self.direction:
            raise ValueError(
                f"direction: {self.name} reports validation {self.metric}; "
                f"set direction: {self.direction}"
            )

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

tiny_lm = ClassifierTask(
    "tiny_lm",
    lambda args: models.char_transformer(
        vocab=text_vocab(),
        context=CONTEXT,
        dim=int(args.get("dim", 64)),
        heads=int(args.get("heads", 4)),
        layers=int(args.get("layers", 2)),
    ),
    pydoc_topics,
    metric="loss",
)
"""A small causal character-level transformer on ``pydoc_data.topics``, the standard
library's ~465k characters of English documentation (no download). It returns the mean
validation cross-entropy in nats per character: use ``direction: minimize``.

An epoch is one pass over a fixed sample of 512 windows of 64 characters (32,768
characters, at random offsets in the first 90% of the text); validation is 256 windows of
the last 10%. ``objective_args``: ``dim`` (64), ``heads`` (4), ``layers`` (2). It stacks
like the digits tasks (``--stack K``): every layer is written for K copies at once
(`objectives.models`)."""
