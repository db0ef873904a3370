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

    def to(self, device: torch.device, dtype: torch.dtype) -> Split:
        """On ``device``, with float tensors (inputs) in ``dtype``; ids and labels kept."""
        return Split(
            *(
                t.to(device, dtype) if t.is_floating_point() else t.to(device)
                for t in (self.x_train, self.y_train, self.x_val, self.y_val)
            )
        )


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


# `tiny_lm`'s text: Python's own documentation of its syntax and built-ins.
CONTEXT = 64  # characters a model sees; it predicts the next one at every position
TRAIN_WINDOWS = 512  # windows per epoch: 32,768 characters
VAL_WINDOWS = 256


@cache
def _text() -> tuple[str, str]:
    """The text (topics in sorted order, a blank line apart) and its sorted alphabet."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return text, "".join(sorted(set(text)))


def text_vocab() -> int:
    """Characters in the text's alphabet (103 on Python 3.11)."""
    return len(_text()[1])


@cache
def _pydoc_topics_cpu() -> Split:
    text, alphabet = _text()
    lookup = {c: i for i, c in enumerate(alphabet)}
    codes = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    # The first 90% trains, the last 10% validates: held-out text, not held-out windows.
    cut = int(0.9 * len(codes))
    generator = torch.Generator().manual_seed(20240601)
    starts = torch.randint(0, cut - CONTEXT, (TRAIN_WINDOWS,), generator=generator)
    val_starts = torch.linspace(cut, len(codes) - CONTEXT - 1, VAL_WINDOWS).long()

    def windows(first: torch.Tensor, shift: int) -> torch.Tensor:
        return codes[first[:, None] + torch.arange(CONTEXT)[None, :] + shift]

    return Split(
        windows(starts, 0), windows(starts, 1), windows(val_starts, 0), windows(val_starts, 1)
    )


def pydoc_topics(device: torch.device) -> Split:
    """Character windows of the standard library's ``pydoc_data.topics`` (~465k characters).

    Inputs are ``[windows, CONTEXT]`` character ids, targets the same windows shifted by one
    character. Training uses a fixed sample of `TRAIN_WINDOWS` windows at random offsets in
    the first 90% of the text (one epoch is one pass over them); validation `VAL_WINDOWS`
    evenly spaced windows of the last 10%.
    """
    s = _pydoc_topics_cpu()
    return Split(*(t.to(device) for t in (s.x_train, s.y_train, s.x_val, s.y_val)))
