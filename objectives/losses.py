"""The default loss and metric of a task (`objectives.task.Task`), for classifiers: the
last dimension of an output holds class scores, every other position is a target (an
image's label, or every character of a sequence)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every target."""
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fraction of targets whose highest score is the right class."""
    return (output.argmax(dim=-1) == target).float().mean()
