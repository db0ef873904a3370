"""Pruning decisions for every trial of a stack from one read of the study.

Optuna's ``trial.should_prune()`` reads the study's trials from storage on every call; for a
stack of K trials at the end of an epoch that is K reads of the same rows, and on a database
those reads cost more than the epoch's training (BENCHMARKS.md). `should_prune_all` reads
once and asks the study's own pruner about each trial against that snapshot. What a pruner
writes (successive halving records rungs) still goes to the storage.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


class _SnapshotReads(BaseStorage):
    """Trials read from a snapshot; everything else from the real storage."""

    def __init__(self, storage: BaseStorage, trials: list[FrozenTrial]) -> None:
        self._storage = storage
        self._trials = {t._trial_id: t for t in trials}

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = [t for t in self._trials.values() if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._trials.get(trial_id) or self._storage.get_trial(trial_id)


def _delegate(name: str) -> Any:
    def method(self: _SnapshotReads, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._storage, name)(*args, **kwargs)

    return method


_Snapshot = type(
    "_Snapshot",
    (_SnapshotReads,),
    {
        name: _delegate(name)
        for name in BaseStorage.__abstractmethods__
        if name not in _SnapshotReads.__dict__
    },
)


def should_prune_all(trials: Sequence[optuna.Trial]) -> list[bool]:
    """``[trial.should_prune() for trial in trials]`` with one read per study."""
    studies: dict[int, list[int]] = {}
    for i, trial in enumerate(trials):
        studies.setdefault(id(trial.study), []).append(i)
    decisions = [False] * len(trials)
    for members in studies.values():
        mine = _should_prune_one_study([trials[i] for i in members])
        for i, decision in zip(members, mine, strict=True):
            decisions[i] = decision
    return decisions


def _should_prune_one_study(trials: Sequence[optuna.Trial]) -> list[bool]:
    study = trials[0].study
    if isinstance(study.pruner, optuna.pruners.NopPruner):
        return [False] * len(trials)
    storage = study._storage  # Optuna keeps it private; its public API reads per call
    snapshot = storage.get_all_trials(study._study_id, deepcopy=False)
    view = optuna.Study(
        study_name=study.study_name,
        storage=_Snapshot(storage, snapshot),
        sampler=study.sampler,
        pruner=study.pruner,
    )
    by_id = {t._trial_id: t for t in snapshot}
    return [study.pruner.prune(view, by_id[trial._trial_id]) for trial in trials]
