"""Dropout whose masks are each trial's own, the same in a stack as alone.

``nn.Dropout`` draws from torch's global generator: under ``vmap`` every copy of a stack
would draw from one stream, so a trial's masks would depend on its neighbours. A stack
swaps each ``nn.Dropout`` for `SeededDropout`, whose mask is a hash of the trial's key
for the step (`step_key`: its seed and step), the layer and the element's position:
counter-based, so the same on any device and stack size, and exactly reproduced on resume.
"""

from __future__ import annotations

import torch
from torch import nn

M32 = 0xFFFFFFFF


def _mul32(h: torch.Tensor | int, c: int) -> torch.Tensor | int:
    """(h * c) mod 2**32 for h, c < 2**32, without leaving int64's range."""
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & M32


def mix32(h: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer hash (Wellons' lowbias32) of values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x7FEB352D)
    h = h ^ (h >> 15)
    h = _mul32(h, 0x846CA68B)
    return h ^ (h >> 16)


def step_key(seed: int, step: int) -> int:
    """A trial's dropout key for one optimizer step."""
    return int(mix32((int(mix32(seed & M32)) + step) & M32))


class SeededDropout(nn.Module):
    """``nn.Dropout(p)`` with masks from `key` (a buffer the stack sets every step)."""

    key: torch.Tensor

    def __init__(self, p: float, layer: int) -> None:
        super().__init__()
        self.p = p
        self.salt = int(mix32(layer + 1))
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p >= 1:
            return x * 0
        position = torch.arange(x.numel(), device=x.device).view(x.shape)
        h = mix32((position + mix32(self.key ^ self.salt)) & M32)
        keep = h >= round(self.p * 2**32)
        assert isinstance(keep, torch.Tensor)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def seed_dropout(model: nn.Module) -> list[str]:
    """Replace every ``nn.Dropout`` of ``model`` by a `SeededDropout` in place; returns
    the names of their key buffers."""
    keys: list[str] = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, child_name, SeededDropout(child.p, layer=len(keys)))
                keys.append(f"{name}.{child_name}.key" if name else f"{child_name}.key")
    return keys
