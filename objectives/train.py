"""The built-in tasks' training loop, for K trials at once (K = 1 is one at a time).

Small models leave a CPU or GPU mostly idle when trained one at a time; K copies stacked
along a leading dimension (`objectives.batched_model`) turn K small matrix products into one
batched product. Each trial keeps everything of its own: initialisation (its seed),
shuffling (its generator), schedule (its `ScheduleLR`, on a one-element stand-in optimizer),
optimizer hyperparameters (`batched_optim`), gradient norm, reports, pruning, divergence and
checkpoints. A trial that is pruned or diverges leaves the stack at once; the stack shrinks
with it.

One loop serves both paths, so a trial's curve in a stack of K equals its curve alone.
Per-epoch checkpoints hold each trial's model, torch.optim state, scheduler state and
generator, so a retry resumes wherever it runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from objectives.batched_model import BatchedModel
from objectives.batched_optim import BatchedOptimizer, batched_optimizer
from objectives.data import Split
from objectives.pruning import should_prune_all
from objectives.run import Diverged, HandBack, Run, report_all

if TYPE_CHECKING:
    from objectives.builtin import ClassifierTask

# What a trial of a stack ends with: its value, or the exception that ended it.
Outcome = float | BaseException


def stack_key(run: Run) -> tuple[Any, ...]:
    """Trials with equal keys can share a stack: their batches have the same shape."""
    return (run.params["batch_size"],)


class _Trial:
    """One trial's own pieces beside the shared stacked tensors."""

    CHUNK = 64  # closed-form lrs computed at a time

    def __init__(self, run: Run, total_steps: int) -> None:
        self.run = run
        self.shuffle = torch.Generator().manual_seed(run.seed)
        # The trial's schedule drives a one-element stand-in optimizer; grad_norm reads the
        # trial's gradient norm from the stand-in's gradient.
        self.stand_in = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([self.stand_in], lr=run.params["lr"])
        self.scheduler = run.scheduler(optimizer, total_steps=total_steps)
        self.closed_form = self.scheduler.schedule.closed_form
        # Closed forms need no stepping: their lrs are computed ahead, a chunk at a time, so
        # a trial pruned early never pays for the rest of its run.
        self.lrs: list[float] = []

    def lr(self, step: int) -> float:
        if not self.closed_form:
            return float(self.scheduler.get_last_lr()[0])
        if step >= len(self.lrs):
            lr_at = self.scheduler.schedule.lr_at
            self.lrs += [lr_at(t) for t in range(len(self.lrs), step + self.CHUNK)]
        return self.lrs[step]

    def step_schedule(self, grad_norm: float) -> None:
        """Advance an adaptive schedule past this step (closed forms are `seek`-ed)."""
        self.stand_in.grad = torch.tensor([grad_norm])
        with warnings.catch_warnings():  # the stand-in optimizer itself never steps
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def scheduler_state(self, steps_done: int) -> dict[str, Any]:
        if self.closed_form:
            self.scheduler.seek(steps_done)
        return self.scheduler.state_dict()


