"""A stack of any ``nn.Module`` through torch.func: ``functional_call`` with each copy's
parameters and buffers, batched by ``vmap`` (`objectives.stacking`).

Each copy keeps its own BatchNorm statistics (rows of the stacked buffers, updated in
place under vmap) and its own dropout masks (`objectives.seeded_dropout`). A module that
vmap cannot batch (data-dependent control flow, ``.item()``, random ops of torch's global
generator, some in-place ops) fails `probe`; its trials then train one at a time
(``vmap=False``), through the same calls without vmap.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from objectives.seeded_dropout import seed_dropout, step_key
from objectives.stacking import Loss, StackedModel, flatten, persistent_buffers, stack_buffers


def stackable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to use as a stack's template (its dropout seeded per trial)."""
    template = copy.deepcopy(model)
    seed_dropout(template)
    return template


class FuncModel(StackedModel):
    def __init__(
        self,
        template: nn.Module,
        flat: torch.Tensor,
        buffers: dict[str, torch.Tensor],
        *,
        vmap: bool = True,
    ) -> None:
        """``template``: from `stackable`. A stack of one calls it directly, without vmap
        (as does ``vmap=False``, which allows only one)."""
        super().__init__(template, flat, buffers)
        self.vmap = vmap
        if not vmap and len(flat) != 1:
            raise ValueError(f"without vmap a stack holds one model, got {len(flat)}")
        self.key_names = [name for name, _ in template.named_buffers() if name.endswith(".key")]
        self.keys = torch.zeros(len(flat), dtype=torch.int64, device=flat.device)

    def set_dropout(self, seeds: Sequence[int], steps: Sequence[int]) -> None:
        if self.key_names:
            keys = [step_key(seed, t) for seed, t in zip(seeds, steps, strict=True)]
            self.keys = torch.tensor(keys, dtype=torch.int64, device=self.flat.device)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        buffers = {**self.buffers, **dict.fromkeys(self.key_names, self.keys)}
        return self.params(), buffers

    def losses(self, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> torch.Tensor:
        self.template.train()

        def one(
            p: dict[str, torch.Tensor],
            b: dict[str, torch.Tensor],
            x: torch.Tensor,
            y: torch.Tensor,
        ) -> torch.Tensor:
            return loss(functional_call(self.template, (p, b), (x,)), y)

        params, buffers = self._state()
        if self.vmap and len(self.flat) > 1:
            out: torch.Tensor = vmap(one)(params, buffers, x, y)
            return out
        return one(*_first((params, buffers)), x[0], y[0]).unsqueeze(0)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        self.template.eval()

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
            out: torch.Tensor = functional_call(self.template, (p, b), (x,))
            return out

        params, buffers = self._state()
        if self.vmap and len(self.flat) > 1:
            stacked: torch.Tensor = vmap(one)(params, buffers)
            return stacked
        return one(*_first((params, buffers))).unsqueeze(0)

    def select(self, index: torch.Tensor) -> None:
        super().select(index)
        self.keys = self.keys[index]


def _first(
    state: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Copy 0's views of a stack's parameters and buffers (written through in place)."""
    return tuple({name: t[0] for name, t in d.items()} for d in state)  # type: ignore[return-value]


def probe(template: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> str | None:
    """Why vmap cannot train two copies of ``template`` on the batch ``x``, ``y``
    (``[B, ...]``), in one line, or None: one step on throwaway copies, forward and
    backward, as a stack would train."""
    scratch = copy.deepcopy(template)
    rows = [flatten(scratch)] * 2
    buffers = stack_buffers([persistent_buffers(scratch)] * 2)
    try:
        model = FuncModel(scratch, torch.stack(rows), {n: b.clone() for n, b in buffers.items()})
        model.set_dropout([0, 1], [0, 0])
        model.loss_and_grad(torch.stack([x, x]), torch.stack([y, y]), loss)
        model.evaluate(x)
    except Exception as e:  # whatever vmap raises, said in one line
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None
