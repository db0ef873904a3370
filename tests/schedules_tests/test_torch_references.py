"""Every closed form against its torch scheduler over 10,000 steps (rtol 1e-6)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tl

import schedules

STEPS = 10_000
LR = 0.1


def torch_lrs(make: Callable[[torch.optim.Optimizer], object], steps: int = STEPS) -> np.ndarray:
    """The lr each optimizer step runs at under a torch scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=LR)
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()  # type: ignore[attr-defined]
    return np.array(lrs)


def ours(name: str, steps: int = STEPS, **params: object) -> np.ndarray:
    sched = schedules.build(name, lr=LR, **params)
    return np.array([sched.lr_at(t) for t in range(steps)])


def attached(name: str, steps: int = STEPS, **params: object) -> np.ndarray:
    return torch_lrs(lambda opt: schedules.build(name, lr=LR, **params).attach(opt), steps)


CASES = {
    "constant": ({}, lambda o: tl.LambdaLR(o, lambda t: 1.0)),
    "polynomial": (
        {"total_steps": 6000, "power": 2.5},
        lambda o: tl.PolynomialLR(o, total_iters=6000, power=2.5),
    ),
    "polynomial-power-half": (
        {"total_steps": 9000, "power": 0.5},
        lambda o: tl.PolynomialLR(o, total_iters=9000, power=0.5),
    ),
    "step": (
        {"decay_rate": 0.7, "decay_steps": 700},
        lambda o: tl.StepLR(o, step_size=700, gamma=0.7),
    ),
    "exponential": (
        {"decay_rate": 0.5, "decay_steps": 1000},
        lambda o: tl.ExponentialLR(o, gamma=0.5 ** (1 / 1000)),
    ),
    "cosine": ({"total_steps": STEPS}, lambda o: tl.CosineAnnealingLR(o, T_max=STEPS)),
    "cosine-min-lr": (
        {"total_steps": STEPS, "min_lr": 1e-3},
        lambda o: tl.CosineAnnealingLR(o, T_max=STEPS, eta_min=1e-3),
    ),
    "linear": (
        {"total_steps": 8000},
        lambda o: tl.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=8000),
    ),
    "linear-min-lr": (
        {"total_steps": 8000, "min_lr": 0.02},
        lambda o: tl.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=8000),
    ),
    "onecycle": (
        {"total_steps": STEPS, "pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
        lambda o: tl.OneCycleLR(
            o,
            max_lr=LR,
            total_steps=STEPS,
            pct_start=0.25,
            div_factor=10.0,
            final_div_factor=100.0,
            cycle_momentum=False,
        ),
    ),
    "onecycle-defaults": (
        {"total_steps": STEPS},
        lambda o: tl.OneCycleLR(o, max_lr=LR, total_steps=STEPS, cycle_momentum=False),
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_closed_form_matches_torch_scheduler(case: str) -> None:
    params, make = CASES[case]
    name = case.split("-")[0]
    expected = torch_lrs(make)
    np.testing.assert_allclose(ours(name, **params), expected, rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(attached(name, **params), expected, rtol=1e-6, atol=1e-15)


def test_polynomial_matches_the_seed_formula_exactly() -> None:
    sched = schedules.build("polynomial", lr=0.1, total_steps=100, power=2.0)
    assert sched.lr_at(50) == 0.025
    assert sched.lr_at(100) == sched.lr_at(500) == 0.0


def hf_wsd_factor(t: int, warmup: int, stable: int, decay: int, shape: str, ratio: float) -> float:
    """transformers.optimization._get_wsd_scheduler_lambda (linear warmup), transcribed."""
    if t < warmup:
        return (t / max(1, warmup)) * (1.0 - ratio) + ratio
    if t < warmup + stable:
        return 1.0
    if t < warmup + stable + decay:
        p = (t - warmup - stable) / max(1, decay)
        value = {
            "linear": 1.0 - p,
            "cosine": 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * p)),
            "1-sqrt": 1.0 - math.sqrt(p),
        }[shape]
        return max(0.0, value * (1.0 - ratio) + ratio)
    return ratio


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_matches_huggingface_wsd_schedule(shape: str) -> None:
    warmup, total_after_warmup, fraction = 500, 9000, 0.2
    decay = int(fraction * total_after_warmup)
    expected = torch_lrs(
        lambda o: tl.LambdaLR(
            o, lambda t: hf_wsd_factor(t, warmup, total_after_warmup - decay, decay, shape, 0.0)
        )
    )
    params = {
        "total_steps": total_after_warmup,
        "decay_fraction": fraction,
        "decay_shape": shape,
        "warmup_steps": warmup,
    }
    np.testing.assert_allclose(ours("wsd", **params), expected, rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(attached("wsd", **params), expected, rtol=1e-6, atol=1e-15)


def test_inverse_power_half_matches_huggingface_inverse_sqrt() -> None:
    warmup, timescale = 400, 1000

    def hf_inverse_sqrt(t: int) -> float:
        """transformers.optimization._get_inverse_sqrt_schedule_lr_lambda, transcribed."""
        if t < warmup:
            return t / max(1, warmup)
        shift = timescale - warmup
        return 1.0 / math.sqrt((t + shift) / timescale)

    expected = torch_lrs(lambda o: tl.LambdaLR(o, hf_inverse_sqrt))
    got = ours("inverse_power", power=0.5, timescale=timescale, warmup_steps=warmup)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-15)


def test_warmup_ramps_linearly_from_zero_then_runs_the_family_shifted() -> None:
    warm = schedules.build("cosine", lr=LR, total_steps=1000, warmup_steps=100)
    plain = schedules.build("cosine", lr=LR, total_steps=1000)
    ramp = [warm.lr_at(t) for t in range(100)]
    np.testing.assert_allclose(ramp, [LR * t / 100 for t in range(100)], rtol=1e-12)
    assert [warm.lr_at(100 + t) for t in range(1200)] == [plain.lr_at(t) for t in range(1200)]


def test_warmup_of_onecycle_ends_at_the_cycles_starting_lr() -> None:
    sched = schedules.build("onecycle", lr=LR, total_steps=1000, warmup_steps=10)
    assert sched.lr_at(5) == pytest.approx(0.5 * LR / 25.0)
    assert sched.lr_at(10) == pytest.approx(LR / 25.0)


@pytest.mark.parametrize(
    "metrics",
    [
        [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7] * 4,
        [float(i % 7) for i in range(60)],
    ],
    ids=["stalls", "sawtooth"],
)
@pytest.mark.parametrize("cooldown", [0, 2])
def test_plateau_matches_reduce_lr_on_plateau(metrics: list[float], cooldown: int) -> None:
    def run(make: Callable[[torch.optim.Optimizer], object]) -> list[float]:
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=LR)
        sched = make(opt)
        lrs = []
        for m in metrics:
            opt.step()
            sched.step(m)  # type: ignore[attr-defined]
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    expected = run(
        lambda o: tl.ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=cooldown, min_lr=0.01)
    )
    got = run(
        lambda o: schedules.build(
            "plateau", lr=LR, factor=0.5, patience=2, cooldown=cooldown, min_lr=0.01
        ).attach(o)
    )
    assert len(set(expected)) > 2, "the sequence must exercise several reductions"
    np.testing.assert_allclose(got, expected, rtol=1e-12)
