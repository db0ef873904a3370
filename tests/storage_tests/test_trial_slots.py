"""`TrialSlots`: the budget counted in trials, claims, hand-backs, failures with re-queued
copies, heartbeats and stale trials; on SQLite and PostgreSQL, with racing processes."""

from __future__ import annotations

import multiprocessing
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from storage import Database
from storage.trial_slots import (
    ATTEMPT,
    REASON,
    RETRY_OF,
    WORKER,
    Failure,
    Heartbeat,
    TrialSlots,
)
from sweeps_helpers import wait_until

# A silent trial is reaped after this; a beating one never is, even with its heartbeat
# thread 2 s late (SQLite's clock has whole seconds, which take one of the three).
GRACE_S = 3.0


def slots_on(url: str, budget: int, retries: int = 1) -> tuple[optuna.Study, TrialSlots]:
    db = Database(url)
    study = optuna.create_study(storage=db.optuna, study_name="t")
    study_id = db.rdb.get_study_id_from_name("t")
    db.set_budget(study_id, budget)
    return study, TrialSlots(db, study_id, retries=retries)


def test_a_claimed_trial_takes_parameters_through_a_cache_that_never_read_it(
    storage_url: str,
) -> None:
    """A storage proxy restarted between a claim and the sampling has a fresh Optuna cache
    that never listed the claimed trial; its parameter writes still find it."""
    _, slots = slots_on(storage_url, budget=2)
    trial_id = slots.claim()
    assert trial_id is not None
    fresh = Database(storage_url)  # as the restarted proxy's
    fresh.optuna.set_trial_param(trial_id, "lr", 0.1, optuna.distributions.FloatDistribution(0, 1))
    assert fresh.optuna.get_trial(trial_id).params == {"lr": 0.1}
    with pytest.raises(KeyError):
        fresh.optuna.set_trial_param(
            10_000, "lr", 0.1, optuna.distributions.FloatDistribution(0, 1)
        )


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_claims_stop_at_the_budget_and_failures_give_slots_back(storage_url: str) -> None:
    study, slots = slots_on(storage_url, budget=2, retries=0)
    a, b = slots.claim(), slots.claim()
    assert a is not None and b is not None and slots.claim() is None
    slots.fail(a, "boom")  # no retries: the slot goes back, nothing is queued
    c = slots.claim()
    assert c is not None and slots.claim() is None
    study.tell(optuna.Trial(study, b), 1.0)
    study.tell(optuna.Trial(study, c), state=TrialState.PRUNED)
    assert slots.claim() is None  # COMPLETE and PRUNED trials keep their slots
    assert states(study) == ["FAIL", "COMPLETE", "PRUNED"]
    assert slots.db.budget(slots.study_id) == (2, 2)


def test_a_capped_claim_counts_every_workers_slots(storage_url: str) -> None:
    """A stacked worker starts a study's blind trials with ``below``: racing workers
    together take no more than that, and uncapped claims go on to the budget."""
    study, first = slots_on(storage_url, budget=6)
    second = TrialSlots(first.db, first.study_id, retries=1)
    taken = [slots.claim(below=3) for slots in (first, second, first, second)]
    assert taken[3] is None and None not in taken[:3]
    assert second.claim() is not None  # the budget, not the cap, bounds plain claims
    assert states(study).count("RUNNING") == 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_failed_trial_is_requeued_with_its_params_while_retries_last(
    storage_url: str,
) -> None:
    study, slots = slots_on(storage_url, budget=1, retries=1)
    first = slots.claim()
    assert first is not None
    trial = optuna.Trial(study, first)
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    trial.set_user_attr("sweeps:params", {"lr": trial.params["lr"]})

    assert slots.fail(first, "preempted") == (0, 1)  # trial 0 failed, re-queued as 1
    assert slots.fail(first, "again") is None  # no longer RUNNING: nothing happens twice
    retry = slots.claim()  # the queued copy, not a new trial, takes the freed slot
    assert retry is not None and slots.claim() is None
    failed, copy = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs[REASON] == "preempted"
    assert copy.state == TrialState.RUNNING and copy.params == failed.params
    assert copy.user_attrs == {
        "sweeps:params": failed.user_attrs["sweeps:params"],
        ATTEMPT: 2,
        RETRY_OF: 0,
        WORKER: slots.worker,  # who took it: this process
    }
    # Optuna's own reading of a retry's history works on ours.
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(copy) == 0
    assert RetryHeartbeatStaleTrialCallback.retry_history(copy) == [0]

    assert slots.fail(retry, "preempted again") == (1, None)  # attempt 2 of 2: spent
    assert states(study) == ["FAIL", "FAIL"]
    assert slots.claim() is not None  # the slot went back to the budget


