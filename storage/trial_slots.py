"""A study's trials as slots of its budget: claimed, kept alive by heartbeats, handed back,
or failed and re-queued. Each change is one transaction, so a worker killed at any instant
leaves the study consistent, and any number of racing workers finish exactly the budget.

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
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.database import Database, StorageError, used_slots
from storage.optuna_internals import add_trial, frozen_trial, models, set_user_attr
from storage.resilience import retried, retrying
from storage.tables import Budget

# Trial user attrs (plain Optuna and optuna-dashboard show them).
ATTEMPT = "sweeps:attempt"  # 1 for a first try, 2 for its first retry, ...
RETRY_OF = "sweeps:retry_of"  # the first attempt's trial number
REASON = "sweeps:reason"  # why a trial was pruned, failed or re-queued
WORKER = "sweeps:worker"  # host:pid of the worker that took the trial last
CLAIM = "sweeps:claim"  # system attr: the token of the claim that took the trial
STALE = "stale: "  # how a reaped trial's reason begins: its worker was lost, not its code


def stale_reason(grace_period: float) -> str:
    return f"{STALE}no heartbeat for over {grace_period:g} s (its worker was lost)"


class Failure(NamedTuple):
    """A trial failed: its number, and its re-queued copy's (None: no retries left)."""

    number: int
    retry: int | None


class TrialSlots:
    """The trials of study ``study_id`` in ``db``; a failed trial is re-queued while its
    attempts number at most ``retries + 1``."""

    def __init__(
        self, db: Database, study_id: int, *, retries: int, worker: str | None = None
    ) -> None:
        """``worker``: stored on the trials it takes (default: this process, ``host:pid``)."""
        self.db = db
        self.study_id = study_id
        self.retries = retries
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"

    # Taking and giving back ------------------------------------------------------------

    def claim(self, token: str | None = None, *, below: int | None = None) -> int | None:
        """Take a slot: the oldest WAITING trial, else a new one, now RUNNING with a fresh
        heartbeat. None when the budget is full (finished and running trials fill it), or
        when the study holds ``below`` slots already (`sweeps.batch_ask.room`: a stacked
        worker starting the study's blind trials, counted across all workers).

        Retried through outages; a retry first looks for the trial an earlier attempt may
        have taken before its acknowledgement was lost (by the claim's token). A caller that
        retries itself (`storage.remote`) gives the same ``token`` each time.
        """
        caller_retries = token is not None  # its earlier call may have taken a trial
        token = token or uuid.uuid4().hex
        attempts = 0

        def attempt() -> int | None:
            nonlocal attempts
            attempts += 1
            return self._take(token, looks=caller_retries or attempts > 1, below=below)

        return retrying(attempt, what="claim a trial")

    def _take(self, token: str, *, looks: bool, below: int | None) -> int | None:
        """One attempt of `claim`, in one transaction; ``looks``: first look for the trial
        an earlier attempt with ``token`` took."""
        with self.db.session() as s:
            if looks and (taken := self._claimed_with(s, token)) is not None:
                return taken
            budget = self._lock_budget(s)  # first: the count must see every claim
            if full(used_slots(s, self.study_id), budget, below):
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

    def hand_back(self, trial_id: int) -> bool:
        """RUNNING -> WAITING, for another worker to resume from its checkpoint (a worker
        told to stop). False if the trial is no longer RUNNING. (Its heartbeat row stays
        until a claim takes it again: only RUNNING trials are judged stale.)"""
        return retrying(lambda: self._hand_back(trial_id), what="hand back a trial")

    def _hand_back(self, trial_id: int) -> bool:
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

    def fail(self, trial_id: int, reason: str) -> Failure | None:
        """RUNNING -> FAIL with ``reason``, and a WAITING copy of it queued while retries
        last. None if the trial is no longer RUNNING (another worker failed it first, or it
        finished): nothing changes."""
        return retrying(lambda: self._fail_once(trial_id, reason), what="fail a trial")

    def _fail_once(self, trial_id: int, reason: str) -> Failure | None:
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
        copy = retry_of(failed, self.retries)
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


def full(used: int, budget: int, below: int | None) -> bool:
    """Whether a claim must take nothing: ``used`` slots fill the budget, or ``below``."""
    return used >= (budget if below is None else min(budget, below))


def retry_of(failed: FrozenTrial, retries: int) -> FrozenTrial | None:
    """The WAITING copy that retries ``failed`` with its parameters (its attempt, first
    attempt and history in its attributes), or None when its ``retries`` are spent."""
    attempt = int(failed.user_attrs.get(ATTEMPT, 1))
    if attempt > retries:
        return None
    first = int(failed.user_attrs.get(RETRY_OF, failed.number))
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    return optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=failed.params,
        distributions=failed.distributions,
        user_attrs={
            **{k: v for k, v in failed.user_attrs.items() if k not in (REASON, WORKER)},
            ATTEMPT: attempt + 1,
            RETRY_OF: first,
        },
        system_attrs={"failed_trial": first, "retry_history": history},
    )


def _naive(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(tzinfo=None)


class Heartbeat:
    """Beats for the trials this process runs, every ``interval`` seconds, from a daemon
    thread: the main thread may be deep in an epoch. A failed beat (an outage) is logged and
    tried again at the next interval."""

    def __init__(
        self, slots: TrialSlots, interval: float, log: Callable[[str], None] = print
    ) -> None:
        self.slots = slots
        self.interval = interval
        self.log = log
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeps-heartbeat", daemon=True)

    def watch(self, trial_id: int) -> None:
        with self._lock:
            self._ids.add(trial_id)

    def unwatch(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    @property
    def watched(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.slots.beat(self.watched)
            except Exception as e:
                if not failing:
                    self.log(f"heartbeat failed ({type(e).__name__}); trying on")
                failing = True
            else:
                if failing:
                    self.log("heartbeat restored")
                failing = False


def first_attempt(trial: FrozenTrial | optuna.Trial) -> int:
    """The trial number of the first attempt of ``trial``'s parameters (its own number
    unless it is a retry): the key of the checkpoints all attempts share."""
    first: int = trial.user_attrs.get(RETRY_OF, trial.number)
    return first
