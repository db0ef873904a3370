"""Studies on Redis (`storage.redis_journal`): the trial slots' guarantees, curves and the
dashboard lease, on a real throwaway Redis server that tests stop and restart."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import optuna
import pytest
import redis
from optuna.trial import TrialState

from redis_server import RedisServer
from storage import TrialReport, open_database
from storage.redis_journal import RedisDatabase
from storage.trial_slots import ATTEMPT, REASON, RETRY_OF, Failure, TrialSlots
from sweeps_helpers import rounds_around_an_outage, wait_until

# A silent trial is reaped after this; a beating one never is, however slow the machine.
GRACE_S = 2.0


def slots_on(url: str, budget: int, retries: int = 1) -> tuple[optuna.Study, TrialSlots]:
    db = open_database(url)
    assert isinstance(db, RedisDatabase)
    study = optuna.create_study(storage=db.optuna, study_name="t")
    study_id = db.optuna.get_study_id_from_name("t")
    db.set_budget(study_id, budget)
    return study, db.trial_slots(study_id, retries=retries)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_claims_stop_at_the_budget_and_failures_requeue_with_params(redis_url: str) -> None:
    study, slots = slots_on(redis_url, budget=2, retries=1)
    a, b = slots.claim(), slots.claim()
    assert a is not None and b is not None and slots.claim() is None
    optuna.Trial(study, a).suggest_float("lr", 0.01, 0.1)
    failed = slots.fail(a, "boom")
    assert failed is not None and failed.retry == 2
    retry = slots.claim()  # the queued copy, before any new trial
    assert retry is not None and slots.claim() is None
    copy = study._storage.get_trial(retry)
    assert copy.params == study.trials[0].params
    assert copy.user_attrs[ATTEMPT] == 2 and copy.user_attrs[RETRY_OF] == 0
    assert study.trials[0].user_attrs[REASON] == "boom"
    assert slots.fail(retry, "again") == (2, None)  # retries spent: nothing queued
    study.tell(optuna.Trial(study, b), 1.0)
    assert states(study) == ["FAIL", "COMPLETE", "FAIL"]
    assert slots.db.budget(slots.study_id) == (2, 1)


def test_handed_back_trials_are_taken_again_and_claims_count_every_worker(
    redis_url: str,
) -> None:
    study, first = slots_on(redis_url, budget=5)
    second = first.db.trial_slots(first.study_id, retries=1)
    taken = [slots.claim(below=3) for slots in (first, second, first, second)]
    assert taken[3] is None and None not in taken[:3]
    assert taken[0] is not None and first.hand_back(taken[0])
    assert not first.hand_back(taken[0])  # no longer RUNNING
    assert second.claim() == taken[0]  # the WAITING trial first
    assert first.counts() == {TrialState.RUNNING: 3}


def test_a_claim_retried_with_its_token_takes_one_trial(redis_url: str) -> None:
    _, slots = slots_on(redis_url, budget=5)
    trial_id = slots.claim(token="abc")
    assert slots.claim(token="abc") == trial_id
    assert slots.counts() == {TrialState.RUNNING: 1}


def test_silent_trials_are_failed_and_requeued_beaten_ones_are_not(redis_url: str) -> None:
    study, slots = slots_on(redis_url, budget=4)
    silent, beaten = slots.claim(), slots.claim()
    assert silent is not None and beaten is not None
    reaped: list[Failure] = []

    def silent_reaped() -> bool:
        slots.beat([beaten])  # just before each look: never silent for GRACE_S
        reaped.extend(slots.reap_stale(GRACE_S))
        return bool(reaped)

    wait_until(silent_reaped)
    assert [f.number for f in reaped] == [0] and reaped[0].retry == 2
    assert states(study) == ["FAIL", "RUNNING", "WAITING"]
    assert slots.reap_stale(GRACE_S) == []  # failed once only


def _claim_until_full(url: str, study_id: int, start: Any, out: Any) -> None:
    slots = open_database(url).trial_slots(study_id, retries=0)
    start.wait()  # every process ready: they claim at the same time
    while (trial_id := slots.claim()) is not None:
        out.put(trial_id)


def test_racing_processes_claim_exactly_the_budget(redis_url: str) -> None:
    _, slots = slots_on(redis_url, budget=60)
    spawn = multiprocessing.get_context("spawn")
    out: Any = spawn.Queue()
    start: Any = spawn.Barrier(4)
    procs = [
        spawn.Process(target=_claim_until_full, args=(redis_url, slots.study_id, start, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    taken = [out.get(timeout=120) for _ in range(60)]
    for p in procs:
        p.join(timeout=120)
    assert sorted(taken) == sorted(set(taken))
    assert slots.counts() == {TrialState.RUNNING: 60}


def test_reports_and_curves_are_stored_once_and_finished_trials_refused(
    redis_url: str,
) -> None:
    study, slots = slots_on(redis_url, budget=3)
    db = slots.db
    a, b = slots.claim(), slots.claim()
    assert a is not None and b is not None
    step = {"step": 0, "lr": 0.1, "train_loss": 2.0, "grad_norm": None}
    reports = [TrialReport(t, 1, 0.5, 0.9, [step]) for t in (a, b)]
    study.tell(optuna.Trial(study, b), 1.0)
    assert db.add_reports(reports) == {b}
    assert db.add_reports(reports[:1]) == set()  # a retried write stores nothing twice
    assert [(p.step, p.lr) for p in db.step_curve(a)] == [(0, 0.1)]
    assert [(p.epoch, p.value, p.val_loss) for p in db.epoch_curve(a)] == [(1, 0.5, 0.9)]
    assert db.epoch_curve(b) == [] and study.trials[0].intermediate_values == {1: 0.5}


def test_one_process_at_a_time_refreshes_the_dashboard(redis_url: str) -> None:
    _, slots = slots_on(redis_url, budget=1)
    db, sid = slots.db, slots.study_id
    assert db.claim_publication(sid, now=100.0, every=10.0, lease=60.0)
    assert not db.claim_publication(sid, now=101.0, every=10.0, lease=60.0)  # leased
    db.end_publication(sid, now=102.0)
    assert not db.claim_publication(sid, now=105.0, every=10.0, lease=60.0)  # too soon
    assert db.claim_publication(sid, now=112.0, every=10.0, lease=60.0)
    assert db.claim_publication(sid, now=200.0, every=0.0, lease=60.0)  # the lease lapsed


def test_claims_and_writes_ride_out_a_redis_restart(redis_server: RedisServer) -> None:
    url = redis_server.url(1)
    redis.Redis.from_url(url).flushdb()
    study, slots = slots_on(url, budget=1000)
    taken: list[int] = []

    def one_round() -> None:
        trial_id = slots.claim()
        assert trial_id is not None
        taken.append(trial_id)
        slots.db.add_reports([TrialReport(trial_id, 1, 0.5, None, [])])
        study.tell(optuna.Trial(study, trial_id), 1.0)
        assert slots.reap_stale(60.0) == []

    rounds = rounds_around_an_outage(one_round, stop=redis_server.stop, start=redis_server.start)
    trials = optuna.load_study(study_name="t", storage=open_database(url).optuna).trials
    assert len(trials) == len(taken) == rounds
    assert all(
        t.state == TrialState.COMPLETE and t.intermediate_values == {1: 0.5} for t in trials
    )


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_plain_optuna_reads_the_study(redis_url: str) -> None:
    study, slots = slots_on(redis_url, budget=2)
    trial_id = slots.claim()
    assert trial_id is not None
    study.tell(optuna.Trial(study, trial_id), 0.75)
    from optuna.storages.journal import JournalRedisBackend, JournalStorage

    plain = optuna.load_study(
        study_name="t", storage=JournalStorage(JournalRedisBackend(redis_url))
    )
    assert [t.value for t in plain.trials] == [0.75]


def test_a_holder_whose_lock_expired_cannot_claim_past_the_budget(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that stalls past the lock's expiry (a paused VM, a stalled socket) decided on
    a stale count; its write is refused (`LockLost`) and its retry sees the budget full."""
    import storage.redis_journal as redis_journal

    monkeypatch.setattr(redis_journal, "LOCK_SECONDS", 1)
    study, slow = slots_on(redis_url, budget=1)
    fast = slow.db.trial_slots(slow.study_id, retries=1)
    read_budget = slow.db.budget_trials
    stalled, fast_claimed = threading.Event(), threading.Event()

    def stalling(study_id: int) -> int:
        if not stalled.is_set():
            stalled.set()
            fast_claimed.wait(60)  # meanwhile the lock expires, and `fast` takes it
        return read_budget(study_id)

    monkeypatch.setattr(slow.db, "budget_trials", stalling)
    taken: list[int | None] = []
    thread = threading.Thread(target=lambda: taken.append(slow.claim()))
    thread.start()
    try:
        assert stalled.wait(60)
        wait_until(lambda: not slow.db.redis.exists(f"sweeps:{slow.study_id}:lock"))
        assert fast.claim() is not None
    finally:
        fast_claimed.set()
        thread.join()
    assert taken == [None]
    assert slow.counts() == {TrialState.RUNNING: 1}


