"""SGD and AdamW over K stacked trials at once, each trial with its own hyperparameters.

Parameters are tensors of shape ``[K, ...]``; hyperparameters are tensors of shape ``[K]``.
The arithmetic is torch's own single-tensor implementation (``torch.optim.SGD`` and
``torch.optim.AdamW``, ``foreach=False``) applied along the stack, so a trial's update equals
the one its own torch optimizer would make. `to_torch_state` turns one trial's slice back into
a ``torch.optim`` state dict, so stacked and one-at-a-time checkpoints are interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _per_trial(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """A ``[K, 1, ...]`` tensor broadcasting one value per trial over a parameter."""
    shape = (len(values),) + (1,) * (like.dim() - 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)


class BatchedOptimizer:
    """The trials' optimizer settings, split by kind (all SGD or all AdamW in one stack)."""

    def __init__(self, params: list[dict[str, Any]]) -> None:
        self.settings = params  # each trial's sampled parameters
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def select(self, keep: torch.Tensor, kept: list[int]) -> None:
        """Keep only the trials at positions ``kept`` (``keep`` is the same as an index)."""
        self.settings = [self.settings[i] for i in kept]
        self.state = {n: {k: v[keep] for k, v in s.items()} for n, s in self.state.items()}

    def step(
        self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: Sequence[float]
    ) -> None:
        raise NotImplementedError

    def to_torch_state(self, k: int, names: list[str]) -> dict[str, dict[str, Any]]:
        """Trial ``k``'s state per parameter name, as its ``torch.optim`` optimizer holds it."""
        raise NotImplementedError

    def load_torch_states(self, states: list[dict[str, Any]], names: list[str]) -> None:
        """Stack the trials' ``torch.optim`` state dicts (parameters in ``names`` order)."""
        per_trial = [{names[int(i)]: v for i, v in s["state"].items()} for s in states]
        for name in names:
            entries = [t.get(name) for t in per_trial]
            present = [e for e in entries if e]
            if not present:
                continue
            self.state[name] = {
                key: torch.stack(
                    [
                        torch.as_tensor(e[key])
                        if e
                        else torch.zeros_like(torch.as_tensor(present[0][key]))
                        for e in entries
                    ]
                )
                for key in present[0]
            }


class BatchedSGD(BatchedOptimizer):
    """torch.optim.SGD: weight decay, momentum (dampening 0), Nesterov."""

    @torch.no_grad()
    def step(
        self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: Sequence[float]
    ) -> None:
        s = self.settings
        for name, p in params.items():
            d_p = grads[name]
            wd = [t["weight_decay"] for t in s]
            if any(wd):
                d_p = d_p + _per_trial(wd, p) * p
            momentum = _per_trial([t["momentum"] for t in s], p)
            buf = self.state.get(name, {}).get("momentum_buffer")
            buf = d_p.clone() if buf is None else buf * momentum + d_p
            self.state[name] = {"momentum_buffer": buf}
            nesterov = _per_trial([bool(t["nesterov"]) and t["momentum"] > 0 for t in s], p)
            d_p = torch.where(nesterov.bool(), d_p + momentum * buf, buf)
            p.sub_(_per_trial(lrs, p) * d_p)

    def to_torch_state(self, k: int, names: list[str]) -> dict[str, dict[str, Any]]:
        if self.settings[k]["momentum"] == 0:
            return {}  # torch keeps no buffer without momentum
        return {
            name: {"momentum_buffer": self.state[name]["momentum_buffer"][k].clone()}
            for name in names
            if name in self.state
        }


