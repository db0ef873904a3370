"""SGD and AdamW over K stacked trials at once, each trial with its own hyperparameters.

Parameters and gradients are flat ``[K, P]`` tensors (`objectives.batched_model`); learning
rates a list of K floats. The arithmetic is torch's single-tensor implementation
(``torch.optim.SGD`` and ``torch.optim.AdamW`` with ``foreach=False``) applied row-wise:
scalars that torch computes in Python (double precision) are computed here in float64, and
tensor expressions keep torch's order. Updates are elementwise, so a trial's update does
not depend on the stack around it, and they match ``torch.optim`` to rounding. A trial's
state is one row of each state tensor (`row`); a stack is built from rows (trials join a
running stack with theirs), and `to_torch_state` and `row_from_torch` convert a row to and
from the ``torch.optim`` format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

F64 = torch.float64

# One trial's optimizer state: its row of each state tensor (empty for a fresh trial).
Row = dict[str, torch.Tensor]


class BatchedOptimizer:
    """The update rule for a stack; ``settings`` are the trials' sampled parameters."""

    def __init__(
        self, settings: list[dict[str, Any]], like: torch.Tensor, rows: Sequence[Row] = ()
    ) -> None:
        """``rows``: each trial's state so far (`row`), or none for fresh trials."""
        self.settings = settings
        self.state: dict[str, torch.Tensor] = {}
        self._like = like
        self._columns()
        if rows:
            self._stack(rows)

    def _stack(self, rows: Sequence[Row]) -> None:
        # A fresh trial's row is zeros: AdamW's step count and moments start there, and a
        # zero momentum buffer makes SGD's first update the gradient itself, as torch's.
        # A checkpoint's rows come on the CPU (`CheckpointStore.load`): moved to the stack's.
        device = self._like.device
        for key in {key for row in rows for key in row}:
            template = next(row[key] for row in rows if key in row)
            self.state[key] = torch.stack(
                [
                    (row[key] if key in row else torch.zeros_like(template)).to(device)
                    for row in rows
                ]
            )

    def row(self, k: int) -> Row:
        """Trial ``k``'s state (copies)."""
        return {key: value[k].clone() for key, value in self.state.items()}

    def _col(self, values: list[float], dtype: torch.dtype | None = None) -> torch.Tensor:
        """One value per trial as a ``[K, 1]`` column (float32 unless ``dtype``)."""
        return torch.tensor(
            values, dtype=dtype or self._like.dtype, device=self._like.device
        ).view(-1, 1)

    def _columns(self) -> None:
        """Cache the hyperparameter columns (recomputed when the stack shrinks)."""

    def select(self, index: torch.Tensor, kept: list[int]) -> None:
        """Keep only the trials at positions ``kept`` (``index`` is the same, as a tensor)."""
        self.settings = [self.settings[i] for i in kept]
        self.state = {key: value[index] for key, value in self.state.items()}
        self._columns()

    def step(self, p: torch.Tensor, grad: torch.Tensor, lrs: list[float]) -> None:
        raise NotImplementedError

    def to_torch_state(self, k: int, shapes: dict[str, torch.Size]) -> dict[str, dict[str, Any]]:
        """Trial ``k``'s state per parameter name, as its ``torch.optim`` optimizer holds it."""
        sizes = [s.numel() for s in shapes.values()]
        out: dict[str, dict[str, Any]] = {name: {} for name in shapes}
        for key, value in self.state.items():
            if value.dim() == 1:  # a per-trial scalar such as AdamW's step count
                for name in shapes:
                    out[name][key] = torch.tensor(float(value[k]))
                continue
            pieces = torch.split(value[k], sizes)
            for (name, shape), piece in zip(shapes.items(), pieces, strict=True):
                out[name][key] = piece.view(shape).clone()
        return out


def row_from_torch(state: dict[str, Any], names: list[str]) -> Row:
    """A trial's row from its ``torch.optim`` state dict (parameters in ``names`` order)."""
    per_param = state["state"]
    keys = {key for entry in per_param.values() for key in entry}
    rows = {key: _flat_row(per_param, key, len(names)) for key in keys}
    return {key: row for key, row in rows.items() if row is not None}


def _flat_row(state: dict[int, dict[str, Any]], key: str, n: int) -> torch.Tensor | None:
    """One trial's ``key`` state over all its parameters (torch keys them by position)."""
    entries = [state[i][key] for i in range(n) if key in state.get(i, {})]
    if not entries:
        return None
    if key == "step":  # one count, the same for every parameter
        return torch.as_tensor(entries[0], dtype=F64)
    return torch.cat([torch.as_tensor(e).flatten() for e in entries])


