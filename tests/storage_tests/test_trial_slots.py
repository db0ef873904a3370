"""What only the SQL backend's `TrialSlots` has: Optuna's cache learning of a claimed trial, and
a claim whose commit's acknowledgement is lost; on SQLite and PostgreSQL. The contract every
backend keeps is tested in `test_backends.py`."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from storage import Database
from storage.optuna_internals import trial_id_of
from storage.trial_slots import TrialSlots


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
    assert [trial_id_of(t) for t in study.get_trials()] == [trial_id]
