"""A study whose trial listings come from one read of its storage: many decisions, one read.

Optuna's samplers and pruners list the study's trials on every call (constant-liar TPE once
per parameter group of every trial asked; ``should_prune`` once per trial), and on a database
each listing re-reads every running trial. A worker deciding for K trials at once (a stack)
takes one `StudySnapshot` and lets every decision read from it, as Optuna's own batched
``optimize`` shares one cached listing between a trial's decisions. Everything else (single
trials, every write) goes to the real storage, so what the decisions write is stored as usual.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_internals import storage_of, study_id_of, trial_id_of

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class _SnapshotListings(BaseStorage):
    """``get_all_trials`` from a snapshot; every other method from the real storage."""

    def __init__(self, storage: BaseStorage, trials: dict[int, FrozenTrial]) -> None:
        self._real = storage
        self._trials = trials  # by trial id; shared with the StudySnapshot that updates it

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = sorted(self._trials.values(), key=lambda t: t.number)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


def _delegate(name: str) -> Any:
    def method(self: _SnapshotListings, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._real, name)(*args, **kwargs)

    return method


# BaseStorage is abstract: every abstract method not overridden above delegates.
_Snapshot = type(
    "_Snapshot",
    (_SnapshotListings,),
    {
        name: _delegate(name)
        for name in BaseStorage.__abstractmethods__
        if name not in _SnapshotListings.__dict__
    },
)


class StudySnapshot:
    """``study`` as it was at one read, for deciding about many trials at once.

    `study` is an `optuna.Study` with the same name, sampler and pruner, whose trial listings
    come from the snapshot and whose writes (``ask``, ``suggest_*``, what a pruner records)
    go to the real storage. Not thread-safe; take a new snapshot for each batch of decisions.
    """

    def __init__(self, study: optuna.Study) -> None:
        real = storage_of(study)
        self._trials: dict[int, FrozenTrial] = {
            trial_id_of(t): t for t in real.get_all_trials(study_id_of(study), deepcopy=False)
        }
        self.study = optuna.Study(
            study_name=study.study_name,
            storage=_Snapshot(real, self._trials),
            sampler=study.sampler,
            pruner=study.pruner,
        )

    @property
    def finished(self) -> int:
        """How many of the snapshot's trials are finished: COMPLETE or PRUNED."""
        return sum(t.state in _FINISHED for t in self._trials.values())

    def trial(self, trial_id: int) -> FrozenTrial:
        """The snapshot's copy of a trial."""
        return self._trials[trial_id]

    def update(self, trial: FrozenTrial) -> None:
        """Put ``trial`` (as now stored) into the snapshot: later decisions see it, as they
        would with a fresh read (constant-liar TPE sees the other trials of a batch)."""
        self._trials[trial_id_of(trial)] = trial
