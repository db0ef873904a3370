from __future__ import annotations

from schedules._base import Schedule
from schedules.families.step import DECAY_RATE, DECAY_STEPS


class Exponential(Schedule):
    """Smooth exponential decay (Keras `ExponentialDecay`, torch `ExponentialLR`)."""

    name = "exponential"
    doc = "smooth exponential decay by decay_rate per decay_steps"
    formula = "α0·decay_rate^(t/decay_steps)"
    PARAMS = {"decay_rate": DECAY_RATE, "decay_steps": DECAY_STEPS}
    decay_rate: float
    decay_steps: int

    def _factor(self, t: int) -> float:
        return float(self.decay_rate ** (t / self.decay_steps))
