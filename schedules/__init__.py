"""Learning-rate schedules for PyTorch, correct to the digit.

    import schedules
    sched = schedules.build("cosine", lr=0.1, total_steps=1000, warmup_steps=50)
    sched.lr_at(500)                       # closed form, no state
    scheduler = sched.attach(optimizer)    # a torch LRScheduler; call .step() per step

Only torch is needed; the rest of lr-sweeps builds on this package.
"""

from schedules._base import Param, Schedule, ScheduleError
from schedules._registry import SCHEDULES, build
from schedules._torch import ScheduleLR

__all__ = ["SCHEDULES", "Param", "Schedule", "ScheduleError", "ScheduleLR", "build"]
