"""The registry of schedule families and the one way to build them by name."""

from __future__ import annotations

from typing import Any

from schedules._base import Schedule, ScheduleError
from schedules.families.constant import Constant
from schedules.families.cosine import Cosine
from schedules.families.exponential import Exponential
from schedules.families.grad_norm import GradNorm
from schedules.families.inverse_power import InversePower
from schedules.families.linear import Linear
from schedules.families.onecycle import OneCycle
from schedules.families.plateau import Plateau
from schedules.families.polynomial import Polynomial
from schedules.families.step import Step
from schedules.families.wsd import WarmupStableDecay

SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (
        Constant,
        Polynomial,
        InversePower,
        GradNorm,
        Step,
        Exponential,
        Cosine,
        Linear,
        WarmupStableDecay,
        OneCycle,
        Plateau,
    )
}


def build(name: str, **params: Any) -> Schedule:
    """Build the schedule family ``name`` with ``params``.

    Raises:
        ScheduleError: unknown family, or a parameter missing or out of its allowed range.
    """
    try:
        cls = SCHEDULES[name]
    except (KeyError, TypeError):
        raise ScheduleError(
            f"schedule: unknown family {name!r}; known: {', '.join(SCHEDULES)}"
        ) from None
    return cls(**params)