class BatchedSGD(BatchedOptimizer):
    """torch.optim.SGD: weight decay, momentum (dampening 0), Nesterov."""

    def _columns(self) -> None:
        s = self.settings
        self.weight_decay = self._col([t["weight_decay"] for t in s])
        self.any_decay = any(t["weight_decay"] for t in s)
        self.momentum = self._col([t["momentum"] for t in s])
        nesterov = [bool(t["nesterov"]) and t["momentum"] > 0 for t in s]
        self.nesterov = self._col(nesterov, torch.bool)
        self.any_nesterov, self.all_nesterov = any(nesterov), all(nesterov)

    @torch.no_grad()
    def step(self, p: torch.Tensor, grad: torch.Tensor, lrs: list[float]) -> None:
        d_p = grad + self.weight_decay * p if self.any_decay else grad
        buf = self.state.get("momentum_buffer")
        buf = d_p.clone() if buf is None else buf * self.momentum + d_p
        self.state["momentum_buffer"] = buf
        if self.all_nesterov:
            d_p = d_p + self.momentum * buf
        elif self.any_nesterov:
            d_p = torch.where(self.nesterov, d_p + self.momentum * buf, buf)
        else:
            d_p = buf
        p.sub_(self._col(lrs) * d_p)

    def to_torch_state(self, k: int, shapes: dict[str, torch.Size]) -> dict[str, dict[str, Any]]:
        if self.settings[k]["momentum"] == 0:
            return {}  # torch keeps no buffer without momentum
        return super().to_torch_state(k, shapes)


class BatchedAdamW(BatchedOptimizer):
    """torch.optim.AdamW (eps 1e-8, no amsgrad)."""

    EPS = 1e-8

    def _columns(self) -> None:
        s = self.settings
        self.one_minus_beta1 = self._col([1 - t["beta1"] for t in s])
        self.beta2_col = self._col([t["beta2"] for t in s])
        self.one_minus_beta2 = self._col([1 - t["beta2"] for t in s])

    @torch.no_grad()
    def step(self, p: torch.Tensor, grad: torch.Tensor, lrs: list[float]) -> None:
        if "step" not in self.state:
            self.state["step"] = torch.zeros(len(self.settings), dtype=F64)
            self.state["exp_avg"] = torch.zeros_like(p)
            self.state["exp_avg_sq"] = torch.zeros_like(p)
        state = self.state
        state["step"] += 1
        # The per-trial scalars in Python floats, exactly as torch.optim computes them.
        trials = list(zip(lrs, self.settings, state["step"].tolist(), strict=True))
        decay = self._col([1 - lr * t["weight_decay"] for lr, t, _ in trials])
        step_size = self._col([lr / (1 - t["beta1"] ** n) for lr, t, n in trials])
        bias_correction2_sqrt = self._col([(1 - t["beta2"] ** n) ** 0.5 for _, t, n in trials])
        p.mul_(decay)
        state["exp_avg"].lerp_(grad, self.one_minus_beta1)
        state["exp_avg_sq"].mul_(self.beta2_col).addcmul_(self.one_minus_beta2 * grad, grad)
        denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(self.EPS)
        p.sub_(step_size * (state["exp_avg"] / denom))


class MixedOptimizer(BatchedOptimizer):
    """SGD and AdamW trials in one stack. The trainer orders a stack's rows by optimizer
    kind, so each kind updates a contiguous block of rows in place."""

    def _columns(self) -> None:
        kinds = [t["optimizer"] for t in self.settings]
        if kinds != sorted(kinds):
            raise ValueError("a mixed stack's rows must be ordered by optimizer kind")
        self.parts: dict[str, tuple[slice, BatchedOptimizer]] = {}
        for kind in sorted(set(kinds)):
            rows = slice(kinds.index(kind), len(kinds) - kinds[::-1].index(kind))
            self.parts[kind] = (rows, KINDS[kind](self.settings[rows], self._like))

    def select(self, index: torch.Tensor, kept: list[int]) -> None:
        old = self.parts
        self.settings = [self.settings[i] for i in kept]
        self._columns()
        for kind, (rows, optimizer) in old.items():
            if kind in self.parts:
                mine = [i - rows.start for i in kept if rows.start <= i < rows.stop]
                optimizer.select(torch.tensor(mine, dtype=torch.long), mine)
                self.parts[kind] = (self.parts[kind][0], optimizer)

    @torch.no_grad()
    def step(self, p: torch.Tensor, grad: torch.Tensor, lrs: list[float]) -> None:
        for rows, optimizer in self.parts.values():
            optimizer.step(p[rows], grad[rows], lrs[rows])  # views: updated in place

    def to_torch_state(self, k: int, shapes: dict[str, torch.Size]) -> dict[str, dict[str, Any]]:
        start, optimizer = self._part(k)
        return optimizer.to_torch_state(k - start, shapes)

    def _part(self, k: int) -> tuple[int, BatchedOptimizer]:
        """The optimizer of row ``k``'s kind, and the row its block starts at."""
        for rows, optimizer in self.parts.values():
            if rows.start <= k < rows.stop:
                return rows.start, optimizer
        raise IndexError(k)

    def _stack(self, rows: Sequence[Row]) -> None:
        for part, optimizer in self.parts.values():
            optimizer._stack(rows[part])

    def row(self, k: int) -> Row:
        start, optimizer = self._part(k)
        return optimizer.row(k - start)


KINDS: dict[str, type[BatchedOptimizer]] = {"sgd": BatchedSGD, "adamw": BatchedAdamW}


def batched_optimizer(
    settings: list[dict[str, Any]], like: torch.Tensor, rows: Sequence[Row] = ()
) -> BatchedOptimizer:
    """The optimizer for a stack whose flat parameters look ``like`` this: one kind's own, or
    a mix that updates each kind's rows. ``rows``: the trials' states so far, if any."""
    kinds = {t["optimizer"] for t in settings}
    cls = KINDS[kinds.pop()] if len(kinds) == 1 else MixedOptimizer
    return cls(settings, like, rows)
