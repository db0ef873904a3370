"""K models of one architecture as one: parameters in a flat ``[K, P]`` tensor, and a batched
forward pass for ``nn.Sequential`` models built from the layers below.

Each layer maps to one batched kernel (``baddbmm`` for Linear, a grouped convolution for
Conv2d, ...). A trial's slice of those kernels computes what they compute for a stack of one,
up to rounding: a CPU may pick another blocking of the sums for K copies than for one, so
float32 results can differ in the last bit (float64 ones near 1e-16), and every optimizer
update is elementwise on the flat tensor. Measured faster than ``torch.func.vmap`` over
``functional_call`` for these models (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from objectives.models import (
    CharEmbedding,
    ImageConv3x3,
    TransformerBlock,
    stacked_layer_norm,
    stacked_linear,
)

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


class BatchedModel:
    """K copies of ``template``'s architecture with their own parameters.

    ``flat`` (``[K, P]``, a leaf requiring grad) holds every parameter of every copy;
    `params` views it per layer, so one backward fills ``flat.grad``.
    """

    def __init__(self, template: nn.Module, models: list[nn.Module] | torch.Tensor) -> None:
        """``models``: the copies, or their parameters already flat (``[K, P]``)."""
        if not isinstance(template, nn.Sequential):
            raise TypeError(f"only nn.Sequential models can be stacked, got {type(template)}")
        for layer in template:
            if type(layer) not in LAYERS:
                raise TypeError(f"cannot stack a {type(layer).__name__} layer")
        if any(True for _ in template.buffers()):
            raise TypeError("models with buffers cannot be stacked")
        self.template = template
        self.shapes = {name: p.shape for name, p in template.named_parameters()}
        # For each layer, its parameters' (short name, position in `shapes`).
        self._layer_params = [
            [
                (name.split(".", 1)[1], i)
                for i, name in enumerate(self.shapes)
                if name.split(".", 1)[0] == str(index)
            ]
            for index in range(len(template))
        ]
        self.names = list(self.shapes)
        if not isinstance(models, torch.Tensor):
            models = torch.stack([flatten(m) for m in models])
        self.flat = models.detach().requires_grad_()

    def params(self) -> dict[str, torch.Tensor]:
        """Every parameter as a ``[K, *shape]`` view of `flat`."""
        return self._views(self.flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is ``[K, B, ...]``: trial k's batch in row k."""
        params = list(self.params().values())
        for layer, names in zip(self.template, self._layer_params, strict=True):
            x = LAYERS[type(layer)](layer, {short: params[i] for short, i in names}, x)
        return x

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each copy's mean cross-entropy on its own batch (``[K]``; over every target of it,
        e.g. every position of a sequence) and its gradient in the flat layout (``[K, P]``)."""
        self.flat.grad = None
        logits = self.forward(x)
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.flatten(), reduction="none"
        )
        losses = losses.view(len(self.flat), -1).mean(dim=1)
        finite = torch.isfinite(losses)
        # A copy's loss depends on its own row only: one backward gives each its gradient.
        total = losses.sum() if bool(finite.all()) else torch.where(finite, losses, 0.0).sum()
        total.backward()  # type: ignore[no-untyped-call]
        assert self.flat.grad is not None
        return losses.detach(), self.flat.grad

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = [s.numel() for s in self.shapes.values()]
        pieces = torch.split(flat, sizes, dim=1)
        return {
            name: piece.view(len(flat), *shape)
            for (name, shape), piece in zip(self.shapes.items(), pieces, strict=True)
        }

    def select(self, index: torch.Tensor) -> None:
        """Keep only the copies at ``index``."""
        self.flat = self.flat.detach()[index].requires_grad_()

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Copy ``k``'s parameters as its own model's ``state_dict``."""
        return {name: p[k].detach().clone() for name, p in self.params().items()}


def flatten(model: nn.Module) -> torch.Tensor:
    """A model's parameters as one row of a stack's flat tensor."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])
