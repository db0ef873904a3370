"""grad_norm's invariants: α0 until the first window is full, scale invariance, finite with
zero/NaN gradients, clamped by min_ratio/max_ratio, and it reads the optimizer's gradients."""

from __future__ import annotations

import math

import pytest
import torch

import schedules

LR = 0.1


def run(norms: list[float], scale: float = 1.0, **params: object) -> list[float]:
    """Drive an attached grad_norm with gradients of the given global norms (times scale)."""
    weight = torch.nn.Parameter(torch.zeros(3))
    bias = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [weight]}, {"params": [bias]}], lr=LR)
    sched = schedules.build("grad_norm", lr=LR, **params).attach(opt)
    lrs = []
    for norm in norms:
        lrs.append(opt.param_groups[0]["lr"])
        # Split the norm across two groups: the global norm is what counts.
        weight.grad = torch.tensor([0.6, 0.0, 0.0]) * norm * scale
        bias.grad = torch.tensor([0.8]) * norm * scale
        opt.step()
        sched.step()
    return lrs


def test_lr_is_alpha0_until_the_first_window_is_full() -> None:
    lrs = run([5.0, 4.0, 3.0, 1.0, 1.0], window=3)
    assert lrs[:4] == [LR] * 4  # steps 0-2 fill the window; step 3 still sees ratio 1
    assert lrs[4] == pytest.approx(LR * ((4.0 + 3.0 + 1.0) / 3) / ((5.0 + 4.0 + 3.0) / 3))


def test_ratio_of_recent_to_initial_mean_norm() -> None:
    norms = [4.0, 4.0, 2.0, 2.0, 1.0, 1.0]
    lrs = run(norms, window=2)
    expected = [LR, LR, LR, LR * 3 / 4, LR * 2 / 4, LR * 1.5 / 4]
    assert lrs == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("scale", [1e-6, 3.0, 1e6])
def test_invariant_to_rescaling_every_gradient(scale: float) -> None:
    norms = [abs(math.sin(i)) + 0.1 for i in range(200)]
    expected = run(norms, 1.0, window=10)
    assert run(norms, scale, window=10) == pytest.approx(expected, rel=1e-6)  # float32 grads


def test_capped_at_max_ratio_and_floored_at_min_ratio() -> None:
    growing = run([1.0] * 5 + [100.0] * 20, window=5)
    assert max(growing) == LR  # max_ratio defaults to 1: never above α0
    shrinking = run([1.0] * 5 + [1e-9] * 20, window=5, min_ratio=0.2)
    assert min(shrinking) == pytest.approx(0.2 * LR)
    lifted = run([1.0] * 5 + [100.0] * 20, window=5, max_ratio=2.0)
    assert max(lifted) == pytest.approx(2.0 * LR)


@pytest.mark.parametrize("bad", [0.0, math.nan, math.inf])
def test_finite_with_zero_or_nonfinite_gradients(bad: float) -> None:
    norms = [bad, 1.0, bad, 2.0, 1.0, bad, bad, 0.5] * 10
    lrs = run(norms, window=3)
    assert all(math.isfinite(lr) and 0.0 <= lr <= LR for lr in lrs)


def test_all_zero_gradients_keep_alpha0() -> None:
    assert run([0.0] * 30, window=4) == [LR] * 30


def test_missing_gradients_are_skipped() -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=LR)
    sched = schedules.build("grad_norm", lr=LR, window=2).attach(opt)
    for _ in range(5):
        opt.step()
        sched.step()  # no backward: no gradient to read
    assert sched.state["first"] == [] and opt.param_groups[0]["lr"] == LR


def test_warmup_then_norms_counted_after_warmup_only() -> None:
    lrs = run([100.0] * 4 + [2.0, 2.0, 1.0, 1.0, 1.0], window=2, warmup_steps=4)
    assert lrs[:4] == pytest.approx([0.0, LR / 4, LR / 2, 3 * LR / 4])
    assert lrs[4:7] == [LR, LR, LR]
    assert lrs[7] == pytest.approx(LR * 1.5 / 2.0)
