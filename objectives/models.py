"""The built-in tasks' models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(*, inputs: int = 64, hidden: int = 128, depth: int = 1, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, classes))


class ImageConv3x3(nn.Module):
    """A 3x3 convolution (padding 1) of a one-channel image, as unfold + matmul.

    Same parameters and initialisation as ``nn.Conv2d(1, out, 3, padding=1)``. Written out
    because torch's grouped convolution (what a stack of convolutions becomes under vmap)
    computes a one-channel weight gradient slightly differently for K groups than for one;
    as a matmul, each trial's gradient is the same in a stack as alone.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        reference = nn.Conv2d(1, out_channels, 3, padding=1)
        assert reference.bias is not None
        self.weight = reference.weight
        self.bias = reference.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        columns = F.unfold(x, 3, padding=1)  # [batch, 9, height * width]
        out = torch.matmul(self.weight.flatten(1), columns) + self.bias[:, None]
        return out.view(batch, -1, height, width)


def cnn(*, channels: int = 16, classes: int = 10) -> nn.Module:
    """Two 3x3 convolutions over the 8x8 image, then a linear classifier."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        ImageConv3x3(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 4 * 4, classes),
    )
