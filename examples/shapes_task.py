"""A user task: a small ResNet with BatchNorm and dropout, classifying generated images.

    sweeps run examples/shapes.yaml --workers 2 --stack 8

This file is all a user writes: the model, the data, (optionally) the loss and the metric.
lr-sweeps trains it with each trial's optimizer and schedule, stacks 8 trials into one
model per worker, reports and prunes every epoch, checkpoints, resumes and logs curves.

The data is generated (no download): 16x16 RGB images of one of four shapes (a bar, a
ring, a cross, a disc) at a random place and size, faint on a noisy background.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn

import objectives

SHAPES = 4
SIZE = 16  # pixels per side


class Block(nn.Module):
    """A residual block (He et al. 2016): two 3x3 convolutions with BatchNorm."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * width, SHAPES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@cache
def shapes(count: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images ``[count, 3, size, size]`` in [0, 1] and their shape labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, SHAPES, (count,), generator=g)
    centre = size * (0.3 + 0.4 * torch.rand(count, 2, 1, 1, generator=g))
    radius = size * (0.15 + 0.15 * torch.rand(count, 1, 1, generator=g))
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dy, dx = rows - centre[:, 0], cols - centre[:, 1]
    distance = (dy**2 + dx**2).sqrt()
    masks = torch.stack(
        [
            (dy.abs() < radius / 3) & (dx.abs() < radius * 1.5),  # bar
            (distance - radius).abs() < 1.0,  # ring
            ((dy.abs() < 1) | (dx.abs() < 1)) & (distance < radius * 1.5),  # cross
            distance < radius,  # disc
        ],
        dim=1,
    )[torch.arange(count), labels]
    # A faint shape on a plain background of a random colour, under pixel noise: hard enough
    # that the schedule matters within a few epochs.
    background = torch.rand(count, 3, 1, 1, generator=g)
    contrast = 0.25 + 0.25 * torch.rand(count, 3, 1, 1, generator=g)
    contrast = torch.where(background > 0.5, -contrast, contrast)
    noise = 0.1 * torch.randn(count, 3, size, size, generator=g)
    images = background + contrast * masks[:, None] + noise
    return images.clamp(0, 1), labels


class ShapesTask(objectives.Task):
    """``objective_args``: ``width`` (8), ``dropout`` (0.1); validation accuracy."""

    direction = "maximize"
    metric_name = "accuracy"
    image_size = SIZE
    # The arguments model() takes: the config's validation refuses others and bad values.
    args = {
        "width": objectives.Param(int, "channels of the stem", low=1, high=1024, default=8),
        "dropout": objectives.Param(
            float, "dropout before the classifier", low=0.0, high=1.0, high_open=True, default=0.1
        ),
    }

    def model(self, args: dict[str, Any]) -> nn.Module:
        args = objectives.with_defaults(self.args, args)
        return ResNet(width=int(args["width"]), dropout=float(args["dropout"]))

    def data(self, device: torch.device) -> objectives.Split:
        x_train, y_train = shapes(2048, seed=1, size=self.image_size)
        x_val, y_val = shapes(512, seed=2, size=self.image_size)
        return objectives.Split(x_train, y_train, x_val, y_val)  # lr-sweeps moves it to device