def test_a_handed_back_trial_is_taken_again_with_its_reports(storage_url: str) -> None:
    study, slots = slots_on(storage_url, budget=1)
    trial_id = slots.claim()
    assert trial_id is not None
    trial = optuna.Trial(study, trial_id)
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 1)
    assert slots.hand_back(trial_id)
    assert not slots.hand_back(trial_id)
    assert states(study) == ["WAITING"]
    assert slots.claim() == trial_id
    (again,) = study.get_trials()
    assert again.state == TrialState.RUNNING and again.intermediate_values == {1: 0.5}
    assert again.params == trial.params


def test_silent_trials_are_failed_and_requeued_beaten_ones_are_not(storage_url: str) -> None:
    study, slots = slots_on(storage_url, budget=3)
    silent, beaten = slots.claim(), slots.claim()
    assert silent is not None and beaten is not None
    outside = study.ask()  # RUNNING with no heartbeat at all: judged from its first sighting
    reaped: list[Failure] = []

    def reaped_at_least(n: int) -> bool:
        reaped.extend(slots.reap_stale(grace_period=GRACE_S))
        return len(reaped) >= n

    with Heartbeat(slots, interval=0.2) as heart:
        heart.watch(beaten)
        assert slots.reap_stale(grace_period=GRACE_S) == []  # `outside` is sighted here
        wait_until(lambda: reaped_at_least(2))  # `silent` first, `outside` a little later
    assert sorted(reaped) == [(0, 3), (outside.number, 4)]
    assert states(study) == ["FAIL", "RUNNING", "FAIL", "WAITING", "WAITING"]
    assert study.trials[0].user_attrs[REASON].startswith("stale: no heartbeat")
    wait_until(lambda: reaped_at_least(3))  # the heartbeat has stopped
    assert reaped[2:] == [(1, 5)]


def _race(url: str, claims: list[int | None], n: int) -> None:
    db = Database(url)
    study_id = db.rdb.get_study_id_from_name("t")
    slots = TrialSlots(db, study_id, retries=0)
    claims.extend([slots.claim() for _ in range(n)])


def test_racing_processes_claim_exactly_the_budget(storage_url: str) -> None:
    study, _ = slots_on(storage_url, budget=10)
    with multiprocessing.Manager() as manager:
        claims: Any = manager.list()
        procs = [
            multiprocessing.get_context("spawn").Process(
                target=_race, args=(storage_url, claims, 6)
            )
            for _ in range(3)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        taken = [c for c in claims if c is not None]
    assert len(taken) == len(set(taken)) == 10
    numbers = sorted(t.number for t in study.get_trials())
    assert numbers == list(range(10))  # no trial number handed out twice


def test_a_claim_retried_after_a_lost_acknowledgement_takes_one_trial(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit reaches the database, but its acknowledgement is lost: the retry finds the
    trial its first attempt took instead of taking a second."""
    study, slots = slots_on(storage_url, budget=5)
    commit = Session.commit
    lost: list[bool] = []

    def commit_then_lose_the_ack(session: Session) -> None:
        commit(session)
        if not lost:
            lost.append(True)
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("connection lost"))

    monkeypatch.setattr(Session, "commit", commit_then_lose_the_ack)
    trial_id = slots.claim()
    monkeypatch.undo()
    assert lost and trial_id is not None
    assert [t._trial_id for t in study.get_trials()] == [trial_id]
