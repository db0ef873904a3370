"""The built-in tasks' training loop, for K trials at once (K = 1 is one at a time).

Small models leave a CPU or GPU mostly idle when trained one at a time; K copies stacked
along a leading dimension turn K small matrix products into one batched product (torch.func
`functional_call` under `vmap`). Each trial keeps everything of its own: initialisation (its
seed), shuffling (its generator), schedule (its `ScheduleLR`, on a one-element stand-in
optimizer), optimizer hyperparameters (`batched_optim`), gradient norm, reports, pruning,
divergence and checkpoints. A trial that is pruned or diverges leaves the stack at once; the
stack shrinks with it.

One loop serves both paths, so a trial's curve in a stack of K equals its curve alone: each
trial's slice of a batched kernel computes what the kernel computes for a stack of one.
Per-epoch checkpoints hold each trial's model, torch.optim state, scheduler state and
generator, so a retry resumes wherever it runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import optuna
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from objectives.batched_optim import BatchedOptimizer, batched_optimizer
from objectives.run import Diverged, Run

if TYPE_CHECKING:
    from objectives.builtin import ClassifierTask

# What a trial of a stack ends with: its value, or the exception that ended it.
Outcome = float | BaseException


def stack_key(run: Run) -> tuple[Any, ...]:
    """Trials with equal keys can share a stack: their batches have the same shape."""
    return (run.params["batch_size"],)


class _Trial:
    """One trial's own pieces beside the shared stacked tensors."""

    def __init__(self, run: Run, model: nn.Module, total_steps: int) -> None:
        self.run = run
        self.shuffle = torch.Generator().manual_seed(run.seed)
        # The trial's schedule drives a one-element stand-in optimizer: its lr is read each
        # step, and grad_norm reads the trial's gradient norm from the stand-in's gradient.
        self.stand_in = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([self.stand_in], lr=run.params["lr"])
        self.scheduler = run.scheduler(optimizer, total_steps=total_steps)
        self.names = [name for name, _ in model.named_parameters()]

    @property
    def lr(self) -> float:
        """The lr for the next step (kept by the scheduler, so a restored state has it)."""
        return float(self.scheduler.get_last_lr()[0])

    def step_schedule(self, grad_norm: float) -> None:
        self.stand_in.grad = torch.tensor([grad_norm])
        with warnings.catch_warnings():  # the stand-in optimizer itself never steps
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()


