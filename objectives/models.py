"""The built-in tasks' models."""

from __future__ import annotations

from torch import nn


def mlp(*, inputs: int = 64, hidden: int = 128, depth: int = 1, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, classes))


def cnn(*, channels: int = 16, classes: int = 10) -> nn.Module:
    """Two 3x3 convolutions over the 8x8 image, then a linear classifier."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 4 * 4, classes),
    )
