"""Built-in tasks: ``objective: digits_mlp`` or ``objective: digits_cnn`` in a config."""

from __future__ import annotations

import torch

from objectives import models
from objectives.data import digits
from objectives.run import Run
from objectives.train import train_classifier


def digits_mlp(run: Run) -> float:
    """An MLP on scikit-learn's digits. ``objective_args``: ``hidden`` (128), ``depth`` (1)."""
    torch.manual_seed(run.seed)
    model = models.mlp(
        hidden=int(run.args.get("hidden", 128)), depth=int(run.args.get("depth", 1))
    )
    return train_classifier(run, model, digits(run.device))


def digits_cnn(run: Run) -> float:
    """A small CNN on scikit-learn's digits. ``objective_args``: ``channels`` (16)."""
    torch.manual_seed(run.seed)
    model = models.cnn(channels=int(run.args.get("channels", 16)))
    return train_classifier(run, model, digits(run.device))
