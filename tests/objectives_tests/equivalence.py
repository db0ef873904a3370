"""Trials as the worker would make them, with curves kept in memory, and the check that a
trial trained in a stack has the curve of the same trial trained alone.

Run the comparison under the ``float64`` fixture (`conftest.py` says why): its tolerance
`REL` holds on every CPU, and a stack that mixes its trials up misses it by far.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from objectives import Diverged, Outcome, Run, Task, train_stack
from objectives.builtin import ClassifierTask
from objectives.data import Split

# Relative tolerance for float64 training: kernels' rounding differences stay far below it
# after the tests' few epochs, while a row using another row's lr, momentum, gradient or
# data order misses it (`test_stacked.py` checks both).
REL = 1e-9


class Recorder:
    """A trial with its step and epoch curves (and its checkpoint) kept in memory."""

    def __init__(
        self,
        params: dict[str, Any],
        seed: int,
        epochs: int,
        *,
        direction: str = "maximize",
        args: dict[str, Any] | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        **options: Any,
    ) -> None:
        """``options``: more of `Run`'s keywords (``trunk``, ``branch``)."""
        study = optuna.create_study(direction=direction, pruner=pruner)
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.saved: dict[str, Any] | None = None
        self.run = Run(
            study.ask(),
            params,
            seed=seed,
            epochs=epochs,
            direction=direction,
            args=args,
            curves=lambda s, e: (self.steps.extend(s), self.epochs.extend(e)),
            checkpoint=(self._save, lambda: self.saved),
            **options,
        )

    def _save(self, state: dict[str, Any]) -> None:
        self.saved = state


def alone(
    task: Task,
    params: dict[str, Any],
    seed: int,
    epochs: int,
    args: dict[str, Any] | None = None,
) -> Recorder:
    """One trial trained by itself to its end (or until it is pruned or diverges)."""
    rec = Recorder(params, seed, epochs, direction=task.direction, args=args)
    try:
        task(rec.run)
    except (optuna.TrialPruned, Diverged):
        pass
    rec.run.flush()
    return rec


def stacked_and_alone(
    task: Task,
    settings: list[dict[str, Any]],
    epochs: int,
    args: dict[str, Any] | None = None,
) -> list[tuple[Recorder, Recorder, Outcome]]:
    """Each setting (seed: its index) trained in one stack, and alone: (stacked, alone,
    how the stacked one ended)."""
    stacked = [
        Recorder(p, seed=i, epochs=epochs, direction=task.direction, args=args)
        for i, p in enumerate(settings)
    ]
    outcomes = train_stack(task, [r.run for r in stacked])
    for rec in stacked:
        rec.run.flush()
    singles = [alone(task, p, i, epochs, args) for i, p in enumerate(settings)]
    return list(zip(stacked, singles, outcomes, strict=True))


def on_fewer_examples(task: ClassifierTask, train: int, val: int) -> ClassifierTask:
    """``task`` with only the first ``train`` training and ``val`` validation examples of its
    data: what an equivalence test compares is step by step, and a stack that mixes its
    trials up shows within a few steps, so a few batches per epoch are enough."""

    def data(device: Any) -> Split:
        full = task.make_data(device)
        return Split(
            full.x_train[:train], full.y_train[:train], full.x_val[:val], full.y_val[:val]
        )

    return dataclasses.replace(task, make_data=data)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0


def assert_same_curves(stacked: Recorder, single: Recorder) -> float:
    """Every logged step (lr, train loss, gradient norm) and every epoch (metric and
    validation loss) of ``stacked`` equals ``single``'s, to `REL`. Returns the largest
    relative difference seen."""
    assert len(stacked.steps) == len(single.steps) > 0
    worst = 0.0
    for a, b in zip(stacked.steps, single.steps, strict=True):
        assert a["step"] == b["step"], (a, b)
        for key in ("lr", "train_loss", "grad_norm"):
            worst = max(worst, rel := _rel(a[key], b[key]))
            assert rel <= REL, (key, a, b)
    assert [e["epoch"] for e in stacked.epochs] == [e["epoch"] for e in single.epochs]
    for a, b in zip(stacked.epochs, single.epochs, strict=True):
        for key in ("value", "val_loss"):
            worst = max(worst, rel := _rel(a[key], b[key]))
            assert rel <= REL, (key, a, b)
    return worst


class Preempted(Exception):
    """The machine went away after a checkpoint."""


def preempt_after(recorders: list[Recorder], epoch: int) -> None:
    """`Preempted` is raised once every one of ``recorders`` has saved its checkpoint of
    ``epoch`` (all of them: a stack saves its rows one after another)."""
    saved: set[int] = set()
    for rec in recorders:
        inner = rec.run.save_checkpoint

        def save(
            state: dict[str, Any], inner: Any = inner, rec: Recorder = rec, **flags: bool
        ) -> None:
            inner(state, **flags)
            if state["epoch"] == epoch:
                saved.add(id(rec))
                if len(saved) == len(recorders):
                    raise Preempted

        rec.run.save_checkpoint = save  # type: ignore[method-assign]
