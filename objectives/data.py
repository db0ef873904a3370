"""Data that ships with packages, as tensors on the device (no downloads, no DataLoader)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@cache
def _digits_cpu() -> Split:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    # A fixed split, the same in every process: 80% train, 20% validation.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(20240601))
    cut = int(0.8 * len(y))
    train, val = order[:cut], order[cut:]
    return Split(x[train], y[train], x[val], y[val])


def digits(device: torch.device) -> Split:
    """scikit-learn's 1,797 8x8 digit images, flattened to 64 features scaled to [0, 1]."""
    s = _digits_cpu()
    return Split(*(t.to(device) for t in (s.x_train, s.y_train, s.x_val, s.y_val)))