def train_stack(task: ClassifierTask, runs: list[Run]) -> list[Outcome]:
    """Train ``runs`` (all with equal `stack_key`) together; one outcome per run, in order.

    Raises:
        Exception: a fault of the trainer itself (not of one trial) ends the whole stack.
    """
    for run in runs:
        task.check(run)
    device = runs[0].device
    data = task.data(device)
    batch = int(runs[0].params["batch_size"])
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / batch)
    epochs = runs[0].epochs
    total_steps = epochs * steps_per_epoch

    # `live[row]` is the position in `runs` of the trial in stack row `row`; rows are ordered
    # by optimizer kind, so each kind's update runs on a contiguous block of rows.
    live = sorted(range(len(runs)), key=lambda i: runs[i].params["optimizer"])
    models = [task.model(runs[i]).to(device) for i in live]
    saved = [runs[i].load_checkpoint() for i in live]  # earlier attempts' states, if any
    first_epoch = _first_epoch(saved)
    for model, state in zip(models, saved, strict=True):
        if state is not None:
            model.load_state_dict(state["model"])
    stack = BatchedModel(models[0], models)
    trials = {i: _Trial(runs[i], total_steps) for i in live}
    optimizer = batched_optimizer([runs[i].params for i in live], stack.flat)
    outcomes: dict[int, Outcome] = {}
    final: dict[int, float] = {}  # each trial's last reported value
    if first_epoch > 1:
        optimizer.load_torch_states([s["optimizer"] for s in saved], stack.names)  # type: ignore[index]
        for i, state in zip(live, saved, strict=True):
            assert state is not None
            trials[i].scheduler.load_state_dict(state["scheduler"])
            trials[i].shuffle.set_state(state["shuffle"])
            final[i] = runs[i].reported[-1]["value"]
    adaptive = any(not t.closed_form for t in trials.values())

    def drop(ended: Mapping[int, BaseException]) -> torch.Tensor:
        """Remove trials (by position in the stack), record why they ended, and return the
        index of the positions kept (for the caller's own per-position tensors)."""
        nonlocal live, adaptive
        for pos, why in ended.items():
            outcomes[live[pos]] = why
        kept = [pos for pos in range(len(live)) if pos not in ended]
        index = torch.tensor(kept, dtype=torch.long, device=device)
        stack.select(index)
        optimizer.select(index, kept)
        live = [live[pos] for pos in kept]
        adaptive = any(not trials[t].closed_form for t in live)
        return index

    for epoch in range(first_epoch, epochs + 1):
        if not live:
            break
        order = torch.stack([torch.randperm(n, generator=trials[i].shuffle) for i in live])
        order = order.to(device)
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i
            idx = order[:, i * batch : (i + 1) * batch]
            losses, grad = stack.loss_and_grad(data.x_train[idx], data.y_train[idx])
            all_finite = bool(torch.isfinite(losses).all())
            logging = live and trials[live[0]].run.wants_step(step)  # one stride per stack
            norms = grad.pow(2).sum(dim=1).sqrt().tolist() if adaptive or logging else []
            lrs = [trials[t].lr(step) for t in live]
            if logging:
                loss_values = losses.tolist()
                for pos, t in enumerate(live):
                    if math.isfinite(loss_values[pos]):
                        trials[t].run.log_step(
                            step, lr=lrs[pos], loss=loss_values[pos], grad_norm=norms[pos]
                        )
            optimizer.step(stack.flat.data, grad, lrs)
            if adaptive:
                for pos, t in enumerate(live):
                    if not trials[t].closed_form:
                        trials[t].step_schedule(norms[pos])
            if not all_finite:
                loss_values = losses.tolist()
                diverged = {
                    pos: Diverged(
                        f"train loss is {loss_values[pos]} at epoch {epoch}, step {step}"
                    )
                    for pos in range(len(live))
                    if not math.isfinite(loss_values[pos])
                }
                order = order[drop(diverged)]
                if not live:
                    break
        if not live:
            break

        accuracies, val_losses = _evaluate(stack, data)
        values = accuracies if task.metric == "accuracy" else val_losses
        for pos, t in enumerate(live):
            trial = trials[t]
            if trial.scheduler.schedule.metric_driven:
                metric = accuracies[pos] if trial.run.direction == "maximize" else val_losses[pos]
                trial.scheduler.step(metric)
            final[t] = values[pos]
        # One write stores the stack's reports, one read decides its pruning.
        ended: dict[int, BaseException] = dict(
            report_all([trials[t].run for t in live], values, epoch, val_losses=val_losses)
        )
        reported = [(pos, t) for pos, t in enumerate(live) if pos not in ended]
        decisions = should_prune_all([trials[t].run.trial for _, t in reported])
        for (pos, t), prune in zip(reported, decisions, strict=True):
            run = trials[t].run
            if prune:
                ended[pos] = run.pruned()
                continue
            try:  # HandBack: the worker is stopping, once this epoch is saved
                if run.saves_checkpoints:
                    state = _checkpoint(trials[t], stack, optimizer, pos, epoch * steps_per_epoch)
                    run.save_checkpoint({**state, "epoch": epoch})
                else:
                    run.check_stopping()
            except HandBack as e:
                ended[pos] = e
        if ended:
            drop(ended)
    return [outcomes.get(i, final.get(i, math.nan)) for i in range(len(runs))]


def _first_epoch(saved: list[dict[str, Any] | None]) -> int:
    """The epoch to start from: 1, or one past the checkpoints' (which must agree)."""
    epochs = {None if s is None else s["epoch"] for s in saved}
    if len(epochs) > 1:
        raise ValueError(f"a stack's trials must resume from the same epoch, got {epochs}")
    (epoch,) = epochs
    return 1 if epoch is None else int(epoch) + 1


@torch.no_grad()
def _evaluate(stack: BatchedModel, data: Split) -> tuple[list[float], list[float]]:
    """Each trial's (accuracy, mean cross-entropy) on the shared validation set, over every
    target (every position of a sequence)."""
    k = len(stack.flat)
    logits = stack.forward(data.x_val.expand(k, *data.x_val.shape))
    y = data.y_val.expand(k, *data.y_val.shape)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.flatten(), reduction="none")
    accuracies = (logits.argmax(dim=-1) == y).float().view(k, -1).mean(dim=1)
    return accuracies.tolist(), losses.view(k, -1).mean(dim=1).tolist()


def _checkpoint(
    trial: _Trial, stack: BatchedModel, optimizer: BatchedOptimizer, pos: int, steps_done: int
) -> dict[str, Any]:
    """Row ``pos``'s state in the torch format: model, optimizer and scheduler state dicts."""
    weights = stack.state_dict(pos)  # copies
    model = stack.template  # a scratch model: the stack holds its own copy of every weight
    model.load_state_dict(weights)
    solo = trial.run.optimizer(model.parameters())
    by_name = dict(model.named_parameters())
    for name, entry in optimizer.to_torch_state(pos, stack.shapes).items():
        if entry:
            solo.state[by_name[name]] = entry
    return {
        "model": weights,
        "optimizer": solo.state_dict(),
        "scheduler": trial.scheduler_state(steps_done),
        "shuffle": trial.shuffle.get_state(),
    }
