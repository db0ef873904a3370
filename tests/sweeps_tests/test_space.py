"""The conditional search space: only the chosen family's and optimizer's parameters."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from sweeps.space import check_point, parse_space

SPACE: dict[str, Any] = {
    "lr": {"low": 1e-3, "high": 1.0, "log": True},
    "optimizer": ["sgd", "adamw"],
    "momentum": {"low": 0.0, "high": 0.9},
    "batch_size": [32, 64],
    "schedule": {
        "constant": {},
        "step": {"decay_rate": {"low": 0.5, "high": 0.9}, "decay_steps": [10, 100]},
        "cosine": {"warmup_steps": {"low": 0, "high": 100, "step": 10}},
    },
}


def test_only_the_chosen_family_and_optimizer_parameters_are_suggested() -> None:
    space = parse_space(SPACE)
    assert space.errors == []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        params = space.sample(trial)
        family, optimizer = params["schedule"], params["optimizer"]
        seen.add((family, optimizer))
        expected = {"optimizer", "lr", "batch_size", "schedule"}
        expected |= {"momentum"} if optimizer == "sgd" else set()
        expected |= {f"{family}.{k}" for k in SPACE["schedule"][family]}
        assert set(trial.params) == expected
        # Fixed values (weight_decay, nesterov, beta1, beta2 defaults) complete the point.
        assert params["weight_decay"] == 0.0
        assert ("nesterov" in params) == (optimizer == "sgd")
        assert ("beta2" in params) == (optimizer == "adamw")
        if family == "cosine":
            assert params["cosine.warmup_steps"] % 10 == 0
        study.tell(trial, 0.0)
    assert len(seen) == 6


def test_a_single_family_is_fixed_not_searched() -> None:
    space = parse_space({"lr": 0.1, "schedule": {"cosine": {}}})
    trial = optuna.create_study().ask()
    assert space.sample(trial)["schedule"] == "cosine"
    assert trial.params == {}


def test_grid_enumerates_each_family_with_its_own_parameters() -> None:
    space = parse_space(
        {
            "lr": [0.1, 0.01],
            "optimizer": ["sgd", "adamw"],
            "momentum": [0.0, 0.9],
            "schedule": {"constant": {}, "step": {"decay_steps": [10, 20, 30]}},
        }
    )
    # sgd: 2 lr x 2 momentum x (1 + 3); adamw: 2 lr x (1 + 3)
    assert len(space.grid()) == space.grid_size() == 16 + 8
    assert len({tuple(sorted(p.items())) for p in space.grid()}) == 24


def test_grid_size_counts_a_huge_grid_without_building_it() -> None:
    space = parse_space(
        {
            "lr": 0.1,
            "optimizer": "sgd",
            "schedule": {"constant": {}},
            "args": {f"a{i}": list(range(60)) for i in range(4)},
        }
    )
    assert space.grid_size() == 60**4


def test_ranged_lists_the_parameters_a_grid_cannot_enumerate() -> None:
    assert parse_space(SPACE).ranged() == [
        "lr",
        "momentum",
        "schedule.step.decay_rate",
        "schedule.cosine.warmup_steps",
    ]


@pytest.mark.parametrize(
    ("point", "error"),
    [
        ({"schedule": "wsd"}, "schedule: must be one of"),
        ({"step.decay_rate": 0.7}, "step.decay_rate: only for schedule 'step'"),
        ({"optimizer": "adamw", "momentum": 0.5}, "momentum: only for optimizer 'sgd'"),
        ({"lr": 2.0}, "lr: must be in [0.001, 1.0], got 2.0"),
        ({"warmup": 3}, "warmup: not a parameter of this study"),
        ({"batch_size": 48}, "batch_size: must be one of [32, 64], got 48"),
    ],
)
def test_check_point_names_the_offending_parameter(point: dict[str, Any], error: str) -> None:
    assert any(e.startswith(error) for e in check_point(parse_space(SPACE), point)), check_point(
        parse_space(SPACE), point
    )


def test_check_point_accepts_a_valid_partial_point() -> None:
    point = {"schedule": "step", "step.decay_rate": 0.6, "lr": 0.05, "optimizer": "sgd"}
    assert check_point(parse_space(SPACE), point) == []
