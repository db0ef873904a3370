"""Every error path: unknown families and parameters, missing, mistyped and out-of-range
values, cross-parameter checks. Each message names the parameter and what is allowed."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import schedules
from schedules import Param

# A valid parameter set per family, the base each error case alters one value of.
VALID: dict[str, dict[str, Any]] = {
    "constant": {"lr": 0.1},
    "polynomial": {"lr": 0.1, "total_steps": 100},
    "inverse_power": {"lr": 0.1, "total_steps": 100},
    "grad_norm": {"lr": 0.1},
    "step": {"lr": 0.1, "decay_steps": 10},
    "exponential": {"lr": 0.1, "decay_steps": 10},
    "cosine": {"lr": 0.1, "total_steps": 100},
    "linear": {"lr": 0.1, "total_steps": 100},
    "wsd": {"lr": 0.1, "total_steps": 100},
    "onecycle": {"lr": 0.1, "total_steps": 100},
    "plateau": {"lr": 0.1},
}


def test_every_family_has_a_valid_example() -> None:
    assert set(VALID) == set(schedules.SCHEDULES)
    for name, params in VALID.items():
        assert schedules.build(name, **params).name == name


def outside(param: Param) -> list[Any]:
    """Values just outside ``param``'s allowed set, plus wrong types."""
    if param.kind is str:
        return ["nope", 1]
    bad: list[Any] = [True, "1", math.nan, math.inf]
    if param.low is not None:
        bad.append(param.low if param.low_open else param.low - 1)
    if param.high is not None:
        bad.append(param.high if param.high_open else param.high + 1)
    if param.kind is int:
        bad.append(1.5)
    return bad


CASES = [
    (name, key, value)
    for name, cls in schedules.SCHEDULES.items()
    for key, param in cls.params_spec().items()
    for value in outside(param)
]


@pytest.mark.parametrize(
    ("name", "key", "value"), CASES, ids=[f"{n}.{k}={v!r}" for n, k, v in CASES]
)
def test_out_of_range_value_names_the_parameter_and_the_allowed_range(
    name: str, key: str, value: Any
) -> None:
    allowed = schedules.SCHEDULES[name].params_spec()[key].allowed()
    with pytest.raises(schedules.ScheduleError) as info:
        schedules.build(name, **{**VALID[name], key: value})
    assert str(info.value).startswith(f"{name}.{key}: must be {allowed}, got ")


def test_error_is_a_value_error() -> None:
    assert issubclass(schedules.ScheduleError, ValueError)


@pytest.mark.parametrize("name", ["cosin", "", None, "Cosine"])
def test_unknown_family_lists_the_known_ones(name: Any) -> None:
    with pytest.raises(
        schedules.ScheduleError,
        match=r"^schedule: unknown family .*; known: "
        r"constant, polynomial, .*plateau$",
    ):
        schedules.build(name, lr=0.1)


@pytest.mark.parametrize("name", list(VALID))
def test_unknown_parameter_lists_the_allowed_ones(name: str) -> None:
    with pytest.raises(
        schedules.ScheduleError,
        match=rf"^{name}\.gamma: unknown parameter; "
        r"allowed: lr, warmup_steps",
    ):
        schedules.build(name, **VALID[name], gamma=0.5)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        (n, k)
        for n, cls in schedules.SCHEDULES.items()
        for k, p in cls.params_spec().items()
        if p.required
    ],
)
def test_missing_required_parameter(name: str, key: str) -> None:
    params = {k: v for k, v in VALID[name].items() if k != key}
    with pytest.raises(schedules.ScheduleError, match=rf"^{name}\.{key}: required \("):
        schedules.build(name, **params)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("polynomial", {"total_steps": 10, "min_lr": 0.2}, r"polynomial\.min_lr: must be .*lr"),
        ("cosine", {"total_steps": 10, "min_lr": 0.2}, r"cosine\.min_lr: must be"),
        ("linear", {"total_steps": 10, "min_lr": 0.2}, r"linear\.min_lr: must be"),
        ("wsd", {"total_steps": 10, "min_lr": 0.2}, r"wsd\.min_lr: must be"),
        ("plateau", {"min_lr": 0.2}, r"plateau\.min_lr: must be"),
        ("grad_norm", {"min_ratio": 0.5, "max_ratio": 0.4}, r"grad_norm\.min_ratio: must be <="),
        ("inverse_power", {}, r"inverse_power\.timescale: required when total_steps"),
        ("onecycle", {"total_steps": 3, "pct_start": 0.3}, r"onecycle\.pct_start: "),
    ],
)
def test_cross_parameter_checks(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(schedules.ScheduleError, match=message):
        schedules.build(name, lr=0.1, **params)


def test_negative_step_is_refused() -> None:
    with pytest.raises(schedules.ScheduleError, match=r"cosine: step t must be >= 0, got -1"):
        schedules.build("cosine", lr=0.1, total_steps=10).lr_at(-1)


@pytest.mark.parametrize("name", ["grad_norm", "plateau"])
def test_lr_at_of_an_adaptive_family_points_to_attach(name: str) -> None:
    with pytest.raises(schedules.ScheduleError, match=rf"{name}: adaptive .*attach"):
        schedules.build(name, lr=0.1).lr_at(3)


def test_a_metric_for_a_family_that_takes_none_is_refused() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = schedules.build("cosine", lr=0.1, total_steps=10).attach(opt)
    with pytest.raises(schedules.ScheduleError, match="cosine: takes no metric"):
        sched.step(0.5)


def test_integral_floats_are_accepted_for_integers() -> None:
    sched = schedules.build("step", lr=0.1, decay_steps=10.0)
    assert sched.params["decay_steps"] == 10 and isinstance(sched.params["decay_steps"], int)


def test_repr_rebuilds_the_same_schedule() -> None:
    sched = schedules.build("inverse_power", lr=0.1, power=0.5, total_steps=100)
    assert eval(repr(sched), {"build": schedules.build}) == sched
