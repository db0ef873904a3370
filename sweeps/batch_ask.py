"""Asking Optuna for up to K trials at once (a stack), sampled against one read of the study.

``study.ask()`` plus sampling reads the study's trials from storage once per parameter group
with constant-liar TPE, re-reading every running trial each time: for a stack of K that is
the largest cost of a stacked study (BENCHMARKS.md). `ask_batch` claims the K trials, reads
once (`objectives.study_snapshot`, which pruning shares) and samples all K against that
snapshot, adding each sampled trial to it with its parameters, so the sampler still sees the
batch's earlier trials as running (constant liar) and every finished trial up to the read,
as Optuna's batched ``optimize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from objectives.study_snapshot import StudySnapshot
from storage.optuna_internals import storage_of


def ask_batch(
    study: optuna.Study,
    size: int,
    *,
    claim: Callable[[], int | None],
    sample: Callable[[optuna.Trial], Any],
) -> list[optuna.Trial]:
    """Up to ``size`` trials of ``study``, each taken by ``claim()`` (a trial id under the
    budget, `storage.base.BaseTrialSlots.claim`) and sampled by ``sample(trial)`` (its
    ``suggest_*`` calls, as after ``study.ask()``).

    The read comes after every claim: the trials were created outside Optuna's own calls,
    and its storage cache learns of them from that read (before their parameters are set).

    Returns:
        The trials, bound to ``study`` itself (their reports and pruning read the storage),
        in the order claimed; fewer than ``size`` when ``claim()`` returned None.
    """
    claimed: list[int] = []
    while len(claimed) < size and (trial_id := claim()) is not None:
        claimed.append(trial_id)
    if not claimed:  # no read when the budget is spent
        return []
    snapshot = StudySnapshot(study)
    trials: list[optuna.Trial] = []
    for trial_id in claimed:
        sample(optuna.Trial(snapshot.study, trial_id))  # what `study.ask()` does after taking
        snapshot.update(storage_of(study).get_trial(trial_id))
        trials.append(optuna.Trial(study, trial_id))  # its parameters are stored
    return trials


def room(
    size: int, training: int, *, finished: int, held: int, blind: int | None
) -> tuple[int, int]:
    """How many more trials a worker training ``training`` of at most ``size`` may take, when
    ``held`` trials of the study are started (running or finished) and ``finished`` of them
    finished: ``(learned, blind)``.

    ``learned``: a worker trains at most as many trials as are finished (at least one). A
    stack of 16 on a fresh study would train 16 runs that nothing learned from; ramping up,
    the sampler and the pruner learn from the first trials first.

    ``blind``: more of the study's first ``blind`` trials (`sweeps.samplers.blind_trials`;
    None: every trial), which the sampler draws at random and the pruner cannot prune before
    that many finish: they all start at once. Claimed with ``BaseTrialSlots.claim(below=blind)``,
    so racing workers together start no more than ``blind``.
    """
    free = size - training
    learned = max(0, min(free, max(1, finished) - training))
    unlearned = free if blind is None else min(free, blind - held)
    return learned, max(0, unlearned - learned)
