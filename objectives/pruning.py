"""Pruning decisions for every trial of a stack from one read of the study.

Optuna's ``trial.should_prune()`` reads the study's trials from storage on every call; for a
stack of K trials at the end of an epoch that is K reads of the same rows, and on a database
those reads cost more than the epoch's training (BENCHMARKS.md). `should_prune_all` reads
once (`objectives.study_snapshot`) and asks the study's own pruner about each trial against that
snapshot. What a pruner writes (successive halving records rungs) still goes to the storage.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from objectives.study_snapshot import StudySnapshot
from storage.optuna_internals import trial_id_of


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
    snapshot = StudySnapshot(study)
    return [
        study.pruner.prune(snapshot.study, snapshot.trial(trial_id_of(trial))) for trial in trials
    ]
