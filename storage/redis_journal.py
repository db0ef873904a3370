"""Studies in Redis (``redis://``): Optuna's journal storage plus lr-sweeps' own records.

Optuna's `JournalStorage` on a `JournalRedisBackend` holds the study, as plain Optuna and
optuna-dashboard read it: every change is one log entry that each process replays.
What a database URL keeps in lr-sweeps' tables lives in Redis keys beside the log
(``sweeps:<study id>:...``): the budget, heartbeats (Redis's clock, never a worker's), the
dashboard lease, and the curves (``sweeps:trial:<trial id>:...``).

What one SQL transaction makes atomic on a database (a claim: the budget count, taking or
creating the trial, its claim token and heartbeat) happens here under one lock per study
(redis-py's `Lock`, expiring if its holder dies; each process replays the log before it
takes the lock, so the lock covers milliseconds), and a claim is a single log entry: the
trial is created RUNNING with its token. Failing a trial and queueing its retry are two
entries, FAIL first: a worker killed between them loses the retry, never adds a trial.
Keep Redis persistent (``appendonly yes``): the journal is the study.
"""

from __future__ import annotations

import collections
import json
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
import redis
from optuna.storages.journal import JournalRedisBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from storage._url import mask_url
from storage.base import (
    CLAIM,
    HOLDING,
    REASON,
    WORKER,
    BaseDatabase,
    BaseTrialSlots,
    Failure,
    StorageError,
    TrialReport,
    claim_retried,
    full,
    retry_copy,
    stale_reason,
)
from storage.optuna_internals import journal_prefix, redis_client, trial_id_of
from storage.resilience import RetryingStorage, retried
from storage.tables import EpochPoint, StepPoint

LOCK_SECONDS = 10  # a claim takes milliseconds; a dead holder's lock frees itself after this

# Take the right to refresh the dashboard pages (`BaseDatabase.claim_publication`): KEYS[1] the
# study's publication hash; ARGV now, every, lease. One script: atomic in Redis.
_CLAIM_PUBLICATION = """
local held = tonumber(redis.call('hget', KEYS[1], 'until'))
local last = tonumber(redis.call('hget', KEYS[1], 'last'))
local now = tonumber(ARGV[1])
if (held and held >= now) or (last and last > now - tonumber(ARGV[2])) then return 0 end
redis.call('hset', KEYS[1], 'until', now + tonumber(ARGV[3]))
return 1
"""


# Append one journal entry, only while KEYS[1] (the study's lock) holds ARGV[1] (our token),
# if a lock is held at all: a holder whose lock expired (stalled past LOCK_SECONDS) cannot
# write what it decided on a stale read. As Optuna's own append: INCR, then SET the entry.
_FENCED_APPEND = """
if KEYS[1] ~= '' and redis.call('get', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST the study lock expired before this write')
end
local i = redis.call('incr', KEYS[2])
redis.call('set', KEYS[3] .. i, ARGV[2])
return i
"""


class LockLost(redis.exceptions.LockError):
    """The study's lock expired while its holder worked: its write was refused (retried)."""


