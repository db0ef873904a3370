from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from schedules._base import Param, Schedule, ScheduleError

if TYPE_CHECKING:
    import torch


def global_grad_norm(optimizer: torch.optim.Optimizer) -> float:
    """The 2-norm of all gradients the optimizer holds (NaN when it holds none)."""
    import torch  # here, not above: declaring the families (validating a config) needs no torch

    grads = [
        p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
    ]
    if not grads:
        return math.nan
    return float(torch.nn.utils.get_total_norm(grads, norm_type=2.0))


class GradNorm(Schedule):
    """The founding document's "average gradient decay": α0·G_{t−1}/G_0.

    G_t is the mean global gradient norm over the last `window` steps and G_0 the mean over
    the first window. The lr stays α0 until that first window is full, then follows the
    ratio clamped to [min_ratio, max_ratio]. Being a ratio of norms, it is invariant to
    rescaling every gradient; steps with a NaN/Inf norm are skipped and a zero G_0 gives
    ratio 1, so the lr stays finite.

    The scheduler reads the norm from the optimizer's parameters in ``scheduler.step()``:
    call it after ``optimizer.step()`` and before the next ``zero_grad()``.
    """

    name = "grad_norm"
    doc = "α0 times the ratio of recent to initial mean gradient norm, clamped"
    formula = "α0·clamp(G_{t−1}/G_0, min_ratio, max_ratio)"
    closed_form = False
    PARAMS = {
        "window": Param(int, "steps averaged into each G", low=1, default=50, log=True),
        "min_ratio": Param(float, "lowest allowed G_{t−1}/G_0", low=0.0, default=0.0),
        "max_ratio": Param(
            float, "highest allowed G_{t−1}/G_0", low=0.0, low_open=True, default=1.0
        ),
    }
    window: int
    min_ratio: float
    max_ratio: float

    def _check(self) -> None:
        if self.min_ratio > self.max_ratio:
            raise ScheduleError(
                f"{self.name}.min_ratio: must be <= max_ratio={self.max_ratio!r}, "
                f"got {self.min_ratio!r}"
            )

    def initial_state(self) -> dict[str, Any]:
        # first: norms of the first window (G_0 once full); recent: the last `window` norms.
        return {"first": [], "recent": []}

    def observe_step(
        self, state: dict[str, Any], t: int, optimizer: torch.optim.Optimizer
    ) -> None:
        self.observe_norm(state, global_grad_norm(optimizer))

    def observe_norm(self, state: dict[str, Any], norm: float) -> None:
        """Record one step's global gradient norm (non-finite norms are skipped)."""
        if not math.isfinite(norm):
            return
        if len(state["first"]) < self.window:
            state["first"].append(norm)
        state["recent"].append(norm)
        if len(state["recent"]) > self.window:
            del state["recent"][0]

    def state_factor(self, state: dict[str, Any], t: int) -> float:
        if len(state["first"]) < self.window:
            return 1.0
        g0 = sum(state["first"]) / self.window
        ratio = sum(state["recent"]) / self.window / g0 if g0 > 0 else 1.0
        return min(self.max_ratio, max(self.min_ratio, ratio))