def test_a_claim_cut_off_midway_leaves_the_waiting_trial_to_its_retry(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, slots = slots_on(redis_url, budget=3)
    study.enqueue_trial({})
    journal = slots.db.journal
    write_worker = journal.set_trial_user_attr
    cut = {"done": False}

    def cut_once(*args: Any) -> None:
        if not cut["done"]:
            cut["done"] = True
            raise redis.ConnectionError("cut off")  # after the token, before RUNNING
        write_worker(*args)

    monkeypatch.setattr(journal, "set_trial_user_attr", cut_once)
    trial_id = slots.claim()  # retried: takes the same queued trial
    assert trial_id == study.trials[0]._trial_id
    assert states(study) == ["RUNNING"]


def test_a_reaper_racing_the_owners_tell_leaves_the_trial_complete(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, slots = slots_on(redis_url, budget=2)
    trial_id = slots.claim()
    assert trial_id is not None
    journal = slots.db.journal
    write_reason = journal.set_trial_user_attr

    def told_meanwhile(*args: Any) -> None:
        study.tell(optuna.Trial(study, trial_id), 1.0)  # the owner finishes in between
        write_reason(*args)

    monkeypatch.setattr(journal, "set_trial_user_attr", told_meanwhile)
    assert slots.fail(trial_id, "stale") is None
    assert states(study) == ["COMPLETE"]


def test_a_retry_a_cut_off_failure_left_unqueued_is_queued_by_the_next_reaping(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, slots = slots_on(redis_url, budget=2, retries=1)
    trial_id = slots.claim()
    assert trial_id is not None
    journal = slots.db.journal
    monkeypatch.setattr(
        journal, "create_new_trial", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt):  # the worker dies between FAIL and its retry
        slots.fail(trial_id, "boom")
    monkeypatch.undo()
    assert states(study) == ["FAIL"]
    (requeued,) = slots.reap_stale(60.0)
    assert requeued == (0, 1)
    assert states(study) == ["FAIL", "WAITING"]
    assert slots.reap_stale(60.0) == []  # queued once
