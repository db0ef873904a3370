"""The training loop of every task (`objectives.task.Task`, the built-in ones included), for
K trials at once (K = 1 is one at a time).

Small models leave a CPU or GPU mostly idle when trained one at a time; K copies stacked
along a leading dimension (`objectives.stacking`) turn K small matrix products into one
batched product. Each trial keeps everything of its own: initialisation (its seed),
shuffling (its generator), dropout masks, BatchNorm statistics, schedule (its
`ScheduleLR`, on a one-element stand-in optimizer), optimizer hyperparameters
(`batched_optim`), gradient norm, epoch, reports, pruning, divergence and checkpoints. A
trial that is pruned or diverges leaves the stack at once, and a new trial (or a retry,
from its checkpoint) can take its place at the next epoch: a worker's `Pool` keeps its
stacks full.

One loop serves both paths, so a trial's curve in a stack of K equals its curve alone, up to
the kernels' rounding (the tests check it in float64). Per-epoch checkpoints hold each
trial's model (with its buffers), torch.optim state, scheduler state and generator, so a
retry resumes wherever it runs. A model that vmap cannot batch (`objectives.func_model.probe`)
trains its trials one at a time, through the same loop.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
import warnings
from collections.abc import Container, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from objectives.batched_model import BatchedModel
from objectives.batched_optim import BatchedOptimizer, Row, batched_optimizer, row_from_torch
from objectives.data import Split
from objectives.feed import Data, EpochFeed, steps_per_epoch, task_data, val_batches
from objectives.func_model import probe
from objectives.pruning import should_prune_all
from objectives.run import Diverged, HandBack, Outcome, Run, report_all
from objectives.stacking import (
    StackedModel,
    flatten,
    persistent_buffers,
    stack_buffers,
    stacked_model,
    template_for,
)
from objectives.task import Task

VAL_CHUNK = 1024  # validation examples evaluated at a time


def stack_key(run: Run) -> tuple[Any, ...]:
    """Trials with equal keys can share a stack: their batches have the same shape, and
    their models the same architecture (the same ``run.args``, some searched per trial)."""
    return run.params["batch_size"], json.dumps(run.args, sort_keys=True, default=str)


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
        self.epoch = 1  # the next one to train
        self.final = math.nan  # the last reported value
        # Steps that hold the stable lr (`objectives.trunks`): infinite for none.
        stable = self.scheduler.schedule.stable_steps
        self.stable_steps = math.inf if stable is None else stable

    def resume(self, saved: dict[str, Any]) -> None:
        """Continue after the epoch of checkpoint ``saved`` (`Run.load_checkpoint`)."""
        self.scheduler.load_state_dict(saved["scheduler"])
        self.shuffle.set_state(saved["shuffle"])
        self.epoch = int(saved["epoch"]) + 1
        self.final = self.run.reported[-1]["value"]

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


class Stack:
    """Trials of one `stack_key` training as one batched model, each at its own epoch.

    Trials `join` between epochs, fresh or from a checkpoint, and leave as they end, so a
    worker refills the slots that pruning frees (`Pool`). Rows are ordered by optimizer kind,
    so each kind's update runs on a contiguous block of rows (`batched_optim`).
    """

    def __init__(
        self, task: Task, device: torch.device, batch_size: int, *, vmap: bool = True
    ) -> None:
        """``vmap=False``: a stack of one trial, for a model that vmap cannot batch."""
        self.task = task
        self.device = device
        # Inputs in the dtype the models are built in (torch's default: float32, unless a
        # caller trains in float64, as the equivalence tests do).
        self.data = task_data(task, device, torch.get_default_dtype())
        self.batch_size = batch_size
        self.vmap = vmap
        self.loss = task.training_loss()
        self.steps_per_epoch = steps_per_epoch(self.data, batch_size)
        self.rows: list[_Trial] = []
        self.model: StackedModel | None = None
        self.optimizer: BatchedOptimizer | None = None
        self.values: list[float] = []  # each row's metric after the epoch `train` trained
        self.val_losses: list[float] = []
        self._ended: list[tuple[Run, Outcome]] = []

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def runs(self) -> list[Run]:
        return [t.run for t in self.rows]

    def join(self, runs: Sequence[Run]) -> None:
        """Add ``runs`` (with this stack's key), each from its checkpoint if it has one.

        Raises:
            Exception: a run cannot train here; the stack is left as it was.
        """
        for run in runs:
            self.task.check(run)
        rows = list(self.rows)
        old = self.model
        kept = [old.row(k) for k in range(len(old))] if old is not None else []
        weights, buffers = [w for w, _ in kept], [b for _, b in kept]
        states = [self.optimizer.row(pos) for pos in range(len(rows))] if self.optimizer else []
        template: nn.Module | None = old.template if old is not None else None
        for run in runs:
            trial = _Trial(run, run.epochs * self.steps_per_epoch)
            model = self.task.build(run).to(self.device)
            template = template or template_for(model)
            saved = run.load_checkpoint()  # an earlier attempt's state, if any
            if saved is None:  # a branch starts from its trunk's checkpoint
                saved = _branch_start(run, trial, self.steps_per_epoch)
            state: Row = {}
            if saved is not None:
                model.load_state_dict(saved["model"])
                state = row_from_torch(saved["optimizer"], list(dict(model.named_parameters())))
                trial.resume(saved)
            rows.append(trial)
            weights.append(flatten(model))
            buffers.append(persistent_buffers(model))
            states.append(state)
        assert template is not None
        order = sorted(range(len(rows)), key=lambda i: rows[i].run.params["optimizer"])
        self.rows = [rows[i] for i in order]
        self.model = stacked_model(
            template,
            torch.stack([weights[i] for i in order]),
            stack_buffers([buffers[i] for i in order]),
            vmap=self.vmap,
        )
        self.model.autocast = torch.bfloat16 if self.rows[0].run.precision == "bf16" else None
        self.optimizer = batched_optimizer(
            [t.run.params for t in self.rows], self.model.flat, [states[i] for i in order]
        )

    def train(self) -> None:
        """Train every trial one epoch (each its own next one) and evaluate it (`values`).
        Trials that diverge leave, as do those whose worker is stopping (before the epoch,
        on their last checkpoint). Reporting the values, then `settle`, ends the epoch."""
        leaving: dict[int, Outcome] = {}
        for pos, t in enumerate(self.rows):
            try:
                t.run.check_stopping()
                if t.epoch > t.run.epochs:  # resumed from a checkpoint of its last epoch
                    leaving[pos] = t.final
            except HandBack as e:
                leaving[pos] = e
        self._drop(leaving)
        if self.rows:
            self._train_steps()
        self.values, self.val_losses = [], []
        if self.rows:
            assert self.model is not None
            self.values, self.val_losses = _evaluate(self.task, self.model, self.data)
            for pos, t in enumerate(self.rows):
                if t.scheduler.schedule.metric_driven:
                    t.scheduler.step(self.values[pos])
                t.final = self.values[pos]

    def _train_steps(self) -> None:
        assert self.model is not None and self.optimizer is not None
        per_epoch = self.steps_per_epoch
        feed = EpochFeed(self.data, self.batch_size, [t.shuffle for t in self.rows])
        adaptive = any(not t.closed_form for t in self.rows)  # then each step needs norms
        for i in range(per_epoch):
            steps = [(t.epoch - 1) * per_epoch + i for t in self.rows]
            self.model.set_dropout([t.run.seed for t in self.rows], steps)
            x, y = feed.batch(i)
            losses, grad = self.model.loss_and_grad(x, y, self.loss)
            all_finite = bool(torch.isfinite(losses).all())
            logged = [pos for pos, t in enumerate(self.rows) if t.run.wants_step(steps[pos])]
            norms = grad.pow(2).sum(dim=1).sqrt().tolist() if adaptive or logged else []
            lrs = [t.lr(step) for t, step in zip(self.rows, steps, strict=True)]
            if logged:
                loss_values = losses.tolist()
                for pos in logged:
                    if math.isfinite(loss_values[pos]):
                        self.rows[pos].run.log_step(
                            steps[pos], lr=lrs[pos], loss=loss_values[pos], grad_norm=norms[pos]
                        )
            self.optimizer.step(self.model.flat.data, grad, lrs)
            if adaptive:
                for t, norm in zip(self.rows, norms, strict=True):
                    if not t.closed_form:
                        t.step_schedule(norm)
            if not all_finite:
                loss_values = losses.tolist()
                diverged: dict[int, Outcome] = {
                    pos: Diverged(
                        f"train loss is {loss_values[pos]} at epoch {t.epoch}, step {steps[pos]}"
                    )
                    for pos, t in enumerate(self.rows)
                    if not math.isfinite(loss_values[pos])
                }
                feed.select(self._drop(diverged))
                if not self.rows:
                    return
                adaptive = any(not t.closed_form for t in self.rows)

    def settle(self, ended: Mapping[int, Outcome], pruned: Container[int]) -> None:
        """End the epoch `train` trained, once it is reported: the trials ``ended`` (by
        position) and ``pruned`` leave, those at their last epoch are done, and the others
        save a checkpoint (or leave, handed back, if their worker is stopping)."""
        assert self.model is not None and self.optimizer is not None
        ended = dict(ended)
        for pos, t in enumerate(self.rows):
            if pos in ended:
                continue
            if pos in pruned:
                ended[pos] = t.run.pruned()
            elif t.epoch == t.run.epochs:
                ended[pos] = t.final  # done: no checkpoint needed
            elif t.run.saves_checkpoints:
                steps_done = t.epoch * self.steps_per_epoch
                state = _checkpoint(t, self.model, self.optimizer, pos, steps_done)
                try:
                    t.run.save_checkpoint(
                        {**state, "epoch": t.epoch},
                        stable=steps_done <= t.stable_steps,
                        last_stable=steps_done + self.steps_per_epoch > t.stable_steps,
                    )
                except HandBack as e:
                    ended[pos] = e
            t.epoch += 1
        self._drop(ended)

    def take_ended(self) -> list[tuple[Run, Outcome]]:
        """The trials that left since the last call, with how they ended: a value (the
        last epoch is done) or the exception (pruned, diverged, handed back, lost)."""
        ended, self._ended = self._ended, []
        return ended

    def _drop(self, ended: Mapping[int, Outcome]) -> torch.Tensor:
        """Remove trials (by position), keep how they ended, and return the index of the
        positions kept (for the caller's own per-position tensors)."""
        self._ended += [(self.rows[pos].run, outcome) for pos, outcome in ended.items()]
        kept = [pos for pos in range(len(self.rows)) if pos not in ended]
        index = torch.tensor(kept, dtype=torch.long, device=self.device)
        if ended and self.model is not None and self.optimizer is not None:
            self.model.select(index)
            self.optimizer.select(index, kept)
        self.rows = [self.rows[pos] for pos in kept]
        return index


class Pool:
    """The trials one worker trains: a `Stack` per `stack_key`, each trained an epoch in
    turn. Trials join between epochs, so the worker keeps its slots full.

    The first trial of each key probes whether its model stacks
    (`objectives.func_model.probe`); if not, `cannot_stack` says why, and each trial of
    that key trains in a stack of its own.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.stacks: dict[tuple[Any, ...], Stack] = {}
        self.cannot_stack: str | None = None
        self._unstackable: set[tuple[Any, ...]] = set()
        self._probed: set[tuple[Any, ...]] = set()

    def __len__(self) -> int:
        return sum(len(stack) for stack in self.stacks.values())

    def join(self, runs: Sequence[Run]) -> list[tuple[Run, Exception]]:
        """Add ``runs`` to their stacks; returns those that could not join, with why."""
        groups: dict[tuple[Any, ...], list[Run]] = {}
        for run in runs:
            key = stack_key(run)
            if key not in self._probed:
                self._probe(key, run)
            if key in self._unstackable:
                key = (*key, id(run))  # a stack of its own
            groups.setdefault(key, []).append(run)
        failed: list[tuple[Run, Exception]] = []
        for key, group in groups.items():
            stack = self.stacks.get(key) or Stack(
                self.task,
                group[0].device,
                int(group[0].params["batch_size"]),
                vmap=stack_key(group[0]) not in self._unstackable,
            )
            try:
                stack.join(group)
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                failed += [(run, e) for run in group]
            if stack:
                self.stacks[key] = stack
        return failed

    def train_epoch(self) -> list[tuple[Run, Outcome]]:
        """An epoch of every stack; returns the trials that ended. The epoch's reports are
        one write and its pruning decisions one read, for all stacks together."""
        ended: list[tuple[Run, Outcome]] = []
        for stack in self.stacks.values():
            try:
                stack.train()
            except Exception as e:  # the stack failed as a whole: so does each trial
                traceback.print_exc(file=sys.stderr)
                ended += [(run, e) for run in stack.runs]
                stack.rows = []
        rows = [(stack, pos) for stack in self.stacks.values() for pos in range(len(stack))]
        runs = [stack.rows[pos].run for stack, pos in rows]
        reports = report_all(
            runs,
            [stack.values[pos] for stack, pos in rows],
            [stack.rows[pos].epoch for stack, pos in rows],
            val_losses=[stack.val_losses[pos] for stack, pos in rows],
        )
        reported = [
            i
            for i, (stack, pos) in enumerate(rows)
            if i not in reports and runs[i].prunable(stack.rows[pos].epoch)
        ]
        decisions = should_prune_all([runs[i].trial for i in reported])
        pruned = [rows[i] for i, prune in zip(reported, decisions, strict=True) if prune]
        for key, stack in list(self.stacks.items()):
            if stack:
                mine = {rows[i][1]: why for i, why in reports.items() if rows[i][0] is stack}
                stack.settle(mine, {pos for s, pos in pruned if s is stack})
            ended += stack.take_ended()
            if not stack:
                del self.stacks[key]
        return ended

    def _probe(self, key: tuple[Any, ...], run: Run) -> None:
        """Find out whether the models of ``key`` (``run``'s) can train as one stack."""
        self._probed.add(key)
        try:
            template = template_for(self.task.build(run))
            data = task_data(self.task, run.device, torch.get_default_dtype())
        except Exception:  # the trial itself fails (Stack.join says how)
            return
        if BatchedModel.covers(template):
            return  # hand-batched kernels: stackable by construction
        x, y = first_batch(data, int(run.params["batch_size"]))
        why = probe(template.to(run.device), x, y, self.task.loss)
        if why is not None:
            self._unstackable.add(key)
            self.cannot_stack = f"{self.task.name} cannot be stacked ({why})"


def first_batch(data: Data, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of ``batch_size`` examples, for a probe."""
    if isinstance(data, Split):
        return data.x_train[:batch_size], data.y_train[:batch_size]
    return next(iter(data.train_batches(batch_size, torch.Generator().manual_seed(0))))


def train_stack(task: Task, runs: list[Run]) -> list[Outcome]:
    """Train ``runs`` together to their end (a `Pool` of them, without refilling); one
    outcome per run, in order. A fault of the trainer itself (not of one trial) is the
    outcome of every trial of its stack.

    Raises:
        Exception: ``runs`` cannot train (`Stack.join`), or what saving a checkpoint raises.
    """
    pool = Pool(task)
    for _, why in pool.join(runs):
        raise why
    outcomes: dict[int, Outcome] = {}
    while pool:
        outcomes.update((id(run), outcome) for run, outcome in pool.train_epoch())
    return [outcomes[id(run)] for run in runs]


def _branch_start(run: Run, trial: _Trial, steps_per_epoch: int) -> dict[str, Any] | None:
    """A branch's trunk's state at the latest kept epoch within the branch's own stable
    phase (`objectives.trunks`), or None (then it trains from step 0)."""
    if run.branch is None or math.isinf(trial.stable_steps):  # no cooldown: no branching
        return None
    start = run.branch.start(int(trial.stable_steps // steps_per_epoch))
    saved = run.start_branch(start) if start is not None else None
    if saved is None:
        return None
    # The trunk's scheduler ran another cooldown's schedule, identical up to here: drop
    # its record of which schedule made the state.
    scheduler = {k: v for k, v in saved["scheduler"].items() if k != "schedule"}
    return {**saved, "scheduler": scheduler}


@torch.no_grad()
def _evaluate(task: Task, stack: StackedModel, data: Data) -> tuple[list[float], list[float]]:
    """Each trial's (metric, loss) on the shared validation data."""
    pieces = [(stack.evaluate(x), y) for x, y in val_batches(data, VAL_CHUNK)]
    outputs = torch.cat([out for out, _ in pieces], dim=1)
    y = torch.cat([y for _, y in pieces])
    metrics = [float(task.metric(out, y)) for out in outputs]
    return metrics, [float(task.loss(out, y)) for out in outputs]


def _checkpoint(
    trial: _Trial, stack: StackedModel, optimizer: BatchedOptimizer, pos: int, steps_done: int
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
