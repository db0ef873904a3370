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
from typing import TYPE_CHECKING, Any, Literal

# torch is imported when a task first builds or trains, not here: declaring the tasks
# (a config's validation, `sweeps launch`) starts without it.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from objectives.data import Split
    from objectives.run import Run


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
        import torch

        torch.manual_seed(run.seed)
        return self.make_model(run.args)

    def steps_per_epoch(self, batch_size: int) -> int:
        import torch

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
        from objectives.train import train_stack

        (outcome,) = train_stack(self, [run])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _mlp(args: dict[str, Any]) -> nn.Module:
    from objectives import models

    return models.mlp(hidden=int(args.get("hidden", 128)), depth=int(args.get("depth", 1)))


def _cnn(args: dict[str, Any]) -> nn.Module:
    from objectives import models

    return models.cnn(channels=int(args.get("channels", 16)))


def _char_transformer(args: dict[str, Any]) -> nn.Module:
    from objectives import models
    from objectives.data import CONTEXT, text_vocab

    return models.char_transformer(
        vocab=text_vocab(),
        context=CONTEXT,
        dim=int(args.get("dim", 64)),
        heads=int(args.get("heads", 4)),
        layers=int(args.get("layers", 2)),
    )


def _digits(device: torch.device) -> Split:
    from objectives.data import digits

    return digits(device)


def _pydoc_topics(device: torch.device) -> Split:
    from objectives.data import pydoc_topics

    return pydoc_topics(device)


digits_mlp = ClassifierTask("digits_mlp", _mlp, _digits)
"""An MLP on scikit-learn's digits. ``objective_args``: ``hidden`` (128), ``depth`` (1)."""

digits_cnn = ClassifierTask("digits_cnn", _cnn, _digits)
"""A small CNN on scikit-learn's digits. ``objective_args``: ``channels`` (16)."""

tiny_lm = ClassifierTask("tiny_lm", _char_transformer, _pydoc_topics, metric="loss")
"""A small causal character-level transformer on ``pydoc_data.topics``, the standard
library's ~465k characters of English documentation (no download). It returns the mean
validation cross-entropy in nats per character: use ``direction: minimize``.

An epoch is one pass over a fixed sample of 512 windows of 64 characters (32,768
characters, at random offsets in the first 90% of the text); validation is 256 windows of
the last 10%. ``objective_args``: ``dim`` (64), ``heads`` (4), ``layers`` (2). It stacks
like the digits tasks (``--stack K``): every layer is written for K copies at once
(`objectives.models`)."""
