from __future__ import annotations

import math
from collections.abc import Callable

from schedules._base import MIN_LR, TOTAL_STEPS, Param, Schedule

_SHAPES: dict[str, Callable[[float], float]] = {
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1.0 - math.sqrt(p),
}


class WarmupStableDecay(Schedule):
    """Hold α0, then decay to `min_lr` over the last `decay_fraction` of T
    (HF `get_wsd_schedule`; pair it with `warmup_steps`)."""

    name = "wsd"
    doc = "warmup-stable-decay: hold α0, decay over the last decay_fraction of total_steps"
    formula = "α0 until (1−f)T, then min_lr + (α0 − min_lr)·shape(progress)"
    PARAMS = {
        "total_steps": TOTAL_STEPS,
        "decay_fraction": Param(
            float,
            "fraction of total_steps spent decaying",
            low=0.0,
            high=1.0,
            low_open=True,
            default=0.2,
        ),
        "decay_shape": Param(str, "shape of the decay", choices=tuple(_SHAPES), default="1-sqrt"),
        "min_lr": MIN_LR,
    }
    COOLDOWN = ("decay_fraction", "decay_shape", "min_lr")
    total_steps: int
    decay_fraction: float
    decay_shape: str
    min_lr: float

    def _check(self) -> None:
        self._check_min_lr()

    @property
    def stable_steps(self) -> float:
        return self.warmup_steps + (self.total_steps - self.decay_fraction * self.total_steps)

    def _factor(self, t: int) -> float:
        decay_steps = self.decay_fraction * self.total_steps
        stable_steps = self.total_steps - decay_steps
        if t < stable_steps:
            return 1.0
        progress = min(1.0, (t - stable_steps) / decay_steps)
        floor = self.min_lr / self.lr
        return floor + (1.0 - floor) * _SHAPES[self.decay_shape](progress)
