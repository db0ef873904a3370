"""A user objective: your own model and data, trained with the trial's optimizer and schedule.

Run it with `sweeps run examples/sine.yaml` from the repository root (the current
directory is importable, so the config names it `examples.sine_objective:objective`).
The function runs unchanged in one process, in many workers, and after a resume.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from objectives import Run

STEPS_PER_EPOCH = 50


def make_data(seed: int) -> tuple[torch.Tensor, ...]:
    """Noisy samples of sin(3x) on [-π, π], generated, never downloaded."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1200, 1, generator=gen) * 2 * math.pi - math.pi
    y = torch.sin(3 * x) + 0.05 * torch.randn(x.shape, generator=gen)
    return x[:1000], y[:1000], x[1000:], y[1000:]


def objective(run: Run) -> float:
    x_train, y_train, x_val, y_val = make_data(seed=0)  # the same data for every trial
    torch.manual_seed(run.seed)  # the trial's own initialisation
    width = int(run.args.get("width", 64))
    model = nn.Sequential(
        nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
    )
    optimizer = run.optimizer(model.parameters())
    scheduler = run.scheduler(optimizer, total_steps=run.epochs * STEPS_PER_EPOCH)
    batch = int(run.params["batch_size"])
    gen = torch.Generator().manual_seed(run.seed)

    first_epoch = 1
    saved = run.load_checkpoint()  # an earlier attempt of these parameters, if any
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        gen.set_state(saved["rng"])
        first_epoch = saved["epoch"] + 1

    val_loss = math.inf
    for epoch in range(first_epoch, run.epochs + 1):
        for i in range(STEPS_PER_EPOCH):
            idx = torch.randint(0, len(x_train), (batch,), generator=gen)
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x_train[idx]), y_train[idx])
            loss.backward()
            run.log_step(
                (epoch - 1) * STEPS_PER_EPOCH + i,
                lr=optimizer.param_groups[0]["lr"],
                loss=loss.item(),
            )
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            val_loss = nn.functional.mse_loss(model(x_val), y_val).item()
        run.report(val_loss, epoch)  # NaN/Inf ends the trial as diverged; may prune
        run.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": gen.get_state(),
                "epoch": epoch,
            }
        )
    return val_loss
