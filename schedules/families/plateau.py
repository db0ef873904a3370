from __future__ import annotations

import math
from typing import Any

from schedules._base import Param, Schedule


class Plateau(Schedule):
    """Multiply the lr by `factor` when the metric has not improved for `patience`
    evaluations (torch `ReduceLROnPlateau`, relative threshold).

    Feed the metric with ``scheduler.step(metric)`` (or ``scheduler.observe(metric)``) after
    each evaluation; ``scheduler.step()`` per optimizer step drives the warmup.
    """

    name = "plateau"
    doc = "reduce by factor when the metric stalls for patience evaluations"
    formula = "α0·factor^(number of plateaus), floored at min_lr"
    closed_form = False
    metric_driven = True
    PARAMS = {
        "factor": Param(
            float,
            "multiplier on a plateau",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
            default=0.1,
        ),
        "patience": Param(
            int, "evaluations without improvement before reducing", low=0, default=10
        ),
        "mode": Param(
            str, "whether the metric should go down or up", choices=("min", "max"), default="min"
        ),
        "threshold": Param(float, "relative improvement that counts", low=0.0, default=1e-4),
        "cooldown": Param(int, "evaluations to wait after a reduction", low=0, default=0),
        "min_lr": Param(float, "lowest lr", low=0.0, default=0.0),
    }
    factor: float
    patience: int
    mode: str
    threshold: float
    cooldown: int
    min_lr: float
    # torch's ReduceLROnPlateau ignores reductions smaller than this.
    EPS = 1e-8

    def _check(self) -> None:
        self._check_min_lr()

    def initial_state(self) -> dict[str, Any]:
        best = math.inf if self.mode == "min" else -math.inf
        return {"lr": self.lr, "best": best, "bad": 0, "cooldown": 0}

    def _improved(self, metric: float, best: float) -> bool:
        if self.mode == "min":
            return metric < best * (1.0 - self.threshold)
        return metric > best * (1.0 + self.threshold)

    def observe_metric(self, state: dict[str, Any], metric: float) -> None:
        if self._improved(metric, state["best"]):
            state["best"] = metric
            state["bad"] = 0
        else:
            state["bad"] += 1
        if state["cooldown"] > 0:
            state["cooldown"] -= 1
            state["bad"] = 0
        if state["bad"] > self.patience:
            reduced = max(state["lr"] * self.factor, self.min_lr)
            if state["lr"] - reduced > self.EPS:
                state["lr"] = reduced
            state["cooldown"] = self.cooldown
            state["bad"] = 0

    def state_factor(self, state: dict[str, Any], t: int) -> float:
        return float(state["lr"] / self.lr)
