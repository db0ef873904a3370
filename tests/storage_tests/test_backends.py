"""The contract of `storage.base`, as one suite over every backend (SQLite, PostgreSQL, Redis,
and a storage proxy's client): the budget counted in trials, claims, hand-backs, failures
with re-queued copies, heartbeats and stale trials, racing processes, reports and curves,
and the dashboard lease. What only one backend has is tested beside it
(`test_trial_slots.py`, `test_redis_journal.py`, `test_storage_proxy.py`)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from backends import Backend
from storage import StorageError, TrialReport, open_database
from storage.base import ATTEMPT, REASON, RETRY_OF, WORKER, BaseTrialSlots, Failure, Heartbeat
from sweeps_helpers import wait_until

# A silent trial is reaped after this; a beating one never is, even with its heartbeat
# thread 2 s late (SQLite's clock has whole seconds, which take one of the three).
GRACE_S = 3.0


def study_on(
    backend: Backend, budget: int, retries: int = 1
) -> tuple[optuna.Study, BaseTrialSlots]:
    study = optuna.create_study(storage=backend.db.optuna, study_name="t")
    study_id = backend.db.optuna.get_study_id_from_name("t")
    backend.launcher.set_budget(study_id, budget)
    return study, backend.db.trial_slots(study_id, retries=retries)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_claims_stop_at_the_budget_and_failures_give_slots_back(backend: Backend) -> None:
    study, slots = study_on(backend, budget=2, retries=0)
    a, b = slots.claim(), slots.claim()
    assert a is not None and b is not None and slots.claim() is None
    assert slots.fail(a, "boom") == (0, None)  # no retries: the slot goes back, none queued
    c = slots.claim()
    assert c is not None and slots.claim() is None
    study.tell(optuna.Trial(study, b), 1.0)
    study.tell(optuna.Trial(study, c), state=TrialState.PRUNED)
    assert slots.claim() is None  # COMPLETE and PRUNED trials keep their slots
    assert states(study) == ["FAIL", "COMPLETE", "PRUNED"]
    assert backend.db.budget(slots.study_id) == (2, 2)
    assert slots.counts() == {TrialState.FAIL: 1, TrialState.COMPLETE: 1, TrialState.PRUNED: 1}


def test_a_study_without_a_budget_is_refused(backend: Backend) -> None:
    optuna.create_study(storage=backend.db.optuna, study_name="plain")
    study_id = backend.db.optuna.get_study_id_from_name("plain")
    with pytest.raises(StorageError, match="no budget"):
        backend.db.budget(study_id)
    with pytest.raises(StorageError, match="no budget"):
        backend.db.trial_slots(study_id, retries=0).claim()


def test_a_capped_claim_counts_every_workers_slots(backend: Backend) -> None:
    """A stacked worker starts a study's blind trials with ``below``: racing workers
    together take no more than that, and uncapped claims go on to the budget."""
    study, first = study_on(backend, budget=6)
    second = backend.db.trial_slots(first.study_id, retries=1)
    taken = [slots.claim(below=3) for slots in (first, second, first, second)]
    assert taken[3] is None and None not in taken[:3]
    assert second.claim() is not None  # the budget, not the cap, bounds plain claims
    assert states(study).count("RUNNING") == 4


def test_a_claim_retried_with_its_token_takes_one_trial(backend: Backend) -> None:
    _, slots = study_on(backend, budget=5)
    trial_id = slots.claim(token="abc")
    assert trial_id is not None and slots.claim(token="abc") == trial_id
    assert slots.counts() == {TrialState.RUNNING: 1}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_failed_trial_is_requeued_with_its_params_while_retries_last(
    backend: Backend,
) -> None:
    study, slots = study_on(backend, budget=1, retries=1)
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


def test_a_handed_back_trial_is_taken_again_with_its_reports(backend: Backend) -> None:
    study, slots = study_on(backend, budget=1)
    trial_id = slots.claim()
    assert trial_id is not None
    trial = optuna.Trial(study, trial_id)
    trial.suggest_float("x", 0, 1)
    trial.report(0.5, 1)
    assert slots.hand_back(trial_id)
    assert not slots.hand_back(trial_id)  # no longer RUNNING
    assert states(study) == ["WAITING"]
    assert slots.claim() == trial_id
    (again,) = study.get_trials()
    assert again.state == TrialState.RUNNING and again.intermediate_values == {1: 0.5}
    assert again.params == trial.params


def test_silent_trials_are_failed_and_requeued_beaten_ones_are_not(backend: Backend) -> None:
    study, slots = study_on(backend, budget=3)
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


def _claim_until_full(url: str, study_id: int, start: Any, out: Any) -> None:
    slots = open_database(url).trial_slots(study_id, retries=0)
    start.wait()  # every process ready: they claim at the same time
    while (trial_id := slots.claim()) is not None:
        out.put(trial_id)
    out.put(None)


def test_racing_processes_claim_exactly_the_budget(backend: Backend) -> None:
    study, slots = study_on(backend, budget=30)
    spawn = multiprocessing.get_context("spawn")
    out: Any = spawn.Queue()
    start: Any = spawn.Barrier(3)
    procs = [
        spawn.Process(target=_claim_until_full, args=(backend.url, slots.study_id, start, out))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    results = []
    while results.count(None) < len(procs):
        results.append(out.get(timeout=120))
    for p in procs:
        p.join(timeout=120)
    taken = [r for r in results if r is not None]
    assert len(taken) == len(set(taken)) == 30
    assert slots.counts() == {TrialState.RUNNING: 30}
    assert sorted(t.number for t in study.get_trials()) == list(range(30))


def test_reports_and_curves_are_stored_once_and_finished_trials_refused(
    backend: Backend,
) -> None:
    study, slots = study_on(backend, budget=3)
    db = backend.db
    a, b = slots.claim(), slots.claim()
    assert a is not None and b is not None
    step = {"step": 0, "lr": 0.1, "train_loss": 2.0, "grad_norm": None}
    reports = [TrialReport(t, 1, 0.5, 0.9, [step]) for t in (a, b)]
    study.tell(optuna.Trial(study, b), 1.0)
    assert db.add_reports(reports) == {b}
    assert db.add_reports(reports[:1]) == set()  # a retried write stores nothing twice
    db.add_curves(a, [{**step, "lr": 0.2}, {**step, "step": 1}], [])  # step 0 is kept
    assert [(p.step, p.lr) for p in db.step_curve(a)] == [(0, 0.1), (1, 0.1)]
    assert [(p.epoch, p.value, p.val_loss) for p in db.epoch_curve(a)] == [(1, 0.5, 0.9)]
    assert db.epoch_curve(b) == db.step_curve(b) == []
    assert study.trials[0].intermediate_values == {1: 0.5}


def test_one_process_at_a_time_refreshes_the_dashboard(backend: Backend) -> None:
    _, slots = study_on(backend, budget=1)
    db, sid = backend.db, slots.study_id
    assert db.claim_publication(sid, now=100.0, every=10.0, lease=60.0)
    assert not db.claim_publication(sid, now=101.0, every=10.0, lease=60.0)  # leased
    db.end_publication(sid, now=102.0)
    assert not db.claim_publication(sid, now=105.0, every=10.0, lease=60.0)  # too soon
    assert db.claim_publication(sid, now=112.0, every=10.0, lease=60.0)
    assert db.claim_publication(sid, now=200.0, every=0.0, lease=60.0)  # the lease lapsed
