"""The contract every study backend keeps, and the rules of trial slots they share.

A backend is Optuna's storage for the study (``optuna``) plus lr-sweeps' own records beside
it: the budget, the trial slots that count it, the curves and the dashboard lease. Three
backends implement it as siblings:

- `storage.database.Database` and `storage.trial_slots.TrialSlots`: SQL (SQLite, PostgreSQL),
  each change one transaction;
- `storage.redis_journal.RedisDatabase`: Optuna's journal on Redis, each change under a
  per-study lock;
- `storage.remote.RemoteDatabase`: a worker's client of ``sweeps storage-proxy``, each call
  run by the proxy on one of the others.

`storage.open_database` picks one by URL. ``tests/storage_tests/test_backends.py`` runs one
suite over every backend; a new backend passes it before anything else uses it.

What every method promises, on every backend:

- **Retried, not duplicated.** A call that meets an outage is retried until
  ``$SWEEPS_DB_RETRY_SECONDS`` runs out (`storage.resilience`; `beat` is not: a `Heartbeat`
  beats again at its next interval), and a retry after a lost answer changes nothing twice:
  curves keep the points already stored, a claim carries a token by which its retry finds
  the trial the first attempt took.
- **Errors** that outlast the retries are raised; no message contains a password.
- **Exact budget.** Whatever the number of workers racing, and wherever one is killed,
  the trials holding slots (`HOLDING`) never outnumber the budget.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from storage.resilience import retrying

if TYPE_CHECKING:
    from storage.tables import EpochPoint, StepPoint

# Trials that hold a slot of the budget: a FAILed or WAITING (queued, handed back) one holds
# none, so a failure gives its slot back and a retry takes it again.
HOLDING = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)

# Trial user attrs (plain Optuna and optuna-dashboard show them).
ATTEMPT = "sweeps:attempt"  # 1 for a first try, 2 for its first retry, ...
RETRY_OF = "sweeps:retry_of"  # the first attempt's trial number
REASON = "sweeps:reason"  # why a trial was pruned, failed or re-queued
WORKER = "sweeps:worker"  # host:pid of the worker that took the trial last
CLAIM = "sweeps:claim"  # system attr: the token of the claim that took the trial
STALE = "stale: "  # how a reaped trial's reason begins: its worker was lost, not its code


class StorageError(RuntimeError):
    """A storage operation failed; the message never contains a password."""


class StorageRefused(StorageError):
    """A storage that retrying cannot make usable: not a study database (or, for a command
    that only reads, no database yet), authentication refused, a missing folder, a read-only
    file. The message is one line beginning ``storage: ``."""


class NoStudyDatabaseYet(StorageRefused):
    """A server database holding none of Optuna's tables yet, opened by what does not create
    them: a command that only reads is refused; a worker, which may start before the
    launcher on a cluster, waits for them (`storage.open_database`)."""


class CredentialsRefused(StorageRefused):
    """A storage proxy refused this client's token (`storage.remote`); ``reason`` says why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"storage {url}: the storage proxy refused the credentials ({reason})")
        self.reason = reason


class TrialReport(NamedTuple):
    """One trial's report after one epoch, with the step curve points logged since its last."""

    trial_id: int
    epoch: int
    value: float
    val_loss: float | None
    steps: Sequence[dict[str, Any]]


class Failure(NamedTuple):
    """A trial failed: its number, and its re-queued copy's (None: no retries left)."""

    number: int
    retry: int | None


class BaseDatabase(ABC):
    """One study store: Optuna's storage (``optuna``) and lr-sweeps' records on one URL."""

    url: str
    optuna: optuna.storages.BaseStorage  # what workers and commands hand to Optuna

    @abstractmethod
    def close(self) -> None:
        """Release connections (at the end of a process; SQLite folds its log back in)."""

    @abstractmethod
    def trial_slots(
        self, study_id: int, *, retries: int, worker: str | None = None
    ) -> BaseTrialSlots:
        """The study's trial slots, for a worker (``worker``: stored on the trials it takes;
        default this process, ``host:pid``)."""

    # Budget

    @abstractmethod
    def set_budget(self, study_id: int, trials: int) -> None:
        """Set the study's budget: how many trials may hold slots (at launch)."""

    @abstractmethod
    def budget(self, study_id: int) -> tuple[int, int]:
        """``(trials, held)``: the budget, and how many trials hold slots now (`HOLDING`). A study
        without a budget (not launched by lr-sweeps) raises `StorageError`."""

    # Dashboard pages

    @abstractmethod
    def claim_publication(self, study_id: int, *, now: float, every: float, lease: float) -> bool:
        """Take the right to refresh the study's dashboard pages, for ``lease`` seconds: True
        for one caller at a time, and only when the last refresh ended ``every`` seconds
        before ``now`` or more. A lease whose holder died lapses."""

    @abstractmethod
    def end_publication(self, study_id: int, *, now: float) -> None:
        """A refresh ended at ``now``: the lease is given back."""

    # Curves

    @abstractmethod
    def add_curves(
        self, trial_id: int, steps: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]]
    ) -> None:
        """Store curve points (``step``/``epoch`` keyed); points already stored are kept."""

    @abstractmethod
    def add_reports(self, reports: Sequence[TrialReport]) -> set[int]:
        """Store many trials' reports at once: each one's intermediate value, as Optuna's
        ``trial.report`` writes it, and its curve points.

        Returns:
            The ids of trials already finished (another worker failed them as stale):
            nothing is stored for those.
        """

    @abstractmethod
    def step_curve(self, trial_id: int) -> list[StepPoint]:
        """The trial's step points (lr, train loss, grad norm), by step."""

    @abstractmethod
    def epoch_curve(self, trial_id: int) -> list[EpochPoint]:
        """The trial's epoch points (value, validation loss), by epoch."""


