"""Built-in tasks: ``objective: digits_mlp``, ``digits_cnn`` or ``tiny_lm`` in a config.

Each is a `Task` like a user's own (`objectives.task`), trained by the same trainer. A
language model is a classifier of the next character at every position; it reports
validation loss instead of accuracy (``reports``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from objectives.args import with_defaults
from objectives.task import Task
from schedules import Param

# torch is imported when a task first builds or trains, not here: declaring the tasks
# (a config's validation, `sweeps launch`) starts without it.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from objectives.data import Split


@dataclass(frozen=True, eq=False)
class ClassifierTask(Task):
    """A classifier of a dataset that ships with a package."""

    task_name: str
    make_model: Callable[[dict[str, Any]], nn.Module]  # from objective_args
    make_data: Callable[[torch.device], Split]
    # What a trial reports and returns: validation accuracy (maximize) or mean validation
    # cross-entropy (minimize).
    reports: Literal["accuracy", "loss"] = "accuracy"
    args: Mapping[str, Param] | None = None  # what make_model reads (`objectives.args`)

    @property
    def name(self) -> str:
        return self.task_name

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        return self.reports

    @property
    def direction(self) -> Literal["maximize", "minimize"]:  # type: ignore[override]
        return "maximize" if self.reports == "accuracy" else "minimize"

    def model(self, args: dict[str, Any]) -> nn.Module:
        return self.make_model(args)

    def data(self, device: torch.device) -> Split:
        return self.make_data(device)

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor | float:
        return (
            self.loss(output, target) if self.reports == "loss" else super().metric(output, target)
        )


# Each built-in's arguments: their defaults here are the ones its model is built with.
MLP_ARGS = {
    "hidden": Param(int, "units in each hidden layer", low=1, high=65536, default=128),
    "depth": Param(int, "hidden layers (0: a linear classifier)", low=0, high=64, default=1),
}
CNN_ARGS = {
    "channels": Param(int, "channels of the first convolution", low=1, high=1024, default=16),
}
LM_ARGS = {
    "dim": Param(int, "embedding width (a multiple of heads)", low=1, high=8192, default=64),
    "heads": Param(int, "attention heads", low=1, high=256, default=4),
    "layers": Param(int, "transformer blocks", low=1, high=64, default=2),
}


def _mlp(given: dict[str, Any]) -> nn.Module:
    from objectives import models

    args = with_defaults(MLP_ARGS, given)
    return models.mlp(hidden=int(args["hidden"]), depth=int(args["depth"]))


def _cnn(given: dict[str, Any]) -> nn.Module:
    from objectives import models

    return models.cnn(channels=int(with_defaults(CNN_ARGS, given)["channels"]))


def _char_transformer(given: dict[str, Any]) -> nn.Module:
    from objectives import models
    from objectives.data import CONTEXT, text_vocab

    args = with_defaults(LM_ARGS, given)
    return models.char_transformer(
        vocab=text_vocab(),
        context=CONTEXT,
        dim=int(args["dim"]),
        heads=int(args["heads"]),
        layers=int(args["layers"]),
    )


def _digits(device: torch.device) -> Split:
    from objectives.data import digits

    return digits(device)


def _pydoc_topics(device: torch.device) -> Split:
    from objectives.data import pydoc_topics

    return pydoc_topics(device)


digits_mlp = ClassifierTask("digits_mlp", _mlp, _digits, args=MLP_ARGS)
"""An MLP on scikit-learn's digits. ``objective_args``: ``hidden`` (128), ``depth`` (1)."""

digits_cnn = ClassifierTask("digits_cnn", _cnn, _digits, args=CNN_ARGS)
"""A small CNN on scikit-learn's digits. ``objective_args``: ``channels`` (16)."""

tiny_lm = ClassifierTask("tiny_lm", _char_transformer, _pydoc_topics, reports="loss", args=LM_ARGS)
"""A small causal character-level transformer on ``pydoc_data.topics``, the standard
library's ~465k characters of English documentation (no download). It returns the mean
validation cross-entropy in nats per character: use ``direction: minimize``.

An epoch is one pass over a fixed sample of 512 windows of 64 characters (32,768
characters, at random offsets in the first 90% of the text); validation is 256 windows of
the last 10%. ``objective_args``: ``dim`` (64), ``heads`` (4), ``layers`` (2). It stacks
like the digits tasks (``--stack K``): every layer is written for K copies at once
(`objectives.models`)."""
