"""The SQL backend's trial slots (`storage.base.BaseTrialSlots`): each change is one
transaction, so a worker killed at any instant leaves the study consistent, and any number
of racing workers finish exactly the budget.

The budget counts trials, not claims: a trial holds a slot while RUNNING and once it ends
COMPLETE or PRUNED; a FAILed or WAITING (queued, handed back) trial holds none. A claim
locks the study's budget row, counts, and takes a WAITING trial or creates a new one, all in
one transaction. A failed trial is marked FAIL and, while its retries last, re-queued as a
WAITING copy with the same parameters in that same transaction, so its slot can never be
taken by a new trial in between. The copy's attributes follow Optuna's
``RetryHeartbeatStaleTrialCallback`` (``failed_trial``, ``retry_history``), and it resumes
from the checkpoint its first attempt saved (`storage.checkpoints`, keyed by `RETRY_OF`).

Heartbeats live in Optuna's own ``trial_heartbeats`` table, compared against the database's
clock (never a worker's): a RUNNING trial whose worker has been silent for the grace period
is stale, and any worker fails and re-queues it (`TrialSlots.reap_stale`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.base import (
    CLAIM,
    REASON,
    WORKER,
    BaseTrialSlots,
    Failure,
    StorageError,
    claim_retried,
    full,
    retry_copy,
    stale_reason,
)
from storage.database import Database, held_slots
from storage.optuna_internals import add_trial, frozen_trial, models, set_user_attr
from storage.resilience import retried
from storage.tables import Budget


class TrialSlots(BaseTrialSlots):
    """The trials of study ``study_id`` in the SQL ``db``."""

    db: Database

    # Taking and giving back ------------------------------------------------------------

    def claim(self, token: str | None = None, *, below: int | None = None) -> int | None:
        return claim_retried(self._take, token, below)

    def _take(self, token: str, looks: bool, below: int | None) -> int | None:
        """One attempt of `claim`, in one transaction; ``looks``: first look for the trial
        an earlier attempt with ``token`` took."""
        with self.db.session() as s:
            if looks and (taken := self._claimed_with(s, token)) is not None:
                return taken
            budget = self._lock_budget(s)  # first: the count must see every claim
            if full(held_slots(s, self.study_id), budget, below):
                return None
            waiting = s.scalars(
                select(models.TrialModel)
                .where(
                    models.TrialModel.study_id == self.study_id,
                    models.TrialModel.state == TrialState.WAITING,
                )
                .order_by(models.TrialModel.number)
                .limit(1)
                .with_for_update()
            ).first()
            if waiting is not None:
                waiting.state = TrialState.RUNNING
                waiting.datetime_start = datetime.datetime.now()
                trial_id = int(waiting.trial_id)
                self._forget_claim(s, trial_id)  # a handed-back trial's earlier one
            else:
                new = add_trial(self._rdb, s, self.study_id, None)
                trial_id = int(new.trial_id)
            s.add(
                models.TrialSystemAttributeModel(
                    trial_id=trial_id, key=CLAIM, value_json=json.dumps(token)
                )
            )
            s.add(
                models.TrialUserAttributeModel(
                    trial_id=trial_id, key=WORKER, value_json=json.dumps(self.worker)
                )
            )
            s.add(models.TrialHeartbeatModel(trial_id=trial_id))
            return trial_id

    @retried  # (a handed-back trial's heartbeat row stays until a claim takes it again)
    def hand_back(self, trial_id: int) -> bool:
        with self.db.session() as s:
            changed = s.execute(
                update(models.TrialModel)
                .where(
                    models.TrialModel.trial_id == trial_id,
                    models.TrialModel.state == TrialState.RUNNING,
                )
                .values(state=TrialState.WAITING)
            )
            return bool(changed.rowcount == 1)  # type: ignore[attr-defined]

    @retried
    def fail(self, trial_id: int, reason: str) -> Failure | None:
        with self.db.session() as s:
            self._lock_budget(s)
            return self._fail(s, trial_id, reason)

    def _fail(self, s: Session, trial_id: int, reason: str) -> Failure | None:
        trial = s.get(models.TrialModel, trial_id, with_for_update=True)
        if trial is None or trial.state != TrialState.RUNNING:
            return None
        set_user_attr(self._rdb, s, trial_id, REASON, reason[:2000])  # while RUNNING
        trial.state = TrialState.FAIL
        trial.datetime_complete = datetime.datetime.now()
        s.flush()
        failed = frozen_trial(self._rdb, trial)
        copy = retry_copy(failed, self.retries)
        if copy is None:
            return Failure(failed.number, None)
        retry = add_trial(self._rdb, s, self.study_id, copy)
        return Failure(failed.number, int(retry.number))

    # Heartbeats --------------------------------------------------------------------------

    def beat(self, trial_ids: Iterable[int]) -> None:
        """Record that this process still runs ``trial_ids``."""
        ids = list(trial_ids)
        if not ids:
            return
        with self.db.session() as s:
            s.execute(
                update(models.TrialHeartbeatModel)
                .where(models.TrialHeartbeatModel.trial_id.in_(ids))
                .values(heartbeat=func.current_timestamp())
            )

    @retried  # a retry after a lost answer finds the trials failed, and fails no more
    def reap_stale(self, grace_period: float) -> list[Failure]:
        """Fail every RUNNING trial silent for over ``grace_period`` seconds and re-queue it.

        A RUNNING trial without a heartbeat (its worker died between taking it and its first
        beat, or it was started outside lr-sweeps) is given one now, so it is judged one
        grace period later like any other.

        Returns:
            The trials this call failed (not those another worker failed first).
        """
        with self.db.session() as s:
            now = _naive(s.execute(select(func.now())).scalar_one())
            rows = s.execute(
                select(models.TrialModel.trial_id, models.TrialHeartbeatModel.heartbeat)
                .outerjoin(models.TrialHeartbeatModel)
                .where(
                    models.TrialModel.study_id == self.study_id,
                    models.TrialModel.state == TrialState.RUNNING,
                )
            ).all()
            unbeaten = [{"trial_id": trial_id} for trial_id, beat in rows if beat is None]
            if unbeaten:
                s.execute(self.db.insert_ignoring_duplicates(models.TrialHeartbeatModel), unbeaten)
        stale = [
            trial_id
            for trial_id, beat in rows
            if beat is not None and (now - _naive(beat)).total_seconds() > grace_period
        ]
        reason = stale_reason(grace_period)
        return [f for f in (self.fail(trial_id, reason) for trial_id in stale) if f is not None]

    # Reading -----------------------------------------------------------------------------

    @retried
    def counts(self) -> dict[TrialState, int]:
        """Trials by state."""
        with self.db.session() as s:
            rows = s.execute(
                select(models.TrialModel.state, func.count())
                .where(models.TrialModel.study_id == self.study_id)
                .group_by(models.TrialModel.state)
            ).all()
        return {state: int(n) for state, n in rows}

    # -------------------------------------------------------------------------------------

    @property
    def _rdb(self) -> optuna.storages.RDBStorage:
        return self.db.rdb

    def _lock_budget(self, s: Session) -> int:
        """Lock the study's budget row (claims and failures then happen one at a time; on
        SQLite this takes the write lock before anything is read) and the study's row (as
        Optuna does to number a new trial); return the budget."""
        trials = s.scalar(
            update(Budget)
            .where(Budget.study_id == self.study_id)
            .values(trials=Budget.trials)
            .returning(Budget.trials)
        )
        if trials is None:
            raise StorageError(f"study {self.study_id} has no budget; was it launched by sweeps?")
        models.StudyModel.find_or_raise_by_id(self.study_id, s, for_update=True)
        return int(trials)

    def _forget_claim(self, s: Session, trial_id: int) -> None:
        """Remove a trial's claim token, worker and heartbeat (before it is claimed anew)."""
        for table, key in (
            (models.TrialSystemAttributeModel, CLAIM),
            (models.TrialUserAttributeModel, WORKER),
        ):
            s.execute(delete(table).where(table.trial_id == trial_id, table.key == key))
        s.execute(
            delete(models.TrialHeartbeatModel).where(
                models.TrialHeartbeatModel.trial_id == trial_id
            )
        )

    def _claimed_with(self, s: Session, token: str) -> int | None:
        trial_id = s.scalar(
            select(models.TrialSystemAttributeModel.trial_id).where(
                models.TrialSystemAttributeModel.key == CLAIM,
                models.TrialSystemAttributeModel.value_json == json.dumps(token),
            )
        )
        return None if trial_id is None else int(trial_id)


def _naive(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(tzinfo=None)
