"""Hand-batched kernels: the fast path of a stack (`objectives.stacking`) for
``nn.Sequential`` models built from the layers below (the built-in tasks').

Each layer maps to one batched kernel (``baddbmm`` for Linear, a grouped convolution for
Conv2d, ...). A trial's slice of those kernels computes what they compute for a stack of one,
up to rounding: a CPU may pick another blocking of the sums for K copies than for one, so
float32 results can differ in the last bit (float64 ones near 1e-16), and every optimizer
update is elementwise on the flat tensor. Measured faster than ``torch.func.vmap`` over
``functional_call`` for these models (BENCHMARKS.md, ``batched_kernels_vs_vmap``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from objectives.losses import cross_entropy
from objectives.models import (
    CharEmbedding,
    ImageConv3x3,
    TransformerBlock,
    stacked_layer_norm,
    stacked_linear,
)
from objectives.stacking import Loss, StackedModel, flatten

Layer = Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def _linear(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return stacked_linear(x, p["weight"], p["bias"])


def _layer_norm(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    assert isinstance(m, nn.LayerNorm)
    return stacked_layer_norm(x, p["weight"], p["bias"], m.eps)


def _stacked(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A layer that computes its own stack (`objectives.models._Stackable`)."""
    assert isinstance(m, CharEmbedding | TransformerBlock)
    return m.stacked(p, x)


def _image_conv(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    k, b, _, h, w = x.shape
    columns = F.unfold(x.reshape(k * b, 1, h, w), 3, padding=1).view(k, b, 9, h * w)
    out = torch.matmul(p["weight"].flatten(2).unsqueeze(1), columns)
    return (out + p["bias"][:, None, :, None]).view(k, b, -1, h, w)


def _conv(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    assert isinstance(m, nn.Conv2d)
    k, b, c, h, w = x.shape
    grouped = x.transpose(0, 1).reshape(b, k * c, h, w)
    out = F.conv2d(
        grouped,
        p["weight"].flatten(0, 1),
        p["bias"].flatten(),
        m.stride,
        m.padding,
        m.dilation,
        groups=k,
    )
    return out.view(b, k, -1, *out.shape[2:]).transpose(0, 1)


def _per_example(m: nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A layer without parameters, applied to all ``K * B`` examples at once."""
    out: torch.Tensor = m(x.flatten(0, 1))
    return out.view(*x.shape[:2], *out.shape[1:])


LAYERS: dict[type, Layer] = {
    nn.Linear: _linear,
    ImageConv3x3: _image_conv,
    nn.Conv2d: _conv,
    nn.ReLU: lambda m, p, x: torch.relu(x),
    nn.Tanh: lambda m, p, x: torch.tanh(x),
    nn.Flatten: lambda m, p, x: x.flatten(2),
    nn.Unflatten: lambda m, p, x: x.view(*x.shape[:2], *m.unflattened_size),  # type: ignore[misc]
    nn.MaxPool2d: _per_example,
    nn.LayerNorm: _layer_norm,
    CharEmbedding: _stacked,
    TransformerBlock: _stacked,
}


class BatchedModel(StackedModel):
    """A stack of ``nn.Sequential`` models built from the layers of `LAYERS`, without
    buffers: each layer's K copies are one batched kernel."""

    @staticmethod
    def covers(template: nn.Module) -> bool:
        """Whether every layer of ``template`` has a batched kernel here."""
        return (
            isinstance(template, nn.Sequential)
            and all(type(layer) in LAYERS for layer in template)
            and not any(True for _ in template.buffers())
        )

    def __init__(self, template: nn.Module, models: list[nn.Module] | torch.Tensor) -> None:
        """``models``: the copies, or their parameters already flat (``[K, P]``)."""
        if not self.covers(template):
            raise TypeError(f"no batched kernels for every layer of {type(template).__name__}")
        if not isinstance(models, torch.Tensor):
            models = torch.stack([flatten(m) for m in models])
        super().__init__(template, models)
        assert isinstance(template, nn.Sequential)
        self.layers = list(template)
        # For each layer, its parameters' (short name, position in `shapes`).
        self._layer_params = [
            [
                (name.split(".", 1)[1], i)
                for i, name in enumerate(self.shapes)
                if name.split(".", 1)[0] == str(index)
            ]
            for index in range(len(self.layers))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is ``[K, B, ...]``: copy k's batch in row k."""
        params = list(self.params().values())
        for layer, names in zip(self.layers, self._layer_params, strict=True):
            x = LAYERS[type(layer)](layer, {short: params[i] for short, i in names}, x)
        return x

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> torch.Tensor:
        out = self.forward(x)
        if loss is cross_entropy:  # the built-in tasks' loss, for all copies at once
            flat = F.cross_entropy(out.flatten(0, -2), y.flatten(), reduction="none")
            return flat.view(len(out), -1).mean(dim=1)
        return torch.func.vmap(loss)(out, y)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x.expand(len(self.flat), *x.shape))
