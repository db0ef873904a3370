"""Built-in tasks learn, and the Run API behaves as documented."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

import objectives
from objectives.run import MAX_STEP_POINTS, Run

PARAMS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 0.01,
    "batch_size": 64,
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "schedule": "cosine",
    "cosine.warmup_steps": 10,
}


def make_run(params: dict[str, Any], epochs: int = 3, **kwargs: Any) -> Run:
    trial = optuna.create_study(direction="maximize").ask()
    return Run(trial, params, seed=0, epochs=epochs, **kwargs)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_builtin_task_learns_the_digits(name: str) -> None:
    reported: list[Any] = []
    run = make_run(PARAMS, curves=lambda steps, epochs: reported.extend(epochs))
    accuracy = objectives.resolve(name)(run)
    assert accuracy > 0.85
    assert [p["epoch"] for p in reported] == [1, 2, 3]
    assert reported[-1]["value"] == accuracy and reported[-1]["val_loss"] > 0


def test_schedule_decays_over_the_actual_run_after_warmup() -> None:
    sched = make_run(PARAMS).schedule(total_steps=230)
    assert sched.params["total_steps"] == 220 and sched.params["warmup_steps"] == 10
    assert sched.lr_at(230) == 0.0 and sched.lr_at(229) > 0.0


def test_plateau_mode_follows_the_study_direction() -> None:
    params = {**PARAMS, "schedule": "plateau"}
    assert make_run(params).schedule(total_steps=10).params["mode"] == "max"
    run = make_run(params, direction="minimize")
    assert run.schedule(total_steps=10).params["mode"] == "min"


def test_sgd_optimizer_takes_momentum_and_nesterov() -> None:
    import torch

    params = {
        **PARAMS,
        "optimizer": "sgd",
        "momentum": 0.8,
        "nesterov": True,
        "weight_decay": 1e-4,
    }
    opt = make_run(params).optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"] is True
    assert opt.defaults["weight_decay"] == 1e-4


def test_step_curve_stays_bounded_without_a_known_run_length() -> None:
    stored: list[dict[str, Any]] = []
    run = make_run(PARAMS, curves=lambda steps, epochs: stored.extend(steps))
    for step in range(20_000):
        if run.wants_step(step):
            run.log_step(step, lr=0.1, loss=1.0)
    run.flush()
    kept = run._steps
    assert MAX_STEP_POINTS // 2 <= len(kept) <= 2 * MAX_STEP_POINTS
    strides = {b["step"] - a["step"] for a, b in zip(kept, kept[1:], strict=False)}
    assert len(strides) == 1  # evenly thinned


def test_report_of_a_non_finite_value_is_divergence() -> None:
    with pytest.raises(objectives.Diverged, match="validation metric is nan at epoch 2"):
        make_run(PARAMS).report(float("nan"), 2)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "neither a built-in task"),
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
        ("objectives:nothing_here", "'objectives' has no function 'nothing_here'"),
    ],
)
def test_resolve_names_what_is_missing(name: str, message: str) -> None:
    with pytest.raises(objectives.ObjectiveNotFound, match=message):
        objectives.resolve(name)
