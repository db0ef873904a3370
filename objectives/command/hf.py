"""``{hf_args}``: a trial's schedule as Hugging Face `TrainingArguments` flags.

A script built on HF's `Trainer` can take the sweep's schedule without a line of
`schedules`: ``{hf_args}`` expands to ``--learning_rate``, ``--lr_scheduler_type``,
``--warmup_steps`` and ``--lr_scheduler_kwargs`` (JSON), which make HF's own scheduler give
every optimizer step exactly the lr of ``schedules.for_run(family, lr=lr, total_steps=N,
**params)``, N being the Trainer's number of training steps. Both count N with the warmup in
it and decay over N − warmup_steps, so the run's length is never written down.

| family | ``lr_scheduler_type`` | ``lr_scheduler_kwargs`` |
|---|---|---|
| constant | constant_with_warmup | — |
| linear | linear (min_lr 0); polynomial | ``lr_end`` = min_lr, ``power`` = 1.0 |
| polynomial | polynomial | ``lr_end`` = min_lr, ``power`` |
| cosine | cosine (min_lr 0); cosine_with_min_lr | ``min_lr`` |
| inverse_power | inverse_sqrt (power 0.5, timescale given) | ``timescale`` |
| plateau | reduce_lr_on_plateau (no warmup) | every plateau param, as torch names it |

A decay whose min_lr equals lr is constant, and maps to constant_with_warmup (HF's polynomial
refuses an end lr that is not below the start). Families HF has no scheduler for are refused
(`why_not` says why, before a sweep starts): step, exponential, grad_norm and onecycle; and wsd,
since HF's ``warmup_stable_decay`` takes its decay length in absolute steps, which depend on
the run's length, unknown when the command is expanded.

For ``reduce_lr_on_plateau`` the script must evaluate (``--eval_strategy``): the Trainer
steps the scheduler with ``metric_for_best_model`` (eval loss by default) after each
evaluation, so the plateau's ``mode`` has to suit that metric.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import schedules
from schedules import Schedule, ScheduleError
from schedules.families.plateau import Plateau

_FROM_ENV = "apply the trial's schedule in the script with schedules.from_env instead of {hf_args}"

# Families with no HF scheduler, and why.
_REFUSED: dict[str, str] = {
    "grad_norm": "HF's Trainer has no gradient-norm-driven scheduler",
    "step": "HF's Trainer has no staircase (step) scheduler",
    "exponential": "HF's Trainer has no exponential-decay scheduler",
    "onecycle": "HF's Trainer has no one-cycle scheduler",
    "wsd": (
        "HF's warmup_stable_decay takes its decay length in absolute steps (num_decay_steps), "
        "which depend on the run's length, unknown when {hf_args} is expanded"
    ),
}


class HFScheduleError(ValueError):
    """A schedule (family, or value of a parameter) HF's schedulers cannot reproduce exactly.

    The message is one line naming the family, why, and what to do instead.
    """


Scheduler = tuple[str, dict[str, Any]]  # lr_scheduler_type, lr_scheduler_kwargs


def _constant(s: Schedule) -> Scheduler:
    return "constant_with_warmup", {}


def _polynomial(s: Schedule) -> Scheduler:
    if s.params["min_lr"] == s.lr:
        return _constant(s)
    # lr_end always written: HF's own default is 1e-7, not lr-sweeps' 0.
    # linear: polynomial with power fixed at 1, not a param.
    power = float(s.params.get("power", 1.0))
    return "polynomial", {"lr_end": s.params["min_lr"], "power": power}


def _linear(s: Schedule) -> Scheduler:
    if s.params["min_lr"] == 0.0:
        return "linear", {}
    return _polynomial(s)


def _cosine(s: Schedule) -> Scheduler:
    if s.params["min_lr"] == 0.0:
        return "cosine", {}
    return "cosine_with_min_lr", {"min_lr": s.params["min_lr"]}


def _inverse_power(s: Schedule) -> Scheduler:
    if s.params["power"] != 0.5:
        raise HFScheduleError(f"{_INVERSE_POWER_FIX}, got {s.params['power']!r}")
    if s.params["timescale"] is None:
        raise HFScheduleError(_TIMESCALE_FIX)
    return "inverse_sqrt", {"timescale": s.params["timescale"]}


def _plateau(s: Schedule) -> Scheduler:
    if s.warmup_steps != 0:
        raise HFScheduleError(f"{_PLATEAU_FIX}, got warmup_steps={s.warmup_steps}")
    p = s.params
    return "reduce_lr_on_plateau", {
        "mode": p["mode"],
        "factor": p["factor"],
        "patience": p["patience"],
        "threshold": p["threshold"],
        "threshold_mode": "rel",
        "cooldown": p["cooldown"],
        "min_lr": p["min_lr"],
        "eps": Plateau.EPS,
    }


_MAPPED: dict[str, Callable[[Schedule], Scheduler]] = {
    "constant": _constant,
    "linear": _linear,
    "polynomial": _polynomial,
    "cosine": _cosine,
    "inverse_power": _inverse_power,
    "plateau": _plateau,
}
HF_FAMILIES: tuple[str, ...] = tuple(_MAPPED)
"""The families ``{hf_args}`` can express (given `why_not`'s conditions on their params)."""

_INVERSE_POWER_FIX = (
    "inverse_power: HF's inverse_sqrt fixes power at 0.5; "
    "fix space.schedule.inverse_power.power to 0.5"
)
_TIMESCALE_FIX = (
    "inverse_power: HF's inverse_sqrt defaults its timescale to the warmup, not to the run's "
    "length; set space.schedule.inverse_power.timescale"
)
_PLATEAU_FIX = (
    "plateau: HF's reduce_lr_on_plateau has no warmup; "
    "fix space.schedule.plateau.warmup_steps to 0 (or leave it out)"
)


def hf_args(family: str, *, lr: float, params: Mapping[str, Any]) -> list[str]:
    """The TrainingArguments flags (each one item ``--name=value``) for this trial's schedule.

    Args:
        family: the schedule family.
        lr: α0, the peak learning rate.
        params: the family's parameters without its prefix (``warmup_steps``, ``min_lr``,
            ...); those not given take the family's defaults. A run length
            (``total_steps``) is ignored: HF's Trainer supplies its own.

    Returns:
        ``--learning_rate``, ``--lr_scheduler_type``, ``--warmup_steps`` and
        ``--lr_scheduler_kwargs`` (a JSON object, ``{}`` when there are none); floats are
        written exactly (``repr``).

    Raises:
        HFScheduleError: HF has no scheduler that gives this family with these params.
        ScheduleError: an unknown family or a bad parameter.
    """
    if family in _REFUSED:
        raise HFScheduleError(_refusal(family))
    if family not in _MAPPED:
        raise ScheduleError(
            f"{family}: unknown schedule family; known: {', '.join(schedules.SCHEDULES)}"
        )
    given = {k: v for k, v in params.items() if k != "total_steps"}
    # The run length only validates here; HF's scheduler gets the Trainer's.
    schedule = schedules.for_run(family, lr=lr, total_steps=1, **given)
    kind, kwargs = _MAPPED[family](schedule)
    return [
        f"--learning_rate={schedule.lr!r}",
        f"--lr_scheduler_type={kind}",
        f"--warmup_steps={schedule.warmup_steps}",
        f"--lr_scheduler_kwargs={json.dumps(kwargs, separators=(',', ':'))}",
    ]


def why_not(family: str, values: Mapping[str, Sequence[Any] | None]) -> str | None:
    """Why ``{hf_args}`` cannot express family ``family`` of a search space, or None.

    Args:
        family: the schedule family.
        values: the family's params written in the config space, each mapped to the list of
            values it can take, or to None for a numeric range. A param not written takes
            the family's default.

    Returns:
        One line naming the family, why, and what to change; None when every trial of
        this family expands.
    """
    if family in _REFUSED:
        return _refusal(family)
    if family not in _MAPPED:
        return f"{family}: unknown schedule family; known: {', '.join(schedules.SCHEDULES)}"
    if family == "inverse_power":
        if not _only(values, "power", lambda v: v == 0.5, default=1.0, any_number=False):
            return _INVERSE_POWER_FIX
        # A range of timescales is fine: any number is; only the default (None) is not.
        if not _only(values, "timescale", lambda v: v is not None, default=None, any_number=True):
            return _TIMESCALE_FIX
    if family == "plateau" and not _only(
        values, "warmup_steps", lambda v: v == 0, default=0, any_number=False
    ):
        return _PLATEAU_FIX
    return None


def _only(
    values: Mapping[str, Sequence[Any] | None],
    name: str,
    ok: Callable[[Any], bool],
    *,
    default: Any,
    any_number: bool,
) -> bool:
    """Whether every value param ``name`` can take passes ``ok``: its ``default`` when the
    space leaves it out, ``any_number`` (whether every number would) for a range."""
    if name not in values:
        return ok(default)
    taken = values[name]
    if taken is None:
        return any_number
    return all(ok(v) for v in taken)


def _refusal(family: str) -> str:
    return f"{family}: {_REFUSED[family]}; drop space.schedule.{family}, or {_FROM_ENV}"
