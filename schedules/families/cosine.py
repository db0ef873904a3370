from __future__ import annotations

import math

from schedules._base import MIN_LR, TOTAL_STEPS, Schedule


class Cosine(Schedule):
    """Half-cosine from α0 to `min_lr` over T steps, then held (torch `CosineAnnealingLR`,
    Keras `CosineDecay`)."""

    name = "cosine"
    doc = "half-cosine decay to min_lr over total_steps"
    formula = "min_lr + (α0 − min_lr)·½(1 + cos(π·min(t,T)/T))"
    PARAMS = {"total_steps": TOTAL_STEPS, "min_lr": MIN_LR}
    total_steps: int
    min_lr: float

    def _check(self) -> None:
        self._check_min_lr()

    def _factor(self, t: int) -> float:
        cos = 0.5 * (1.0 + math.cos(math.pi * min(t, self.total_steps) / self.total_steps))
        floor = self.min_lr / self.lr
        return floor + (1.0 - floor) * cos
