from __future__ import annotations

from schedules._base import MIN_LR, TOTAL_STEPS, Param, Schedule


class Polynomial(Schedule):
    """α0(1 − t/T)^β, interpolated down to `min_lr` (torch `PolynomialLR`, Keras
    `PolynomialDecay`); held at `min_lr` after T."""

    name = "polynomial"
    doc = "polynomial decay to min_lr over total_steps"
    formula = "min_lr + (α0 − min_lr)·(1 − min(t,T)/T)^β"
    PARAMS = {
        "total_steps": TOTAL_STEPS,
        "power": Param(float, "exponent β", low=0.0, low_open=True, default=1.0),
        "min_lr": MIN_LR,
    }
    total_steps: int
    power: float
    min_lr: float

    def _check(self) -> None:
        self._check_min_lr()

    def _factor(self, t: int) -> float:
        decayed = float((1.0 - min(t, self.total_steps) / self.total_steps) ** self.power)
        floor = self.min_lr / self.lr
        return floor + (1.0 - floor) * decayed
