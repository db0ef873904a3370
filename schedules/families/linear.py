from __future__ import annotations

from schedules._base import MIN_LR, TOTAL_STEPS
from schedules.families.polynomial import Polynomial


class Linear(Polynomial):
    """Linear decay to `min_lr` (zero by default): `polynomial` with β = 1 (torch `LinearLR`)."""

    name = "linear"
    doc = "linear decay to min_lr (zero by default) over total_steps"
    formula = "min_lr + (α0 − min_lr)·(1 − min(t,T)/T)"
    PARAMS = {"total_steps": TOTAL_STEPS, "min_lr": MIN_LR}
    power = 1.0
