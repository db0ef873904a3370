"""A scheduler restored from state_dict() continues exactly where the original was."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

import schedules

# A short run: each family changes its lr within it (the test checks that), and a resume
# that loses or shifts any of the scheduler's state shows in the lrs after the split.
TOTAL = 60
WARMUP = 10
METRIC_EVERY = 5  # steps between the metrics fed to the plateau


def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)


def train(
    model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, steps: range
) -> list[float]:
    """SGD on a fixed regression problem; feeds a metric every `METRIC_EVERY` steps."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=gen)
    y = torch.randn(64, 1, generator=gen)
    lrs = []
    for t in steps:
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x * (1 + t % 3)), y)
        loss.backward()
        opt.step()
        sched.step()
        if t % METRIC_EVERY == METRIC_EVERY - 1 and sched.schedule.name == "plateau":
            sched.step(1.0)  # a stalled metric: the plateau reduces after `patience`
    return lrs


FAMILIES: dict[str, dict[str, Any]] = {
    "constant": {},
    "polynomial": {"total_steps": TOTAL, "power": 2.0},
    "inverse_power": {"power": 0.5, "total_steps": TOTAL},
    "grad_norm": {"window": 4, "min_ratio": 0.1},
    "step": {"decay_rate": 0.5, "decay_steps": 8},
    "exponential": {"decay_rate": 0.5, "decay_steps": 8},
    "cosine": {"total_steps": TOTAL},
    "linear": {"total_steps": TOTAL},
    "wsd": {"total_steps": TOTAL, "decay_fraction": 0.5},
    "onecycle": {"total_steps": TOTAL},
    "plateau": {"patience": 1, "factor": 0.5},
}


def test_every_family_is_covered() -> None:
    assert set(FAMILIES) == set(schedules.SCHEDULES)


@pytest.mark.parametrize("split", [WARMUP // 2, 40], ids=["mid-warmup", "mid-decay"])
@pytest.mark.parametrize("name", FAMILIES)
def test_resumed_scheduler_continues_the_uninterrupted_lr_sequence(name: str, split: int) -> None:
    sched = schedules.build(name, lr=0.05, warmup_steps=WARMUP, **FAMILIES[name])
    model, opt = make_model()
    full = train(model, opt, sched.attach(opt), range(TOTAL))

    model, opt = make_model()
    first = sched.attach(opt)
    head = train(model, opt, first, range(split))
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": first.state_dict()}, buffer
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data only: no pickled classes

    model, opt = make_model()
    resumed = sched.attach(opt)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    resumed.load_state_dict(saved["sched"])
    tail = train(model, opt, resumed, range(split, TOTAL))

    assert head + tail == full
    after_warmup = set(full[WARMUP:])  # the run must exercise the schedule
    assert len(after_warmup) == 1 if name == "constant" else len(after_warmup) > 1


def test_loading_another_schedules_state_is_refused() -> None:
    _, opt = make_model()
    state = schedules.build("cosine", lr=0.1, total_steps=10).attach(opt).state_dict()
    other = schedules.build("cosine", lr=0.1, total_steps=20).attach(opt)
    with pytest.raises(schedules.ScheduleError, match="cosine: checkpoint was made by"):
        other.load_state_dict(state)
