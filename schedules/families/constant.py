from __future__ import annotations

from schedules._base import Schedule


class Constant(Schedule):
    name = "constant"
    doc = "fixed learning rate"
    formula = "α0"

    def _factor(self, t: int) -> float:
        return 1.0