def train_stack(task: ClassifierTask, runs: list[Run]) -> list[Outcome]:
    """Train ``runs`` (all with equal `stack_key`) together; one outcome per run, in order.

    Raises:
        Exception: a fault of the trainer itself (not of one trial) ends the whole stack.
    """
    device = runs[0].device
    data = task.data(device)
    batch = int(runs[0].params["batch_size"])
    n = len(data.y_train)
    steps_per_epoch = math.ceil(n / batch)
    epochs = runs[0].epochs
    total_steps = epochs * steps_per_epoch

    models = [task.model(run).to(device) for run in runs]
    saved = [run.load_checkpoint() for run in runs]  # earlier attempts' states, if any
    first_epoch = _first_epoch(saved)
    for model, state in zip(models, saved, strict=True):
        if state is not None:
            model.load_state_dict(state["model"])
    base = models[0]
    if any(True for _ in base.buffers()):
        raise ValueError(f"{task.name}: models with buffers cannot be stacked")
    params = {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        for name, _ in base.named_parameters()
    }
    trials = [_Trial(run, model, total_steps) for run, model in zip(runs, models, strict=True)]
    optimizer = batched_optimizer([run.params for run in runs])
    outcomes: dict[int, Outcome] = {}
    final: dict[int, float] = {}  # each trial's last validation accuracy
    if first_epoch > 1:
        optimizer.load_torch_states([s["optimizer"] for s in saved], trials[0].names)  # type: ignore[index]
        for i, (trial, state) in enumerate(zip(trials, saved, strict=True)):
            assert state is not None
            trial.scheduler.load_state_dict(state["scheduler"])
            trial.shuffle.set_state(state["shuffle"])
            final[i] = runs[i].reported[-1]["value"]
    live = list(range(len(runs)))  # positions in `runs` of the trials still in the stack

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(base, p, (x,))
        return out

    batched_forward = vmap(forward)

    def drop(ended: Mapping[int, BaseException]) -> torch.Tensor:
        """Remove trials (by position in the stack), record why they ended, and return the
        index of the positions kept (for the caller's own per-position tensors)."""
        nonlocal params, live
        for pos, why in ended.items():
            outcomes[live[pos]] = why
        kept = [pos for pos in range(len(live)) if pos not in ended]
        index = torch.tensor(kept, dtype=torch.long, device=device)
        params = {name: p[index] for name, p in params.items()}
        optimizer.select(index, kept)
        live = [live[pos] for pos in kept]
        return index

    for epoch in range(first_epoch, epochs + 1):
        if not live:
            break
        order = torch.stack([torch.randperm(n, generator=trials[i].shuffle) for i in live])
        order = order.to(device)
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i
            idx = order[:, i * batch : (i + 1) * batch]
            leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
            logits = batched_forward(leaves, data.x_train[idx])
            losses = (
                F.cross_entropy(
                    logits.flatten(0, 1), data.y_train[idx].flatten(), reduction="none"
                )
                .view(len(live), -1)
                .mean(dim=1)
            )
            finite = torch.isfinite(losses)
            # Each trial's loss depends only on its own slice: one backward gives every
            # trial its own gradient.
            torch.where(finite, losses, 0.0).sum().backward()  # type: ignore[no-untyped-call]
            grads: dict[str, torch.Tensor] = {}
            for name, leaf in leaves.items():
                assert leaf.grad is not None
                grads[name] = leaf.grad
            squares = [g.pow(2).flatten(1).sum(dim=1) for g in grads.values()]
            norms = torch.stack(squares).sum(dim=0).sqrt()
            loss_values = losses.tolist()
            norm_values = norms.tolist()
            lrs = [trials[t].lr for t in live]
            for pos, t in enumerate(live):
                if trials[t].run.wants_step(step) and finite[pos]:
                    trials[t].run.log_step(
                        step, lr=lrs[pos], loss=loss_values[pos], grad_norm=norm_values[pos]
                    )
            params = {name: leaf.detach() for name, leaf in leaves.items()}
            optimizer.step(params, grads, lrs)
            for pos, t in enumerate(live):
                trials[t].step_schedule(norm_values[pos])
            diverged = {
                pos: Diverged(f"train loss is {loss_values[pos]} at epoch {epoch}, step {step}")
                for pos in range(len(live))
                if not finite[pos]
            }
            if diverged:
                order = order[drop(diverged)]
                if not live:
                    break
        if not live:
            break

        accuracies, val_losses = _evaluate(batched_forward, params, data, len(live))
        ended: dict[int, BaseException] = {}
        for pos, t in enumerate(live):
            trial = trials[t]
            if trial.scheduler.schedule.metric_driven:
                metric = accuracies[pos] if trial.run.direction == "maximize" else val_losses[pos]
                trial.scheduler.step(metric)
            final[t] = accuracies[pos]
            try:
                trial.run.report(accuracies[pos], epoch, val_loss=val_losses[pos])
            except (optuna.TrialPruned, Diverged) as e:
                ended[pos] = e
                continue
            trial.run.save_checkpoint(_checkpoint(task, trial, params, optimizer, pos, epoch))
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
def _evaluate(
    batched_forward: Any, params: dict[str, torch.Tensor], data: Any, k: int
) -> tuple[list[float], list[float]]:
    """Each trial's (accuracy, mean cross-entropy) on the shared validation set."""
    x = data.x_val.expand(k, *data.x_val.shape)
    logits = batched_forward(params, x)
    y = data.y_val.expand(k, -1)
    losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    losses = losses.view(k, -1).mean(dim=1)
    accuracies = (logits.argmax(dim=2) == y).float().mean(dim=1)
    return accuracies.tolist(), losses.tolist()


def _checkpoint(
    task: ClassifierTask,
    trial: _Trial,
    params: dict[str, torch.Tensor],
    optimizer: BatchedOptimizer,
    pos: int,
    epoch: int,
) -> dict[str, Any]:
    """Trial ``pos``'s state in the one-at-a-time format (`objectives.train`)."""
    model = task.make_model(trial.run.args)
    model.load_state_dict({name: p[pos].clone() for name, p in params.items()})
    solo = trial.run.optimizer(model.parameters())
    state = optimizer.to_torch_state(pos, trial.names)
    by_name = dict(model.named_parameters())
    for name, entry in state.items():
        solo.state[by_name[name]] = entry
    return {
        "model": model.state_dict(),
        "optimizer": solo.state_dict(),
        "scheduler": trial.scheduler.state_dict(),
        "shuffle": trial.shuffle.get_state(),
        "epoch": epoch,
    }
