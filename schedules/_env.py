"""A schedule handed to a training script through the environment, and the one rule that
fits a family to a run's length.

A sweep's command trial carries its sampled schedule in ``SWEEPS_SCHEDULE``; the script
applies it exactly with one line:

    scheduler = schedules.from_env(optimizer, total_steps=max_iters)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from schedules._base import Schedule, ScheduleError
from schedules._registry import SCHEDULES, build

if TYPE_CHECKING:
    import torch

    from schedules._torch import ScheduleLR

ENV = "SWEEPS_SCHEDULE"


def for_run(name: str, *, lr: float, total_steps: int, **params: Any) -> Schedule:
    """Family ``name`` over a run of ``total_steps`` optimizer steps, warmup included:
    a family that decays over a run length gets ``total_steps − warmup_steps``.

    Raises:
        ScheduleError: unknown family or bad parameter.
    """
    cls = SCHEDULES.get(name)
    if cls is not None and "total_steps" in cls.PARAMS:
        params["total_steps"] = max(1, total_steps - int(params.get("warmup_steps", 0)))
    return build(name, lr=lr, **params)


def to_env(name: str, *, lr: float, params: Mapping[str, Any]) -> str:
    """The value of `ENV` that makes `from_env` build family ``name`` with ``params``."""
    return json.dumps({"schedule": name, "lr": lr, "params": dict(params)})


def from_env(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    default: Schedule | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ScheduleLR:
    """The schedule a sweep chose for this run (`ENV`), over ``total_steps`` optimizer steps
    and driving ``optimizer``: call ``.step()`` after each ``optimizer.step()`` (and
    ``.step(val_loss)`` for ``plateau``). ``default`` is used outside a sweep.

    Raises:
        ScheduleError: `ENV` is not set and there is no ``default``, or it is malformed.
    """
    raw = environ.get(ENV)
    if raw is None:
        if default is None:
            raise ScheduleError(
                f"{ENV}: not set; run under 'sweeps' (a command trial sets it) or pass default="
            )
        return default.attach(optimizer)
    try:
        spec = json.loads(raw)
        name, lr, params = spec["schedule"], float(spec["lr"]), dict(spec["params"])
    except (ValueError, KeyError, TypeError) as e:
        raise ScheduleError(f"{ENV}: not a schedule written by to_env: {e}") from None
    return for_run(name, lr=lr, total_steps=total_steps, **params).attach(optimizer)
