"""The built-in training loop: mini-batch training on resident tensors, one report per
epoch, a checkpoint per epoch, divergence detection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from objectives.data import Split
from objectives.run import Diverged, Run


def train_classifier(run: Run, model: nn.Module, data: Split) -> float:
    """Train ``model`` on ``data`` with the trial's optimizer and schedule.

    Reports validation accuracy after every epoch and returns the last one. Resumes from
    the checkpoint an earlier attempt of the same parameters left, if any.
    """
    model = model.to(run.device)
    optimizer = run.optimizer(model.parameters())
    batch = int(run.params["batch_size"])
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / batch)
    scheduler = run.scheduler(optimizer, total_steps=run.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(run.seed)

    first_epoch = 1
    saved = run.load_checkpoint()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        shuffle.set_state(saved["shuffle"])
        first_epoch = saved["epoch"] + 1

    accuracy = math.nan
    for epoch in range(first_epoch, run.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle).to(run.device)
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i
            idx = order[i * batch : (i + 1) * batch]
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise Diverged(f"train loss is {loss_value} at epoch {epoch}, step {step}")
            loss.backward()  # type: ignore[no-untyped-call]
            if run.wants_step(step):
                norm = torch.nn.utils.get_total_norm(
                    [p.grad for p in model.parameters() if p.grad is not None]
                )
                run.log_step(step, lr=lr, loss=loss_value, grad_norm=float(norm))
            optimizer.step()
            scheduler.step()

        accuracy, val_loss = evaluate(model, data)
        if scheduler.schedule.metric_driven:
            scheduler.step(accuracy if run.direction == "maximize" else val_loss)
        run.report(accuracy, epoch, val_loss=val_loss)  # first: a pruned trial needs no save
        run.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "shuffle": shuffle.get_state(),
                "epoch": epoch,
            }
        )
    return accuracy


@torch.no_grad()
def evaluate(model: nn.Module, data: Split) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on the validation set."""
    model.eval()
    logits = model(data.x_val)
    loss = F.cross_entropy(logits, data.y_val).item()
    if not math.isfinite(loss):
        raise Diverged(f"validation loss is {loss}")
    accuracy = (logits.argmax(dim=1) == data.y_val).float().mean().item()
    return accuracy, loss