class BatchedAdamW(BatchedOptimizer):
    """torch.optim.AdamW (eps 1e-8, no amsgrad)."""

    EPS = 1e-8

    @torch.no_grad()
    def step(
        self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: Sequence[float]
    ) -> None:
        s = self.settings
        for name, p in params.items():
            grad = grads[name]
            state = self.state.setdefault(
                name,
                {
                    "step": torch.zeros(len(s), dtype=torch.float64),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                },
            )
            state["step"] += 1
            # Scalars are computed in Python (double precision) as torch does, and each
            # tensor expression keeps torch's order of operations, so rounding matches too.
            decay = [1 - lr * t["weight_decay"] for lr, t in zip(lrs, s, strict=True)]
            p.mul_(_per_trial(decay, p))
            state["exp_avg"].lerp_(grad, _per_trial([1 - t["beta1"] for t in s], p))
            state["exp_avg_sq"].mul_(_per_trial([t["beta2"] for t in s], p))
            state["exp_avg_sq"].addcmul_(_per_trial([1 - t["beta2"] for t in s], p) * grad, grad)
            steps = state["step"].tolist()
            bc1 = [1 - t["beta1"] ** n for t, n in zip(s, steps, strict=True)]
            bc2 = [(1 - t["beta2"] ** n) ** 0.5 for t, n in zip(s, steps, strict=True)]
            step_size = _per_trial([lr / b for lr, b in zip(lrs, bc1, strict=True)], p)
            denom = (state["exp_avg_sq"].sqrt() / _per_trial(bc2, p)).add_(self.EPS)
            p.sub_(step_size * (state["exp_avg"] / denom))

    def to_torch_state(self, k: int, names: list[str]) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "step": torch.tensor(float(self.state[name]["step"][k])),
                "exp_avg": self.state[name]["exp_avg"][k].clone(),
                "exp_avg_sq": self.state[name]["exp_avg_sq"][k].clone(),
            }
            for name in names
            if name in self.state
        }


class MixedOptimizer(BatchedOptimizer):
    """SGD and AdamW trials in one stack: each kind updates its own rows."""

    def __init__(self, settings: list[dict[str, Any]]) -> None:
        super().__init__(settings)
        self.parts: dict[str, tuple[list[int], BatchedOptimizer]] = {}
        for kind, cls in KINDS.items():
            rows = [i for i, t in enumerate(settings) if t["optimizer"] == kind]
            if rows:
                self.parts[kind] = (rows, cls([settings[i] for i in rows]))

    def select(self, keep: torch.Tensor, kept: list[int]) -> None:
        super().select(keep, kept)
        for kind, (rows, optimizer) in list(self.parts.items()):
            mine = [j for j, row in enumerate(rows) if row in kept]
            optimizer.select(torch.tensor(mine, dtype=torch.long, device=keep.device), mine)
            self.parts[kind] = ([kept.index(rows[j]) for j in mine], optimizer)

    @torch.no_grad()
    def step(
        self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lrs: Sequence[float]
    ) -> None:
        for rows, optimizer in self.parts.values():
            if not rows:
                continue
            index = torch.tensor(rows, dtype=torch.long, device=next(iter(params.values())).device)
            mine = {name: p[index] for name, p in params.items()}
            optimizer.step(
                mine, {name: g[index] for name, g in grads.items()}, [lrs[i] for i in rows]
            )
            for name, p in params.items():
                p[index] = mine[name]

    def to_torch_state(self, k: int, names: list[str]) -> dict[str, dict[str, Any]]:
        for rows, optimizer in self.parts.values():
            if k in rows:
                return optimizer.to_torch_state(rows.index(k), names)
        raise IndexError(k)

    def load_torch_states(self, states: list[dict[str, Any]], names: list[str]) -> None:
        for rows, optimizer in self.parts.values():
            optimizer.load_torch_states([states[i] for i in rows], names)


KINDS: dict[str, type[BatchedOptimizer]] = {"sgd": BatchedSGD, "adamw": BatchedAdamW}


def batched_optimizer(settings: list[dict[str, Any]]) -> BatchedOptimizer:
    """The optimizer for a stack: one kind's own, or a mix that splits the rows by kind."""
    kinds = {t["optimizer"] for t in settings}
    return KINDS[kinds.pop()](settings) if len(kinds) == 1 else MixedOptimizer(settings)