class _FencedJournal(JournalRedisBackend):
    """Optuna's Redis journal backend whose appends check the study lock this thread holds
    (`RedisDatabase.locked`), so that lock is a fence, not only a courtesy."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._connect_script()

    def _connect_script(self) -> None:
        self.fence = threading.local()  # .lock: (key, token) while this thread holds one
        self._append = redis_client(self).register_script(_FENCED_APPEND)

    def __getstate__(self) -> dict[Any, Any]:  # Optuna storages are picklable
        state = super().__getstate__()
        del state["fence"], state["_append"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._connect_script()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        key, token = getattr(self.fence, "lock", ("", b""))
        prefix = journal_prefix(self)
        redis_client(self).setnx(f"{prefix}:log_number", -1)
        for log in logs:
            keys = [key, f"{prefix}:log_number", f"{prefix}:log:"]
            try:
                self._append(keys=keys, args=[token, json.dumps(log)])
            except redis.exceptions.ResponseError as e:
                if "LOCKLOST" in str(e):
                    raise LockLost(str(e)) from None
                raise


class RedisDatabase(BaseDatabase):
    """The Redis backend (`storage.base`): Optuna's journal plus lr-sweeps' keys."""

    def __init__(self, url: str) -> None:  # no SQL engine: the journal and keys are the store
        self.url = url
        self.redis = redis.Redis.from_url(url)
        try:
            self.redis.ping()
        except redis.RedisError as e:
            raise StorageError(f"storage {mask_url(url)}: {type(e).__name__}: {e}") from e
        with warnings.catch_warnings():  # experimental in Optuna; our tests cover our use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.backend = _FencedJournal(url)
            self.journal = JournalStorage(self.backend)
        self.optuna = RetryingStorage(self.journal)
        self._claim_publication = self.redis.register_script(_CLAIM_PUBLICATION)

    def close(self) -> None:
        self.redis.close()
        redis_client(self.backend).close()

    def trial_slots(
        self, study_id: int, *, retries: int, worker: str | None = None
    ) -> RedisTrialSlots:
        return RedisTrialSlots(self, study_id, retries=retries, worker=worker)

    @contextmanager
    def locked(self, study_id: int) -> Iterator[None]:
        """The study's lock: claims, failures and reaping happen one at a time. Journal
        entries written under it are refused once it expired (`LockLost`, retried)."""
        key = f"sweeps:{study_id}:lock"
        lock = self.redis.lock(key, timeout=LOCK_SECONDS)
        lock.acquire()
        self.backend.fence.lock = (key, lock.local.token)
        try:
            yield
        finally:
            del self.backend.fence.lock
            try:
                lock.release()
            except redis.exceptions.LockNotOwnedError:  # expired: its writes were refused
                pass

    def now(self) -> float:
        """Redis's clock, in seconds."""
        seconds, micros = self.redis.time()
        return float(seconds) + micros / 1e6

    # Budget ------------------------------------------------------------------------------

    @retried
    def set_budget(self, study_id: int, trials: int) -> None:
        self.redis.set(f"sweeps:{study_id}:budget", trials)

    @retried
    def budget(self, study_id: int) -> tuple[int, int]:
        held = _held(self.journal.get_all_trials(study_id, deepcopy=False))
        return self.budget_trials(study_id), held

    def budget_trials(self, study_id: int) -> int:
        trials = self.redis.get(f"sweeps:{study_id}:budget")
        if trials is None:
            raise StorageError(f"study {study_id} has no budget; was it launched by sweeps?")
        return int(trials)

    # Dashboard pages ---------------------------------------------------------------------

    @retried
    def claim_publication(self, study_id: int, *, now: float, every: float, lease: float) -> bool:
        return bool(self._claim_publication([_publication(study_id)], [now, every, lease]))

    @retried
    def end_publication(self, study_id: int, *, now: float) -> None:
        key = _publication(study_id)
        with self.redis.pipeline() as p:
            p.hset(key, "last", now)
            p.hdel(key, "until")
            p.execute()

    # Curves ------------------------------------------------------------------------------

    @retried
    def add_curves(
        self, trial_id: int, steps: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]]
    ) -> None:
        with self.redis.pipeline() as p:
            self._queue_curves(p, trial_id, steps, epochs)
            p.execute()

    @retried
    def add_reports(self, reports: Sequence[TrialReport]) -> set[int]:
        """Each trial's intermediate value (a journal entry, which replay ignores for a
        finished trial) and its curve points; points already stored are kept."""
        finished: set[int] = set()
        with self.redis.pipeline() as p:
            for r in reports:
                try:
                    self.journal.set_trial_intermediate_value(r.trial_id, r.epoch, r.value)
                except optuna.exceptions.UpdateFinishedTrialError:
                    finished.add(r.trial_id)
                    continue
                epoch = {"epoch": r.epoch, "value": r.value, "val_loss": r.val_loss}
                self._queue_curves(p, r.trial_id, r.steps, [epoch])
            p.execute()
        return finished

    @retried
    def step_curve(self, trial_id: int) -> list[StepPoint]:
        rows = self.redis.hgetall(_curve(trial_id, "steps")).values()
        points = [StepPoint(trial_id=trial_id, **json.loads(row)) for row in rows]
        return sorted(points, key=lambda p: p.step)

    @retried
    def epoch_curve(self, trial_id: int) -> list[EpochPoint]:
        rows = self.redis.hgetall(_curve(trial_id, "epochs")).values()
        points = [EpochPoint(trial_id=trial_id, **json.loads(row)) for row in rows]
        return sorted(points, key=lambda p: p.epoch)

    def _queue_curves(
        self,
        p: redis.client.Pipeline,
        trial_id: int,
        steps: Sequence[dict[str, Any]],
        epochs: Sequence[dict[str, Any]],
    ) -> None:
        for kind, key, points in (("steps", "step", steps), ("epochs", "epoch", epochs)):
            for point in points:  # HSETNX: a retried write keeps what is stored
                p.hsetnx(_curve(trial_id, kind), str(point[key]), json.dumps(point))


