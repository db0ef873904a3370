"""Asking Optuna for up to K trials at once (a stack), sampled against one read of the study.

``study.ask()`` plus sampling reads the study's trials from storage once per parameter group
with constant-liar TPE, re-reading every running trial each time: for a stack of K that is
the largest cost of a stacked study (BENCHMARKS.md). `ask_batch` reads once
(`storage.snapshot`) and samples all K against that snapshot, adding each asked trial to it
with its parameters, so the sampler still sees the batch's earlier trials as running
(constant liar) and every finished trial up to the read, as Optuna's batched ``optimize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from storage.snapshot import StudySnapshot


def ask_batch(
    study: optuna.Study,
    size: int,
    *,
    claim: Callable[[], int | None],
    sample: Callable[[optuna.Trial], Any],
    ramp_up: bool = False,
) -> list[optuna.Trial]:
    """Up to ``size`` trials of ``study``, each taken by ``claim()`` (a trial id under the
    budget, `storage.trial_slots`) and sampled by ``sample(trial)`` (its ``suggest_*``
    calls, as after ``study.ask()``).

    With ``ramp_up``, at most as many trials as the study has finished (at least one): trials
    asked together before any has finished are all sampled blind and none can be pruned
    against a finished one, so a stack of 16 on a fresh study trains 16 full runs; ramping up
    (1, 2, 4, ... trials) lets the sampler and pruner learn from the first trials first.

    Returns:
        The trials, bound to ``study`` itself (their reports and pruning read the storage),
        in the order claimed; fewer than ``size`` when ``claim()`` returned None.
    """
    snapshot: StudySnapshot | None = None
    trials: list[optuna.Trial] = []
    while len(trials) < size and (trial_id := claim()) is not None:
        if snapshot is None:  # read after a claim: none when the budget is spent
            snapshot = StudySnapshot(study)
            if ramp_up:
                size = min(size, max(1, snapshot.finished))
        sample(optuna.Trial(snapshot.study, trial_id))  # what `study.ask()` does after taking
        trial = optuna.Trial(study, trial_id)  # its parameters are stored
        snapshot.update(study._storage.get_trial(trial_id))
        trials.append(trial)
    return trials