class BaseTrialSlots(ABC):
    """A study's trials as slots of its budget: claimed, kept alive by heartbeats, handed
    back, or failed and re-queued. A failed trial is re-queued, as a WAITING copy with its
    parameters, while its attempts number at most ``retries + 1``. Each change leaves the
    study consistent if its process is killed at any instant."""

    def __init__(
        self, db: BaseDatabase, study_id: int, *, retries: int, worker: str | None = None
    ) -> None:
        self.db = db
        self.study_id = study_id
        self.retries = retries
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"

    @abstractmethod
    def claim(self, token: str | None = None, *, below: int | None = None) -> int | None:
        """Take a slot: the oldest WAITING trial, else a new one, now RUNNING with a fresh
        heartbeat, its claim token (`CLAIM`) and this worker (`WORKER`) stored. None when
        the budget is full, or when the study holds ``below`` slots already (a stacked
        worker starting the study's blind trials, counted across all workers).

        A retry first looks for the trial an earlier attempt with the same ``token`` took
        before its answer was lost; a caller that retries itself gives the same token."""

    @abstractmethod
    def hand_back(self, trial_id: int) -> bool:
        """RUNNING -> WAITING, for another worker to resume from its checkpoint (a worker
        told to stop). False if the trial is no longer RUNNING."""

    @abstractmethod
    def fail(self, trial_id: int, reason: str) -> Failure | None:
        """RUNNING -> FAIL with ``reason`` (`REASON`), and its retry (`retry_copy`) queued
        while retries last. None if the trial is no longer RUNNING: nothing changes."""

    @abstractmethod
    def beat(self, trial_ids: Iterable[int]) -> None:
        """Record that this process still runs ``trial_ids`` (by the store's clock)."""

    @abstractmethod
    def reap_stale(self, grace_period: float) -> list[Failure]:
        """Fail every RUNNING trial silent for over ``grace_period`` seconds and re-queue it
        (reason: `stale_reason`). A RUNNING trial never beaten (its worker died before its
        first beat, or it was started outside lr-sweeps) is given a beat now, so it is
        judged one grace period later.

        Returns:
            The trials this call failed (not those another worker failed first).
        """

    @abstractmethod
    def counts(self) -> dict[TrialState, int]:
        """The study's trials by state."""


# Rules every backend's slots follow ----------------------------------------------------


def claim_retried(
    take: Callable[[str, bool, int | None], int | None], token: str | None, below: int | None
) -> int | None:
    """`BaseTrialSlots.claim` over ``take(token, looks, below)``, one attempt of a claim:
    retried through outages, each retry (and a first attempt whose caller retries itself,
    ``token`` given) first looking for the trial an earlier attempt with the token took."""
    looks = token is not None
    token = token or uuid.uuid4().hex

    def attempt() -> int | None:
        nonlocal looks
        try:
            return take(token, looks, below)
        finally:
            looks = True

    return retrying(attempt, what="claim a trial")


def full(held: int, budget: int, below: int | None) -> bool:
    """Whether a claim must take nothing: ``held`` slots fill the budget, or ``below``."""
    return held >= (budget if below is None else min(budget, below))


def stale_reason(grace_period: float) -> str:
    return f"{STALE}no heartbeat for over {grace_period:g} s (its worker was lost)"


def retry_copy(failed: FrozenTrial, retries: int) -> FrozenTrial | None:
    """The WAITING copy that retries ``failed`` with its parameters (its attempt, first
    attempt and history in its attributes, as Optuna's ``RetryHeartbeatStaleTrialCallback``
    writes them), or None when its ``retries`` are spent."""
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


def first_attempt(trial: FrozenTrial | optuna.Trial) -> int:
    """The trial number of the first attempt of ``trial``'s parameters (its own number
    unless it is a retry): the key of the checkpoints all attempts share."""
    first: int = trial.user_attrs.get(RETRY_OF, trial.number)
    return first


class Heartbeat:
    """Beats for the trials this process runs, every ``interval`` seconds, from a daemon
    thread: the main thread may be deep in an epoch. A failed beat (an outage) is logged and
    tried again at the next interval."""

    def __init__(
        self, slots: BaseTrialSlots, interval: float, log: Callable[[str], None] = print
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
