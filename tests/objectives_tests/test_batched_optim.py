"""Batched SGD and AdamW against torch.optim, step by step, each trial with its own settings."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from objectives.batched_optim import batched_optimizer, row_from_torch

SGD = [
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"optimizer": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"optimizer": "sgd", "momentum": 0.5, "nesterov": False, "weight_decay": 0.1},
]
ADAMW = [
    {"optimizer": "adamw", "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-2},
    {"optimizer": "adamw", "beta1": 0.5, "beta2": 0.9, "weight_decay": 0.0},
]
SHAPES = {"w": torch.Size((5, 3)), "b": torch.Size((5,))}
P = sum(s.numel() for s in SHAPES.values())


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


def unflat(row: torch.Tensor) -> list[torch.Tensor]:
    pieces = torch.split(row, [s.numel() for s in SHAPES.values()])
    return [p.view(s) for p, s in zip(pieces, SHAPES.values(), strict=True)]


@pytest.mark.parametrize("settings", [SGD, ADAMW, ADAMW + SGD], ids=["sgd", "adamw", "mixed"])
def test_batched_update_matches_torch_optim_at_every_step(settings: list[dict[str, Any]]) -> None:
    gen = torch.Generator().manual_seed(0)
    k = len(settings)
    flat = torch.randn(k, P, generator=gen)
    solo = [[torch.nn.Parameter(t.clone()) for t in unflat(flat[i])] for i in range(k)]
    optimizers = [torch_optimizer(s, p, lr=0.1) for s, p in zip(settings, solo, strict=True)]
    batched = batched_optimizer(settings, flat)
    for step in range(25):
        lrs = [0.1 / (1 + step + i) for i in range(k)]  # a schedule per trial
        grad = torch.randn(k, P, generator=gen)
        batched.step(flat, grad, lrs)
        for i, opt in enumerate(optimizers):
            opt.param_groups[0]["lr"] = lrs[i]
            for param, g in zip(solo[i], unflat(grad[i]), strict=True):
                param.grad = g.clone()
            opt.step()
            # Equal up to float32 rounding (torch fuses some multiply-adds we split).
            for mine, theirs in zip(unflat(flat[i]), solo[i], strict=True):
                torch.testing.assert_close(
                    mine, theirs.detach(), rtol=1e-6, atol=1e-7, msg=f"{settings[i]} step {step}"
                )


def test_state_round_trips_through_torch_optim_format() -> None:
    settings = ADAMW + SGD  # a mixed stack orders its rows by kind
    k = len(settings)
    gen = torch.Generator().manual_seed(1)
    flat = torch.randn(k, P, generator=gen)
    lr = [0.01] * k
    first = batched_optimizer(settings, flat)
    for _ in range(3):
        first.step(flat, torch.randn(k, P, generator=gen), lr)
    states = []
    for i in range(k):
        params = [torch.nn.Parameter(t.clone()) for t in unflat(flat[i])]
        opt = torch_optimizer(settings[i], params, lr=0.01)
        state = first.to_torch_state(i, SHAPES)
        for param, name in zip(params, SHAPES, strict=True):
            if state.get(name):
                opt.state[param] = state[name]
        states.append(opt.state_dict())
    second = batched_optimizer(settings, flat, [row_from_torch(s, list(SHAPES)) for s in states])
    a, b = flat.clone(), flat.clone()
    grad = torch.randn(k, P, generator=gen)
    first.step(a, grad, lr)
    second.step(b, grad, lr)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_a_fresh_trial_joining_a_running_stack_steps_as_torch_optim(kind: str) -> None:
    """A trial joining between epochs gets a zero row of state: its updates are torch's for
    a fresh optimizer, and the rows already there go on unchanged."""
    settings = [SGD[0], SGD[2]] if kind == "sgd" else ADAMW  # the joining one has momentum
    gen = torch.Generator().manual_seed(2)
    flat = torch.randn(2, P, generator=gen)
    running = batched_optimizer(settings[:1], flat[:1])
    for _ in range(3):
        running.step(flat[:1], torch.randn(1, P, generator=gen), [0.05])
    joined = batched_optimizer(settings, flat, [running.row(0), {}])
    solo = [torch.nn.Parameter(t.clone()) for t in unflat(flat[1])]
    fresh = torch_optimizer(settings[1], solo, lr=0.05)
    before = flat[:1].clone()
    for _ in range(3):
        grad = torch.randn(2, P, generator=gen)
        joined.step(flat, grad, [0.05, 0.05])
        running.step(before, grad[:1], [0.05])
        for param, g in zip(solo, unflat(grad[1]), strict=True):
            param.grad = g.clone()
        fresh.step()
    assert torch.equal(flat[:1], before)
    for mine, theirs in zip(unflat(flat[1]), solo, strict=True):
        torch.testing.assert_close(mine, theirs.detach(), rtol=1e-6, atol=1e-7)
