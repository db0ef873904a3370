"""Batched SGD and AdamW against torch.optim, step by step, each trial with its own settings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from objectives.batched_optim import batched_optimizer

SGD = [
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"optimizer": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"optimizer": "sgd", "momentum": 0.5, "nesterov": False, "weight_decay": 0.1},
]
ADAMW = [
    {"optimizer": "adamw", "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-2},
    {"optimizer": "adamw", "beta1": 0.5, "beta2": 0.9, "weight_decay": 0.0},
]


def torch_optimizer(
    setting: dict[str, Any], params: list[torch.Tensor], lr: float
) -> torch.optim.Optimizer:
    if setting["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=setting["momentum"],
            nesterov=setting["nesterov"],
            weight_decay=setting["weight_decay"],
            foreach=False,
        )
    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=(setting["beta1"], setting["beta2"]),
        weight_decay=setting["weight_decay"],
        foreach=False,
    )


@pytest.mark.parametrize("settings", [SGD, ADAMW, SGD + ADAMW], ids=["sgd", "adamw", "mixed"])
def test_batched_update_matches_torch_optim_at_every_step(settings: list[dict[str, Any]]) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = {"w": (5, 3), "b": (5,)}
    k = len(settings)
    stacked = {n: torch.randn(k, *s, generator=gen) for n, s in shapes.items()}
    solo = [{n: torch.nn.Parameter(stacked[n][i].clone()) for n in shapes} for i in range(k)]
    optimizers = [
        torch_optimizer(s, list(p.values()), lr=0.1) for s, p in zip(settings, solo, strict=True)
    ]
    batched = batched_optimizer(settings)
    for step in range(25):
        lrs = [0.1 / (1 + step + i) for i in range(k)]  # a schedule per trial
        grads = {n: torch.randn(k, *s, generator=gen) for n, s in shapes.items()}
        batched.step(stacked, grads, lrs)
        for i, opt in enumerate(optimizers):
            opt.param_groups[0]["lr"] = lrs[i]
            for n in shapes:
                solo[i][n].grad = grads[n][i].clone()
            opt.step()
        for i in range(k):
            for n in shapes:
                # Equal up to float32 rounding (torch fuses some multiply-adds we split).
                torch.testing.assert_close(
                    stacked[n][i],
                    solo[i][n].detach(),
                    rtol=1e-6,
                    atol=1e-7,
                    msg=f"{settings[i]} {n} step {step}",
                )


def test_state_round_trips_through_torch_optim_format() -> None:
    settings = SGD + ADAMW
    k = len(settings)
    gen = torch.Generator().manual_seed(1)
    params = {"w": torch.randn(k, 4, generator=gen)}
    first = batched_optimizer(settings)
    for _ in range(3):
        first.step(params, {"w": torch.randn(k, 4, generator=gen)}, [0.01] * k)
    states = []
    for i in range(k):
        p = torch.nn.Parameter(params["w"][i].clone())
        opt = torch_optimizer(settings[i], [p], lr=0.01)
        for entry in first.to_torch_state(i, ["w"]).values():
            opt.state[p] = entry
        states.append(opt.state_dict())
    second = batched_optimizer(settings)
    second.load_torch_states(states, ["w"])
    a, b = params["w"].clone(), params["w"].clone()
    grad = {"w": torch.randn(k, 4, generator=gen)}
    first.step({"w": a}, grad, [0.01] * k)
    second.step({"w": b}, grad, [0.01] * k)
    assert torch.equal(a, b)
