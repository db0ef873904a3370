"""Which trunk a new trial branches from (`sweeps.branches.open_trunk`), and what it takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from test_branches import SPACE

from storage import CheckpointStore, Database
from storage.base import RETRY_OF
from sweeps.branches import (
    BRANCHED_AT,
    STABLE_EPOCHS,
    TRUNK,
    Branching,
    branch_params,
    open_trunk,
    tree,
    trunk_of,
)
from sweeps.config import parse_config
from sweeps.study import launch, load
from sweeps.trial_attrs import PARAMS
from sweeps_helpers import BASE

PARAMS_OF_TRUNK = {"lr": 0.1, "schedule": "wsd", "wsd.decay_fraction": 0.3, "wsd.min_lr": 0.0}


def trial(number: int, state: TrialState = TrialState.RUNNING, **attrs: Any) -> FrozenTrial:
    made = optuna.trial.create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"lr": 0.1},
        distributions={"lr": FloatDistribution(0.01, 1.0)},
        user_attrs={PARAMS: PARAMS_OF_TRUNK, **attrs},
    )
    made.number = number
    return made


def branch_of(number: int, trunk: int) -> FrozenTrial:
    return trial(number, **{TRUNK: {"trial": trunk, "epochs": [3]}})


def test_a_trunk_opens_once_its_stable_phase_is_kept_and_until_its_group_is_full() -> None:
    training = trial(0)  # still in its stable phase: nothing to branch from yet
    assert open_trunk([training], per_trunk=3) is None
    trunk = trial(0, **{STABLE_EPOCHS: [3, 4]})
    assert open_trunk([trunk], per_trunk=3) is trunk
    assert open_trunk([trunk, branch_of(1, 0)], per_trunk=3) is trunk
    assert open_trunk([trunk, branch_of(1, 0), branch_of(2, 0)], per_trunk=3) is None


def test_a_pruned_trunk_takes_no_branches_and_the_oldest_open_one_comes_first() -> None:
    pruned = trial(0, TrialState.PRUNED, **{STABLE_EPOCHS: [3]})
    done = trial(1, TrialState.COMPLETE, **{STABLE_EPOCHS: [3]})
    later = trial(2, **{STABLE_EPOCHS: [3]})
    assert open_trunk([pruned, done, later], per_trunk=2) is done


def test_a_branch_and_its_retry_count_once_and_a_trunks_retry_is_the_trunk() -> None:
    trunk = trial(0, TrialState.FAIL, **{STABLE_EPOCHS: [3]})
    retry = trial(2, **{STABLE_EPOCHS: [3], RETRY_OF: 0})
    branch = branch_of(1, 0)
    branch_retry = trial(3, **{TRUNK: {"trial": 0, "epochs": [3]}, RETRY_OF: 1})
    assert open_trunk([trunk, branch, retry, branch_retry], per_trunk=3) is retry


def test_a_branch_takes_every_parameter_but_the_cooldown() -> None:
    assert branch_params(trial(0)) == {"lr": 0.1, "schedule": "wsd"}


def test_a_fresh_trial_branches_but_a_trial_from_the_queue_keeps_its_parameters(
    tmp_path: Path,
) -> None:
    """A retry taken while a trunk is open must not become that trunk's branch: its
    parameters are its own (and so are its checkpoint and seed)."""
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    data = {**BASE, "space": SPACE, "branches": {"per_trunk": 3}}
    launch(db, parse_config(data))
    handle = load(db, "t", worker=0)
    checkpoints = CheckpointStore(tmp_path, "t")
    branching = Branching(handle, checkpoints)
    study = handle.study
    trunk = study.ask()
    trunk_params = branching.sample(trunk)
    trunk.set_user_attr(PARAMS, trunk_params)  # as the worker stores them
    trunk.set_user_attr(STABLE_EPOCHS, [3])
    checkpoints.save(trunk.number, {"epoch": 3})
    checkpoints.keep_stable(trunk.number, 3)  # readable here: the trunk is open
    study.tell(trunk, 0.9)
    other = {**trunk_params, "lr": 0.02, "wsd.decay_fraction": 0.3}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params={k: other[k] for k in trunk.params},
            distributions=study.trials[0].distributions,
        )
    )
    retry = study.ask()  # the WAITING trial
    assert branching.sample(retry)["lr"] == 0.02 and TRUNK not in retry.user_attrs
    study.enqueue_trial({"lr": 0.03})  # `sweeps enqueue`: values of the user's own
    enqueued = study.ask()
    assert branching.sample(enqueued)["lr"] == 0.03 and trunk_of(enqueued) is None
    assert open_trunk(study.get_trials(), per_trunk=3) is not None  # it took no branch slot
    fresh = study.ask()
    params = branching.sample(fresh)
    assert fresh.user_attrs[TRUNK] == {"trial": trunk.number, "epochs": [3]}
    assert params["lr"] == trunk_params["lr"]
    db.engine.dispose()


def test_a_trunk_whose_checkpoints_cannot_be_read_here_takes_no_branches() -> None:
    trunk = trial(0, **{STABLE_EPOCHS: [3]})
    assert open_trunk([trunk], per_trunk=3, readable=lambda number: False) is None


def test_the_tree_counts_a_trial_and_its_retries_once() -> None:
    """A trunk opened by its retry, and a branch retried after it had started."""
    trunk = trial(0, TrialState.FAIL)
    trunk_retry = trial(1, TrialState.COMPLETE, **{STABLE_EPOCHS: [3], RETRY_OF: 0})
    branch = trial(2, TrialState.FAIL, **{TRUNK: {"trial": 0, "epochs": [3]}})
    branch_retry = trial(
        3, TrialState.COMPLETE, **{TRUNK: {"trial": 0, "epochs": [3]}, RETRY_OF: 2}
    )
    branch_retry.intermediate_values = {e: 0.5 for e in range(1, 7)}
    branch_retry.user_attrs[BRANCHED_AT] = 3
    found = tree([trunk, trunk_retry, branch, branch_retry])
    assert found["trunks"] == [{"trial": 0, "branches": [{"trial": 3, "branched_at": 3}]}]
    assert found["epochs_reused"] == 3


def test_a_kept_checkpoint_stays_as_it_was_when_the_trial_saves_again(tmp_path: Path) -> None:
    checkpoints = CheckpointStore(tmp_path, "t")
    checkpoints.save(0, {"epoch": 3})
    checkpoints.keep_stable(0, 3)
    checkpoints.save(0, {"epoch": 4})
    assert checkpoints.load_stable(0, 3) == {"epoch": 3}
    assert checkpoints.stable_epochs(0) == [3]
