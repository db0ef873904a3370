from __future__ import annotations

import math

from schedules._base import TOTAL_STEPS, Param, Schedule, ScheduleError


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycle(Schedule):
    """Leslie Smith's one-cycle policy, as torch `OneCycleLR` (cosine annealing, two phases):
    rise from α0/div_factor to α0 over the first pct_start of T, then fall to
    α0/(div_factor·final_div_factor). `lr` is the peak; held at the final value after T."""

    name = "onecycle"
    doc = "one-cycle: rise to α0 over pct_start, then anneal far below the start"
    formula = "cos rise α0/div → α0, then cos fall → α0/(div·final_div)"
    PARAMS = {
        "total_steps": TOTAL_STEPS,
        "pct_start": Param(
            float,
            "fraction of the cycle spent rising",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
            default=0.3,
        ),
        "div_factor": Param(float, "α0 / starting lr", low=1.0, default=25.0, log=True),
        "final_div_factor": Param(float, "starting lr / final lr", low=1.0, default=1e4, log=True),
    }
    total_steps: int
    pct_start: float
    div_factor: float
    final_div_factor: float

    def _check(self) -> None:
        # torch's phase boundaries are at pct_start·T − 1 and T − 1; they must be ordered.
        if not 0 < self.pct_start * self.total_steps - 1 < self.total_steps - 1:
            raise ScheduleError(
                f"{self.name}.pct_start: pct_start·total_steps must be in (1, total_steps), "
                f"got {self.pct_start!r} with total_steps={self.total_steps}"
            )

    def _factor(self, t: int) -> float:
        start = 1.0 / self.div_factor
        final = start / self.final_div_factor
        peak_at = self.pct_start * self.total_steps - 1
        end_at = self.total_steps - 1
        if t <= peak_at:
            return _cos_anneal(start, 1.0, t / peak_at)
        return _cos_anneal(1.0, final, min(1.0, (t - peak_at) / (end_at - peak_at)))
