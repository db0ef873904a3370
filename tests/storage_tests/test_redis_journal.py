"""What only Redis studies (`storage.redis_journal`) have, on a real throwaway Redis server
that tests stop and restart: riding out a restart, the lock as a fence, claims and failures
cut off between journal entries, plain Optuna reading the study. The contract every backend
keeps is tested in `test_backends.py`."""

from __future__ import annotations

import threading
from typing import Any

import optuna
import pytest
import redis
from optuna.trial import TrialState

from redis_server import RedisServer
from storage import TrialReport, open_database
from storage.optuna_internals import trial_id_of
from storage.redis_journal import RedisDatabase, RedisTrialSlots
from sweeps_helpers import rounds_around_an_outage, wait_until


def slots_on(url: str, budget: int, retries: int = 1) -> tuple[optuna.Study, RedisTrialSlots]:
    db = open_database(url)
    assert isinstance(db, RedisDatabase)
    study = optuna.create_study(storage=db.optuna, study_name="t")
    study_id = db.optuna.get_study_id_from_name("t")
    db.set_budget(study_id, budget)
    return study, db.trial_slots(study_id, retries=retries)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


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
    assert trial_id == trial_id_of(study.trials[0])
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