class RedisTrialSlots(BaseTrialSlots):
    """The trial slots of a `RedisDatabase`: each change under the study's lock."""

    db: RedisDatabase

    def claim(self, token: str | None = None, *, below: int | None = None) -> int | None:
        return claim_retried(self._take, token, below)

    def _take(self, token: str, looks: bool, below: int | None) -> int | None:
        journal = self.db.journal
        # Replay the log first: under the lock, only what others wrote since is read.
        journal.get_all_trials(self.study_id, deepcopy=False)
        with self.db.locked(self.study_id):
            trials = journal.get_all_trials(self.study_id, deepcopy=False)
            if looks:  # did a lost answer take one?
                for t in trials:
                    if t.system_attrs.get(CLAIM) == token and t.state == TrialState.RUNNING:
                        return trial_id_of(t)
            if full(_held(trials), self.db.budget_trials(self.study_id), below):
                return None
            trial_id = self._take_waiting(trials, token)
            if trial_id is None:  # one entry: the trial exists RUNNING with its token, or not
                running = optuna.trial.create_trial(
                    state=TrialState.RUNNING,
                    user_attrs={WORKER: self.worker},
                    system_attrs={CLAIM: token},
                )
                trial_id = journal.create_new_trial(self.study_id, running)
            self.beat([trial_id])
            return trial_id

    def _take_waiting(self, trials: list[FrozenTrial], token: str) -> int | None:
        """The oldest WAITING trial, now RUNNING for this claim; None if there is none. Its
        token and worker are written first and its state last, so a claim cut off midway
        leaves a WAITING trial (which the retry takes), never a RUNNING one nobody runs.
        A trial another process took first (plain Optuna's ``ask``) is passed over."""
        journal = self.db.journal
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.state != TrialState.WAITING:
                continue
            journal.set_trial_system_attr(trial_id_of(trial), CLAIM, token)
            journal.set_trial_user_attr(trial_id_of(trial), WORKER, self.worker)
            if journal.set_trial_state_values(trial_id_of(trial), TrialState.RUNNING):
                return trial_id_of(trial)
        return None

    @retried
    def hand_back(self, trial_id: int) -> bool:
        with self.db.locked(self.study_id):
            if self.db.journal.get_trial(trial_id).state != TrialState.RUNNING:
                return False
            self.db.journal.set_trial_state_values(trial_id, TrialState.WAITING)
            self.db.redis.hdel(_beats(self.study_id), str(trial_id))
            return True

    @retried
    def fail(self, trial_id: int, reason: str) -> Failure | None:
        with self.db.locked(self.study_id):
            return self._fail_locked(trial_id, reason)

    def _fail_locked(self, trial_id: int, reason: str) -> Failure | None:
        journal = self.db.journal
        if journal.get_trial(trial_id).state != TrialState.RUNNING:
            return None
        try:
            journal.set_trial_user_attr(trial_id, REASON, reason[:2000])
            journal.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # its worker told it meanwhile
            return None
        self.db.redis.hdel(_beats(self.study_id), str(trial_id))
        return self._requeue(journal.get_trial(trial_id))

    def _requeue(self, failed: FrozenTrial) -> Failure:
        """Queue ``failed``'s retry while its retries last (a separate journal entry)."""
        copy = retry_copy(failed, self.retries)
        if copy is None:
            return Failure(failed.number, None)
        retry = self.db.journal.create_new_trial(self.study_id, copy)
        return Failure(failed.number, self.db.journal.get_trial(retry).number)

    def _requeue_orphans(self, trials: list[FrozenTrial]) -> list[Failure]:
        """Queue the retry of every trial we failed whose retry was never queued: its worker
        was cut off between the two entries. (On a database, one transaction writes both.)"""
        requeued = {
            t.system_attrs["retry_history"][-1]
            for t in trials
            if "retry_history" in t.system_attrs
        }
        orphans = [
            t
            for t in trials
            if t.state == TrialState.FAIL and REASON in t.user_attrs and t.number not in requeued
        ]
        return [f for f in map(self._requeue, orphans) if f.retry is not None]

    def beat(self, trial_ids: Iterable[int]) -> None:
        ids = list(trial_ids)
        if ids:
            now = self.db.now()
            self.db.redis.hset(_beats(self.study_id), mapping={str(i): now for i in ids})

    @retried
    def reap_stale(self, grace_period: float) -> list[Failure]:
        """`BaseTrialSlots.reap_stale`, and the retries a cut-off `fail` left unqueued."""
        self.db.journal.get_all_trials(self.study_id, deepcopy=False)  # replay outside the lock
        with self.db.locked(self.study_id):
            trials = self.db.journal.get_all_trials(self.study_id, deepcopy=False)
            repaired = self._requeue_orphans(trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            beats = {
                int(k): float(v) for k, v in self.db.redis.hgetall(_beats(self.study_id)).items()
            }
            now = self.db.now()
            self.beat([trial_id_of(t) for t in running if trial_id_of(t) not in beats])
            reason = stale_reason(grace_period)
            failed = (
                self._fail_locked(trial_id_of(t), reason)
                for t in running
                if trial_id_of(t) in beats and now - beats[trial_id_of(t)] > grace_period
            )
            return repaired + [f for f in failed if f is not None]

    @retried
    def counts(self) -> dict[TrialState, int]:
        trials = self.db.journal.get_all_trials(self.study_id, deepcopy=False)
        return dict(collections.Counter(t.state for t in trials))


def _held(trials: Iterable[FrozenTrial]) -> int:
    return sum(t.state in HOLDING for t in trials)


def _beats(study_id: int) -> str:
    return f"sweeps:{study_id}:beats"


def _publication(study_id: int) -> str:
    return f"sweeps:{study_id}:publication"


def _curve(trial_id: int, kind: str) -> str:
    return f"sweeps:trial:{trial_id}:{kind}"
