"""Stacked training equals one-at-a-time training: every family, both optimizers, both tasks;
pruning and divergence per trial; checkpoints interchangeable between the two paths."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

import schedules
from objectives import Diverged, Pool, Run, train_stack
from objectives.builtin import ClassifierTask, digits_cnn, digits_mlp

FAMILY_PARAMS: dict[str, dict[str, Any]] = {
    "constant": {},
    "polynomial": {"polynomial.power": 2.0},
    "inverse_power": {"inverse_power.power": 0.5},
    "grad_norm": {"grad_norm.window": 5, "grad_norm.min_ratio": 0.1},
    "step": {"step.decay_rate": 0.5, "step.decay_steps": 20},
    "exponential": {"exponential.decay_rate": 0.5, "exponential.decay_steps": 30},
    "cosine": {"cosine.warmup_steps": 10},
    "linear": {},
    "wsd": {"wsd.warmup_steps": 10, "wsd.decay_fraction": 0.3},
    "onecycle": {"onecycle.pct_start": 0.2},
    "plateau": {"plateau.patience": 0, "plateau.factor": 0.5},
}
OPTIMIZERS = {
    "sgd": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
    },
    "adamw": {
        "optimizer": "adamw",
        "lr": 0.005,
        "beta1": 0.9,
        "beta2": 0.99,
        "weight_decay": 1e-2,
    },
}


def test_every_family_is_covered() -> None:
    assert set(FAMILY_PARAMS) == set(schedules.SCHEDULES)


class Recorder:
    """A trial as the worker would make it, with its curves kept in memory."""

    def __init__(
        self,
        params: dict[str, Any],
        seed: int,
        epochs: int,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> None:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        self.steps: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.saved: dict[str, Any] | None = None
        self.run = Run(
            study.ask(),
            params,
            seed=seed,
            epochs=epochs,
            curves=lambda s, e: (self.steps.extend(s), self.epochs.extend(e)),
            checkpoint=(self._save, lambda: self.saved),
        )

    def _save(self, state: dict[str, Any]) -> None:
        self.saved = state


def trials(batch_size: int = 64) -> list[dict[str, Any]]:
    return [
        {**OPTIMIZERS[opt], "batch_size": batch_size, "schedule": family, **extra}
        for opt in OPTIMIZERS
        for family, extra in FAMILY_PARAMS.items()
    ]


def alone(task: ClassifierTask, params: dict[str, Any], seed: int, epochs: int) -> Recorder:
    rec = Recorder(params, seed, epochs)
    try:
        task(rec.run)
    except (optuna.TrialPruned, Diverged):
        pass
    rec.run.flush()
    return rec


def assert_same_curves(stacked: Recorder, single: Recorder) -> None:
    assert len(stacked.steps) == len(single.steps) > 0
    for a, b in zip(stacked.steps, single.steps, strict=True):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert [e["epoch"] for e in stacked.epochs] == [e["epoch"] for e in single.epochs]
    for a, b in zip(stacked.epochs, single.epochs, strict=True):
        # Equal, or one validation sample apart (360 samples).
        assert abs(a["value"] - b["value"]) <= 1 / 360 + 1e-9


@pytest.mark.parametrize(
    ("task", "epochs"), [(digits_mlp, 3), (digits_cnn, 2)], ids=["digits_mlp", "digits_cnn"]
)
def test_each_trial_in_a_stack_equals_the_trial_trained_alone(
    task: ClassifierTask, epochs: int
) -> None:
    settings = trials()
    stacked = [Recorder(p, seed=i, epochs=epochs) for i, p in enumerate(settings)]
    outcomes = train_stack(task, [r.run for r in stacked])
    for rec in stacked:
        rec.run.flush()
    for i, params in enumerate(settings):
        single = alone(task, params, seed=i, epochs=epochs)
        assert_same_curves(stacked[i], single)
        assert isinstance(outcomes[i], float), (params["schedule"], outcomes[i])
        assert abs(outcomes[i] - single.epochs[-1]["value"]) <= 1 / 360 + 1e-9


def test_a_diverging_trial_leaves_the_stack_and_the_others_are_unaffected() -> None:
    good = {**OPTIMIZERS["sgd"], "batch_size": 64, "schedule": "cosine"}
    bad = {**good, "lr": 1e3, "weight_decay": 1.0}
    stacked = [Recorder(p, seed=i, epochs=2) for i, p in enumerate([good, bad, good])]
    outcomes = train_stack(digits_mlp, [r.run for r in stacked])
    assert isinstance(outcomes[1], Diverged)
    assert "train loss is" in str(outcomes[1])
    for i in (0, 2):
        stacked[i].run.flush()
        assert_same_curves(stacked[i], alone(digits_mlp, good, seed=i, epochs=2))


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes the first trial of its own study after epoch 1 (each Recorder has a study)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step == 1


def test_a_pruned_trial_leaves_the_stack_and_the_others_are_unaffected() -> None:
    params = {**OPTIMIZERS["adamw"], "batch_size": 64, "schedule": "linear"}
    stacked = [Recorder(params, seed=i, epochs=3) for i in range(3)]
    pruned = Recorder(params, seed=3, epochs=3, pruner=PruneTrialOne())
    outcomes = train_stack(
        digits_mlp, [stacked[0].run, pruned.run, stacked[1].run, stacked[2].run]
    )
    assert isinstance(outcomes[1], optuna.TrialPruned)
    assert [e["epoch"] for e in pruned.epochs] == [1]
    for i, rec in enumerate(stacked):
        rec.run.flush()
        assert_same_curves(rec, alone(digits_mlp, params, seed=i, epochs=3))


def test_a_stacked_checkpoint_resumes_alone_exactly() -> None:
    settings = [
        {**OPTIMIZERS[o], "batch_size": 64, "schedule": "grad_norm", **FAMILY_PARAMS["grad_norm"]}
        for o in OPTIMIZERS
    ]
    full = [alone(digits_mlp, p, seed=i, epochs=3) for i, p in enumerate(settings)]

    class Preempted(Exception):
        pass

    # Train both in a stack, stopping after epoch 2 (after its checkpoint is written).
    stacked = [Recorder(p, seed=i, epochs=3) for i, p in enumerate(settings)]
    for rec in stacked:
        inner = rec.run.save_checkpoint

        def save(state: dict[str, Any], inner: Any = inner) -> None:
            inner(state)
            if state["epoch"] == 2:
                raise Preempted

        rec.run.save_checkpoint = save  # type: ignore[method-assign]
    with pytest.raises(Preempted):
        train_stack(digits_mlp, [r.run for r in stacked])

    for i, params in enumerate(settings):
        resumed = Recorder(params, seed=i, epochs=3)
        resumed.saved = stacked[i].saved
        value = digits_mlp(resumed.run)  # alone, from the stacked trial's checkpoint
        expected = full[i].epochs[-1]["value"]
        assert math.isclose(value, expected, abs_tol=1 / 360 + 1e-9)
        assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
        resumed.run.flush()
        assert_same_curves(resumed, full[i])  # the checkpoint's step curve is replayed too
        for a, b in zip(resumed.epochs, full[i].epochs, strict=True):
            assert abs(a["value"] - b["value"]) <= 1 / 360 + 1e-9


def test_trials_joining_a_running_pool_train_as_they_would_alone() -> None:
    """A worker's pool takes new trials between epochs: fresh ones of either optimizer (the
    rows are reordered by kind), one resuming from another run's checkpoint at another
    epoch, one with another batch size (a second stack). Every curve equals its trial's
    alone, and each trial ends when its own epochs are done."""
    sgd = {**OPTIMIZERS["sgd"], "batch_size": 64, "schedule": "wsd", **FAMILY_PARAMS["wsd"]}
    adamw = {
        **OPTIMIZERS["adamw"],
        "batch_size": 64,
        "schedule": "grad_norm",
        **FAMILY_PARAMS["grad_norm"],
    }
    small_batches = {**sgd, "batch_size": 32}

    class Preempted(Exception):
        pass

    earlier = Recorder(adamw, seed=4, epochs=3)  # stopped after its first epoch elsewhere
    inner = earlier.run.save_checkpoint

    def save(state: dict[str, Any]) -> None:
        inner(state)
        raise Preempted

    earlier.run.save_checkpoint = save  # type: ignore[method-assign]
    with pytest.raises(Preempted):
        train_stack(digits_mlp, [earlier.run])

    first = [Recorder(adamw, seed=0, epochs=3), Recorder(sgd, seed=1, epochs=3)]
    resumed = Recorder(adamw, seed=4, epochs=3)
    resumed.saved = earlier.saved
    later = [
        Recorder(sgd, seed=2, epochs=3),
        Recorder(adamw, seed=3, epochs=3),
        resumed,
        Recorder(small_batches, seed=5, epochs=2),
    ]
    pool = Pool(digits_mlp)
    assert pool.join([r.run for r in first]) == []
    assert pool.train_epoch() == []
    assert pool.join([r.run for r in later]) == []
    assert (len(pool), len(pool.stacks)) == (6, 2)

    ended_in_round: dict[int, int] = {}
    outcomes: dict[int, Any] = {}
    for round_ in (2, 3, 4):
        for run, outcome in pool.train_epoch():
            ended_in_round[id(run)], outcomes[id(run)] = round_, outcome
    assert not pool
    expected_round = [3, 3, 4, 4, 3, 3]  # the resumed one had one epoch done already
    for rec, when in zip(first + later, expected_round, strict=True):
        assert ended_in_round[id(rec.run)] == when
        assert isinstance(outcomes[id(rec.run)], float)
        rec.run.flush()
    settings = [(adamw, 0, 3), (sgd, 1, 3), (sgd, 2, 3), (adamw, 3, 3), (adamw, 4, 3)]
    settings.append((small_batches, 5, 2))
    for rec, (params, seed, epochs) in zip(first + later, settings, strict=True):
        assert_same_curves(rec, alone(digits_mlp, params, seed=seed, epochs=epochs))
