from __future__ import annotations

from schedules._base import Param, Schedule

DECAY_RATE = Param(
    float, "multiplier applied every decay_steps", low=0.0, high=1.0, low_open=True, default=0.5
)
DECAY_STEPS = Param(int, "steps between decays", low=1, log=True)


class Step(Schedule):
    """The founding document's staircase: lr *= decay_rate every decay_steps
    (torch `StepLR`, Keras `ExponentialDecay(staircase=True)`)."""

    name = "step"
    doc = "staircase: lr *= decay_rate every decay_steps"
    formula = "α0·decay_rate^⌊t/decay_steps⌋"
    PARAMS = {"decay_rate": DECAY_RATE, "decay_steps": DECAY_STEPS}
    decay_rate: float
    decay_steps: int

    def _factor(self, t: int) -> float:
        return float(self.decay_rate ** (t // self.decay_steps))
