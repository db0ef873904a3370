"""Property tests: bounds and monotonicity of every closed form over random parameters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import schedules

lrs = st.floats(1e-6, 10.0)
totals = st.integers(1, 5000)
warmups = st.integers(0, 500)
fractions = st.floats(0.0, 1.0)


@st.composite
def decaying(draw: st.DrawFn) -> schedules.Schedule:
    """A closed-form family that never increases after warmup."""
    lr, total, warm = draw(lrs), draw(totals), draw(warmups)
    min_lr = lr * draw(fractions)
    options: dict[str, dict[str, Any]] = {
        "constant": {},
        "polynomial": {"total_steps": total, "power": draw(st.floats(0.01, 10)), "min_lr": min_lr},
        "inverse_power": {
            "power": draw(st.floats(0.01, 5)),
            "timescale": draw(st.floats(0.5, 1e5)),
        },
        "step": {"decay_rate": draw(st.floats(0.01, 1.0)), "decay_steps": draw(totals)},
        "exponential": {"decay_rate": draw(st.floats(0.01, 1.0)), "decay_steps": draw(totals)},
        "cosine": {"total_steps": total, "min_lr": min_lr},
        "linear": {"total_steps": total, "min_lr": min_lr},
        "wsd": {
            "total_steps": total,
            "min_lr": min_lr,
            "decay_fraction": draw(st.floats(0.01, 1.0)),
            "decay_shape": draw(st.sampled_from(["linear", "cosine", "1-sqrt"])),
        },
    }
    name = draw(st.sampled_from(sorted(options)))
    return schedules.build(name, lr=lr, warmup_steps=warm, **options[name])


@settings(max_examples=300, deadline=None)
@given(sched=decaying(), ts=st.lists(st.integers(0, 20_000), min_size=2, max_size=30))
def test_decaying_families_stay_in_bounds_and_never_increase_after_warmup(
    sched: schedules.Schedule, ts: list[int]
) -> None:
    floor = sched.params.get("min_lr", 0.0)
    ts = sorted(ts)
    values = [sched.lr_at(t) for t in ts]
    for t, value in zip(ts, values, strict=True):
        assert 0.0 <= value <= sched.lr * (1 + 1e-12)
        if t >= sched.warmup_steps:
            assert value >= floor * (1 - 1e-12)
    after = [v for t, v in zip(ts, values, strict=True) if t >= sched.warmup_steps]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(after, after[1:], strict=False))
    during = [v for t, v in zip(ts, values, strict=True) if t < sched.warmup_steps]
    assert all(b >= a for a, b in zip(during, during[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(
    lr=lrs,
    total=st.integers(10, 5000),
    pct=st.floats(0.05, 0.95),
    div=st.floats(1.0, 1e3),
    final_div=st.floats(1.0, 1e5),
)
def test_onecycle_rises_to_alpha0_then_falls(
    lr: float, total: int, pct: float, div: float, final_div: float
) -> None:
    assume(1 < pct * total < total)
    sched = schedules.build(
        "onecycle",
        lr=lr,
        total_steps=total,
        pct_start=pct,
        div_factor=div,
        final_div_factor=final_div,
    )
    values = [sched.lr_at(t) for t in range(total + 5)]
    peak = values.index(max(values))
    assert max(values) <= lr * (1 + 1e-12)
    assert values[0] == pytest.approx(lr / div)
    assert all(
        b >= a * (1 - 1e-12) for a, b in zip(values[:peak], values[1 : peak + 1], strict=True)
    )
    assert all(
        b <= a * (1 + 1e-12) for a, b in zip(values[peak:], values[peak + 1 :], strict=False)
    )
    assert values[-1] == pytest.approx(lr / div / final_div)
