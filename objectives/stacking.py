"""K models of one architecture trained as one: the layout every stack shares.

Parameters live in one flat ``[K, P]`` leaf tensor (row k is trial k's model), so one
backward fills every trial's gradient and the optimizers (`batched_optim`) update all rows
elementwise. Buffers (BatchNorm's running statistics) are ``[K, *shape]`` tensors, one row
per trial. Two ways compute the K forward passes:

- `objectives.func_model.FuncModel`: any ``nn.Module``, through torch.func
  (``functional_call`` under ``vmap``);
- `objectives.batched_model.BatchedModel`: hand-batched kernels for the built-in tasks'
  layers, measurably faster where they apply (BENCHMARKS.md), so `stacked_model` picks
  them when it can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

# What a task's loss is: the mean loss of one model's output on its batch (a scalar).
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StackedModel:
    """K copies of ``template``'s architecture, each with its own parameters and buffers.

    ``flat`` (``[K, P]``, a leaf requiring grad) holds every parameter of every copy;
    `params` views it per parameter name, so one backward fills ``flat.grad``.
    """

    def __init__(
        self,
        template: nn.Module,
        flat: torch.Tensor,
        buffers: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``flat``: the copies' parameters, each a row (`flatten`); ``buffers``: each
        persistent buffer stacked by copy (`stack_buffers`)."""
        self.template = template
        self.shapes = {name: p.shape for name, p in template.named_parameters()}
        self.flat = flat.detach().requires_grad_()
        self.buffers = dict(buffers or {})
        self.autocast: torch.dtype | None = None  # bf16 autocast when set (`precision`)

    def __len__(self) -> int:
        return len(self.flat)

    def params(self) -> dict[str, torch.Tensor]:
        """Every parameter as a ``[K, *shape]`` view of `flat`."""
        sizes = [s.numel() for s in self.shapes.values()]
        pieces = torch.split(self.flat, sizes, dim=1)
        return {
            name: piece.view(len(self.flat), *shape)
            for (name, shape), piece in zip(self.shapes.items(), pieces, strict=True)
        }

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> torch.Tensor:
        """Each copy's ``loss`` on its own batch (``x[k]``, ``y[k]``), ``[K]``, in training
        mode (BatchNorm updates each copy's running statistics)."""
        raise NotImplementedError

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every copy's output for the same inputs ``x`` (``[B, ...]``), in evaluation
        mode: ``[K, B, ...]``."""
        raise NotImplementedError

    def loss_and_grad(
        self, x: torch.Tensor, y: torch.Tensor, loss: Loss
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each copy's loss on its own batch (``[K]``) and its gradient in the flat layout
        (``[K, P]``). A copy's loss depends on its own row only: one backward of the sum
        gives each its gradient (a copy whose loss is not finite gets none)."""
        self.flat.grad = None
        with self._precision():
            losses = self.losses(x, y, loss).to(self.flat.dtype)
        finite = torch.isfinite(losses)
        total = losses.sum() if bool(finite.all()) else torch.where(finite, losses, 0.0).sum()
        total.backward()  # type: ignore[no-untyped-call]
        assert self.flat.grad is not None
        return losses.detach(), self.flat.grad

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """`outputs` for ``x``, under the precision of training."""
        with self._precision():
            out = self.outputs(x)
        return out.to(self.flat.dtype) if out.is_floating_point() else out

    def _precision(self) -> torch.autocast:
        dtype = self.autocast or torch.bfloat16
        return torch.autocast(self.flat.device.type, dtype=dtype, enabled=bool(self.autocast))

    def set_dropout(self, seeds: Sequence[int], steps: Sequence[int]) -> None:
        """Key each copy's dropout masks for its step (`objectives.seeded_dropout`)."""

    def select(self, index: torch.Tensor) -> None:
        """Keep only the copies at ``index``."""
        self.flat = self.flat.detach()[index].requires_grad_()
        self.buffers = {name: b[index] for name, b in self.buffers.items()}

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Copy ``k``'s parameters and buffers as its own model's ``state_dict``."""
        own = {name: p[k].detach().clone() for name, p in self.params().items()}
        return {**own, **{name: b[k].clone() for name, b in self.buffers.items()}}

    def row(self, k: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Copy ``k``'s flat parameters and buffers, to build another stack with."""
        return self.flat[k].detach(), {name: b[k] for name, b in self.buffers.items()}


def flatten(model: nn.Module) -> torch.Tensor:
    """A model's parameters as one row of a stack's flat tensor."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The buffers a model's ``state_dict`` holds (BatchNorm's statistics), by name."""
    state = model.state_dict(keep_vars=True)
    return {name: b.detach() for name, b in model.named_buffers() if name in state}


def stack_buffers(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each buffer of ``rows`` (one dict per copy) stacked by copy."""
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]} if rows else {}


def template_for(model: nn.Module) -> nn.Module:
    """The template of a stack of ``model``'s architecture (`stacked_model`)."""
    from objectives.batched_model import BatchedModel
    from objectives.func_model import stackable

    return model if BatchedModel.covers(model) else stackable(model)


def stacked_model(
    template: nn.Module,
    flat: torch.Tensor,
    buffers: dict[str, torch.Tensor],
    *,
    vmap: bool = True,
) -> StackedModel:
    """The fastest stack for ``template`` (from `template_for`): hand-batched kernels
    where they cover every layer, else torch.func (``vmap=False``: one copy, for a module
    that vmap cannot batch, `objectives.func_model.probe`)."""
    from objectives.batched_model import BatchedModel
    from objectives.func_model import FuncModel

    if BatchedModel.covers(template):
        return BatchedModel(template, flat)
    return FuncModel(template, flat, buffers, vmap=vmap)
