"""`ask_batch`: K trials asked and sampled against one snapshot, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from storage import Database
from storage.optuna_internals import storage_of, study_id_of, trial_id_of
from storage.trial_slots import TrialSlots
from sweeps.batch_ask import ask_batch, room
from sweeps.config import parse_config
from sweeps.samplers import blind_trials


class SeeingSampler(optuna.samplers.RandomSampler):
    """Random sampling that records, per trial, the other trials' params it could see."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: dict[int, dict[str, list[dict[str, Any]]]] = {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        self.seen[trial.number] = {  # (batch mates not sampled yet have no params)
            state.name: [t.params for t in others if t.state == state and t.params]
            for state in (TrialState.COMPLETE, TrialState.RUNNING)
        }
        return super().sample_independent(study, trial, param_name, param_distribution)


def sample(trial: optuna.Trial) -> None:
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_categorical("kind", ["a", "b"])


def study_on(url: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(storage=url, study_name="t", sampler=sampler)


def take(study: optuna.Study) -> Callable[[], int]:
    """A claim that always succeeds: a queued trial, else a new one (as `study.ask`)."""

    def claim() -> int:
        storage, study_id = storage_of(study), study_id_of(study)
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if storage.set_trial_state_values(trial_id_of(t), TrialState.RUNNING):
                return trial_id_of(t)
        return storage.create_new_trial(study_id)

    return claim


def test_ask_batch_samples_against_finished_trials_and_earlier_batch_mates(
    storage_url: str,
) -> None:
    sampler = SeeingSampler()
    study = study_on(storage_url, sampler)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
    finished = [t.params for t in study.trials]

    batch = ask_batch(study, 3, claim=take(study), sample=sample)

    assert [t.number for t in batch] == [2, 3, 4]
    for i, trial in enumerate(batch):
        assert trial.study is study  # reports and pruning read the real storage
        seen = sampler.seen[trial.number]
        assert seen["COMPLETE"] == finished
        assert seen["RUNNING"] == [t.params for t in batch[:i]]  # the constant liar's view
    stored = optuna.load_study(study_name="t", storage=storage_url).trials
    assert [t.params for t in stored[2:]] == [t.params for t in batch]
    assert all(set(t.params) == {"x", "kind"} for t in stored[2:])


def test_ask_batch_takes_only_claimed_trials_and_stops_at_the_first_refusal(
    storage_url: str,
) -> None:
    study = study_on(storage_url, optuna.samplers.RandomSampler(seed=0))
    slots = [True, True, False, True]
    claims: list[bool] = []

    def claim() -> int | None:
        claims.append(slots[len(claims)])
        return take(study)() if claims[-1] else None

    batch = ask_batch(study, 4, claim=claim, sample=sample)
    assert len(batch) == 2 and claims == [True, True, False]
    assert len(study.trials) == 2
    assert ask_batch(study, 4, claim=lambda: None, sample=sample) == []
    assert len(study.trials) == 2


@pytest.mark.parametrize("size", [2, 5], ids=["fewer-than-queued", "more-than-queued"])
def test_ask_batch_takes_each_queued_trial_once(storage_url: str, size: int) -> None:
    study = study_on(storage_url, optuna.samplers.RandomSampler(seed=0))
    queued = [{"x": 0.25, "kind": "a"}, {"x": 0.5, "kind": "b"}, {"x": 0.75, "kind": "a"}]
    for params in queued:
        study.enqueue_trial(params)

    batch = ask_batch(study, size, claim=take(study), sample=sample)

    assert len(batch) == size
    assert [t.params for t in batch[:3]] == queued[:size]
    states = [t.state for t in study.trials]
    assert states.count(TrialState.RUNNING) == size
    assert states.count(TrialState.WAITING) == max(0, 3 - size)


@pytest.mark.parametrize(
    ("size", "training", "finished", "held", "learned"),
    [
        (16, 0, 0, 0, 1),
        (16, 1, 1, 2, 0),
        (16, 2, 5, 7, 3),
        (16, 10, 40, 50, 6),
        (1, 0, 9, 9, 1),
        (1, 1, 9, 10, 0),
        (4, 6, 20, 30, 0),  # more in training than a stack (a smaller --stack on resume)
    ],
)
def test_a_worker_ramps_up_to_as_many_trials_as_are_finished(
    size: int, training: int, finished: int, held: int, learned: int
) -> None:
    assert room(size, training, finished=finished, held=held, blind=0) == (learned, 0)


@pytest.mark.parametrize(
    ("size", "training", "held", "blind", "free"),
    [
        (16, 0, 0, 8, (1, 7)),  # the study's first worker starts all its blind trials
        (16, 0, 8, 8, (1, 0)),  # the next one ramps up as without
        (16, 0, 3, 8, (1, 4)),
        (4, 0, 0, 8, (1, 3)),  # no more than a stack
        (16, 2, 2, None, (0, 14)),  # nothing learns: a full stack at once
    ],
)
def test_a_worker_starts_the_trials_nothing_learns_from_at_once(
    size: int, training: int, held: int, blind: int | None, free: tuple[int, int]
) -> None:
    assert room(size, training, finished=0, held=held, blind=blind) == free


@pytest.mark.parametrize(
    ("sampler", "pruner", "blind"),
    [
        ({"name": "tpe", "n_startup_trials": 10}, {"name": "median", "n_startup_trials": 8}, 8),
        ({"name": "tpe", "n_startup_trials": 3}, {"name": "median", "n_startup_trials": 8}, 3),
        ({"name": "tpe"}, {"name": "median", "n_startup_trials": 2, "n_min_trials": 6}, 6),
        ({"name": "random"}, {"name": "percentile", "percentile": 25.0}, 5),
        ({"name": "random"}, {"name": "none"}, None),
        ({"name": "qmc"}, {"name": "none"}, None),
        ({"name": "gp"}, {"name": "none"}, 10),
        ({"name": "cmaes"}, {"name": "none"}, 1),
        ({"name": "tpe"}, {"name": "hyperband"}, 0),
        ({"name": "random"}, {"name": "wilcoxon"}, 0),
    ],
)
def test_blind_trials_are_those_sampler_and_pruner_learn_nothing_from(
    sampler: dict[str, Any], pruner: dict[str, Any], blind: int | None
) -> None:
    config = parse_config(
        {
            "study": "s",
            "objective": "digits_mlp",
            "budget": {"trials": 4, "epochs": 2},
            "sampler": sampler,
            "pruner": pruner,
            "space": {"lr": {"low": 0.01, "high": 0.1}, "schedule": {"constant": {}}},
        }
    )
    assert blind_trials(config) == blind


def test_a_batch_of_trials_created_outside_optuna_is_sampled_through_its_cache(
    tmp_path: Any,
) -> None:
    """Trials a claim creates in SQL are unknown to Optuna's storage cache until a read:
    each of a batch of 4 is still sampled and stored."""
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=db.optuna, study_name="t")
    study_id = db.rdb.get_study_id_from_name("t")
    db.set_budget(study_id, 4)
    slots = TrialSlots(db, study_id, retries=0)

    batch = ask_batch(study, 4, claim=slots.claim, sample=sample)

    assert len(batch) == 4
    assert all(set(t.params) == {"x", "kind"} for t in study.get_trials())
