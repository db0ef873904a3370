"""Learning-rate schedules for PyTorch, correct to the digit.

    import schedules
    sched = schedules.build("cosine", lr=0.1, total_steps=1000, warmup_steps=50)
    sched.lr_at(500)                       # closed form, no state
    scheduler = sched.attach(optimizer)    # a torch LRScheduler; call .step() per step
    scheduler = schedules.from_env(optimizer, total_steps=1000)   # the one a sweep chose

Only torch is needed; the rest of lr-sweeps builds on this package. torch itself is imported
on first use of a scheduler, so declaring and checking schedules (a config's validation,
`sweeps status`) starts in a fraction of the time.
"""

from typing import TYPE_CHECKING, Any

from schedules._base import Param, Schedule, ScheduleError
from schedules._env import ENV, for_run, from_env, to_env
from schedules._registry import SCHEDULES, build

if TYPE_CHECKING:
    from schedules._torch import ScheduleLR


def __getattr__(name: str) -> Any:
    if name == "ScheduleLR":
        from schedules._torch import ScheduleLR

        return ScheduleLR
    raise AttributeError(f"module 'schedules' has no attribute {name!r}")


__all__ = [
    "ENV",
    "SCHEDULES",
    "Param",
    "Schedule",
    "ScheduleError",
    "ScheduleLR",
    "build",
    "for_run",
    "from_env",
    "to_env",
]
