"""The worker loop: take trials under the budget, train, tell; until the budget is met.

A task (`objectives.Task`) keeps up to ``stack`` trials training at once, as batched models
(`objectives.Pool`): a round trains each stack one epoch, tells the trials that ended, and
fills their slots with new trials, so pruning never leaves a stack half empty. Other
objectives train one trial at a time.

The study's budget counts trials (`storage.trial_slots`): a trial holds a slot while RUNNING
and once COMPLETE or PRUNED, so any number of racing workers finish exactly
``budget.trials``. A FAILed trial gives its slot back; while its retries last, the same
transaction queues a copy of it that resumes from its checkpoint. Workers beat for the
trials they run; any worker fails and re-queues a trial whose worker fell silent (killed,
preempted, cut off), so at most the epoch in progress is lost. Told to stop (SIGTERM,
SIGINT: `Worker.stop`), a worker saves the epoch in progress, hands its trials back as
WAITING and exits 0. When a checkpoint finds the disk full, it stops the same way, each
trial on its last checkpoint, and exits 1 naming the folder and its free space.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import objectives
from storage import BaseDatabase, CheckpointStore
from storage.base import Failure, Heartbeat, first_attempt
from storage.checkpoints import DiskFull, free_space, no_space
from storage.optuna_internals import trial_id_of
from sweeps.batch_ask import ask_batch, room
from sweeps.branches import BRANCHED_AT, Branching
from sweeps.device import NOT_A_COMMAND, gpu_slots, resolve_device, visible_gpus
from sweeps.errors import UsageError
from sweeps.failures import FailureWatch
from sweeps.results.artifact_store import ArtifactStore, artifact_store
from sweeps.results.curves import Curves
from sweeps.results.dashboard import Publisher
from sweeps.samplers import blind_trials
from sweeps.study import StudyHandle, load
from sweeps.summary import describe
from sweeps.trial_attrs import PARAMS, REASON

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WAIT_SECONDS = 1.0  # between looks at the study while other workers finish its last trials


def trial_seed(study_seed: int, first_attempt: int) -> int:
    """A trial's seed: from the study seed and the trial number of its first attempt, so a
    retry trains exactly as the attempt it replaces."""
    return (study_seed * 1_000_003 + first_attempt) % 2**31


class Worker:
    """Runs a study's trials, up to ``stack`` at a time when the objective can train them as
    batched models (`objectives.train`), one at a time otherwise."""

    def __init__(
        self,
        db: BaseDatabase,
        study: str,
        *,
        artifacts: Path,
        worker: int = 0,
        stack: int | None = None,
        device: str | None = None,
        gpus: list[str] | None = None,
        store: ArtifactStore | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        """``artifacts``: checkpoints, command trials' logs (and the dashboard's artifacts
        unless ``store``). ``device`` overrides the config's. ``gpus``: the GPUs command
        trials share out, ``objective.processes`` each (none: one trial at a time).

        Raises:
            UsageError: the device cannot be used on this machine (before anything runs).
        """
        self.db = db
        self.handle: StudyHandle = load(db, study, worker=worker)
        self.config = self.handle.config
        self.device = resolve_device(self.config.device, device)
        self.objective = objectives.resolve(self.config.objective_spec)
        self.checkpoints = CheckpointStore(artifacts, study, warn=log)
        self.slots = db.trial_slots(self.handle.study_id, retries=self.config.budget.retries)
        self.heartbeat = Heartbeat(self.slots, self.config.heartbeat.interval, log)
        self.publisher = Publisher(db, self.handle, store or artifact_store(artifacts), log)
        self.log = log
        self._stopping = threading.Event()
        self.disk_full: DiskFull | None = None  # why the worker stops, if a disk filled up
        self.stack = stack or self.config.stack
        self.blind = blind_trials(self.config)
        self.failures = FailureWatch(self.handle.study, self.config)
        # The trials in training: a task's stacks, or a command's slots (one per share of
        # `gpus`); other objectives train one trial at a time.
        self.pool: objectives.Pool | objectives.CommandPool | None = None
        # Parameters a trial has only as defaults the config never wrote, which a script
        # never sees: not stored with its trials (nor passed by {args}).
        self.hidden: set[str] = set()
        if isinstance(self.objective, objectives.Task):
            self.pool = objectives.Pool(self.objective)
        elif isinstance(self.objective, objectives.Command):
            shared = gpus if gpus is not None else visible_gpus(self.device)
            slots = gpu_slots(shared, self.objective.processes)
            self.hidden = self.handle.space.unwritten()
            self.pool = objectives.CommandPool(
                self.objective, logs=artifacts / study / "logs", slots=slots, hidden=self.hidden
            )
            self.stack = len(slots)
        elif gpus is not None:
            raise UsageError(NOT_A_COMMAND)
        elif self.stack > 1:
            log(
                f"{objectives.cannot_stack(self.config.objective_spec)}; "
                "running trials one at a time"
            )
            self.stack = 1
        # Trials that share a stable phase (`sweeps.branches`): a task's only.
        self.branching: Branching | None = None
        if self.config.branches is not None and self.pool is not None:
            self.branching = Branching(self.handle, self.checkpoints)
        elif self.config.branches is not None:
            log(
                f"branches: objective {self.config.objective_name} runs its own loop, so no trial "
                "branches from another (an objectives.Task does)"
            )

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop soon: each running trial saves the epoch in progress and goes back to the
        queue, then `run` returns 0. Safe to call from a signal handler."""
        self._stopping.set()

    def run(self) -> int:
        """Run trials until the budget is met (exit code 0), or failures stopped the study
        (1, `sweeps.failures`), or `stop` was called (0)."""
        with self.heartbeat:
            try:
                return self._run()
            except KeyboardInterrupt:  # told to stop at once: the last checkpoints stand
                self._hand_back_all()
                return 0

    def _run(self) -> int:
        beat = self.config.heartbeat
        waiting_said = False
        next_reap = 0.0
        while True:
            if self._stopping.is_set() and not self.pool:
                if self.disk_full is not None:
                    self.log(
                        f"stopping: {self.disk_full}; running trials went back to the queue; "
                        "make room, then continue with sweeps run CONFIG --resume (or start the "
                        "workers again)"
                    )
                    return 1
                self.log("stopped: running trials were handed back to the queue")
                return 0
            if time.monotonic() >= next_reap:  # at most once a heartbeat: trials may be short
                next_reap = time.monotonic() + beat.interval
                for stale in self.slots.reap_stale(beat.grace_period):
                    self.publisher.failed_as_stale(stale.number)
                    lost = f"trial {stale.number} FAIL: its worker was lost (no heartbeat)"
                    self.log(f"{lost}; {_retry(stale)}")
            counts = self.slots.counts()
            too_many = self.failures.stop_reason(counts.get(TrialState.FAIL, 0))
            if too_many:
                self.log(
                    f"stopping: {too_many}; fix the cause, then continue the study with "
                    "sweeps run CONFIG --resume (or sweeps launch CONFIG --resume, then "
                    "workers): its failures so far will not count"
                )
                if isinstance(self.pool, objectives.CommandPool):
                    self._end_commands()
                self._hand_back_all()
                self.publisher.refresh(final=True)
                return 1
            finished = sum(counts.get(s, 0) for s in FINISHED)
            held = finished + counts.get(TrialState.RUNNING, 0)
            learned, blind = room(
                self.stack, len(self.pool or ()), finished=finished, held=held, blind=self.blind
            )
            caps = [None] * learned + [self.blind] * blind  # each claim's `below`, in order
            batch: list[optuna.Trial] = []
            if caps and held < self.config.budget.trials:  # else no claim can succeed
                batch = ask_batch(
                    self.handle.study,
                    len(caps),
                    claim=functools.partial(self._claim, iter(caps)),
                    sample=self.branching.sample if self.branching else self.handle.space.sample,
                )
            if batch or self.pool:
                self.train(batch)
                waiting_said = False
                continue
            if finished >= self.config.budget.trials:
                self.checkpoints.delete_stable()  # no branch is left to start from them
                self.publisher.refresh(final=True)
                return 0
            # The budget is full but not finished: other workers' trials still run. Wait for
            # them, to take over any that go stale and whatever is handed back; look again
            # soon, so the study ends when its last trial does.
            if not waiting_said:
                self.log("waiting for the other workers' running trials to finish")
                waiting_said = True
            self._stopping.wait(min(beat.interval, WAIT_SECONDS))

    def _end_commands(self) -> None:
        """End the running commands (each after its grace period) and hand their trials
        back, before the worker returns."""
        self._stopping.set()
        while self.pool:
            self.train([])

    def _claim(self, caps: Iterator[int | None]) -> int | None:
        """Take a trial, its claim capped by the next of ``caps`` (`BaseTrialSlots.claim`)."""
        if self._stopping.is_set():
            return None
        trial_id = self.slots.claim(below=next(caps))
        if trial_id is not None:
            self.heartbeat.watch(trial_id)
        return trial_id

    def _hand_back_all(self) -> None:
        watched = self.heartbeat.watched
        for trial_id in watched:
            self.slots.hand_back(trial_id)
        if watched:
            self.log(f"handed back trial ids {watched}")

    def train(self, trials: list[optuna.Trial]) -> None:
        """Start ``trials``, train, and tell Optuna how each trial that ended did; never
        raises for the trials' faults.

        A stackable task trains an epoch of the worker's `objectives.Pool`, which ``trials``
        join (and the trials that ended leave, freeing their slots for the next call); any
        other objective trains each of ``trials`` to its end, one at a time.
        """
        runs = [self._start(trial) for trial in trials]
        if self.pool is None:
            ended = [(run, self._train_one(run)) for run in runs]
        else:
            failed = self.pool.join(runs)
            if self.pool.cannot_stack and self.stack > 1:  # found by the pool's probe
                self.log(f"note: {self.pool.cannot_stack}; running trials one at a time")
                self.stack = 1
            ended = [*failed, *self.pool.train_epoch()]
        for run, outcome in ended:
            self._finish(run, outcome)

    def _start(self, trial: optuna.Trial) -> objectives.Run:
        config = self.config
        params = self.handle.space.sample(trial)
        first = first_attempt(trial)
        if self.checkpoints.path(first).exists():
            self.log(f"trial {trial.number} resumes from the checkpoint of trial {first}")
        trial.set_user_attr(PARAMS, self._shown(params))
        shown = describe(self._shown(params))
        self.publisher.trial_started(trial, f"trial {trial.number} RUNNING · {shown}")
        trial_id = trial_id_of(trial)
        trunk, branch, seed_of = None, None, first
        if self.branching is not None:
            trunk, branch, seed_of = self.branching.roles(trial, params)
        return objectives.Run(
            trial,
            params,
            seed=trial_seed(config.seed, seed_of),
            epochs=config.budget.epochs,
            direction=config.direction,
            args=self.handle.space.run_args(config.objective_args, params),
            device=self.device,
            precision=config.precision,
            curves=lambda steps, epochs: self.db.add_curves(trial_id, steps, epochs),
            checkpoint=(
                functools.partial(self._save, first),
                lambda: self.checkpoints.load(first),
            ),
            reports=self.db.add_reports,
            stopping=self._stopping.is_set,
            checkpoint_dir=self.checkpoints.files(first),
            trunk=trunk,
            branch=branch,
        )

    def _save(self, key: int, state: dict[str, Any], *, sync: bool = True) -> None:
        """Save a checkpoint; a full disk stops the worker (every trial it runs would fail
        alike), and the trial, handed back, keeps its last checkpoint."""
        try:
            self.checkpoints.save(key, state, sync=sync)
        except DiskFull as e:
            self.disk_full = self.disk_full or e
            self.stop()
            raise

    def _no_room(self, error: Exception) -> objectives.HandBack:
        """A trial ended by a full disk is not at fault: the worker stops, as when a
        checkpoint finds no room, and the trial goes back to the queue."""
        if isinstance(error, DiskFull):
            full = error
        else:
            filename = getattr(error, "filename", None) or getattr(
                error.__cause__, "filename", None
            )
            folder = Path(filename).parent if filename else self.checkpoints.dir.parent
            full = DiskFull(folder, free_space(folder), error, what="the trial's files")
        self.disk_full = self.disk_full or full
        self.stop()
        return objectives.HandBack(f"handed back: {full}")

    def _shown(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in self.hidden}

    def _train_one(self, run: objectives.Run) -> objectives.Outcome:
        assert not isinstance(self.objective, objectives.Command)  # a `CommandPool`'s
        return objectives.outcome_of(run, self.objective)

    def _finish(self, run: objectives.Run, outcome: objectives.Outcome) -> None:
        trial = run.trial
        self.heartbeat.unwatch(trial_id_of(trial))
        if isinstance(outcome, objectives.Lost | optuna.exceptions.UpdateFinishedTrialError):
            self._taken_over(trial, outcome)
            return
        if isinstance(outcome, DiskFull) or (  # a command's own files, as it found
            isinstance(outcome, Exception) and no_space(outcome)  # not a HandBack's cause
        ):
            outcome = self._no_room(outcome)  # an objective's own files, a command's log
        run.flush()
        if isinstance(outcome, objectives.HandBack):
            self.slots.hand_back(trial_id_of(trial))
            self.log(f"trial {trial.number} {outcome}: back in the queue as WAITING")
            return
        value: float | None = None
        if isinstance(outcome, optuna.TrialPruned) and run.trained_all_epochs:
            outcome = run.reported[-1]["value"]  # pruned by the objective after its last epoch
        if isinstance(outcome, optuna.TrialPruned):
            state, reason = TrialState.PRUNED, str(outcome) or "pruned"
        elif isinstance(outcome, objectives.Diverged):
            state, reason = TrialState.PRUNED, f"diverged: {outcome}"
        elif isinstance(outcome, BaseException):
            if outcome.__traceback__ is not None:
                traceback.print_exception(outcome, file=sys.stderr)
            state, reason = TrialState.FAIL, f"{type(outcome).__name__}: {outcome}"
        elif not math.isfinite(outcome):
            state, reason = TrialState.PRUNED, f"diverged: objective returned {outcome}"
        else:
            state, reason, value = TrialState.COMPLETE, "", outcome
        try:
            if reason and state != TrialState.FAIL:  # `slots.fail` stores a failure's reason
                trial.set_user_attr(REASON, reason[:2000])
            if run.branched_at:
                trial.set_user_attr(BRANCHED_AT, run.branched_at)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile
            self._taken_over(trial)
            return
        shown = f" {value:.6g}" if value is not None else ""
        self.publisher.trial_ended(
            trial,
            Curves.of_run(run),
            f"trial {trial.number} {state.name}{shown} · {describe(self._shown(run.params))}",
        )
        if state == TrialState.FAIL:
            failed = self.slots.fail(trial_id_of(trial), reason)
            if failed is None:
                self._taken_over(trial)
                return
            reason += f"; {_retry(failed)}"
        else:  # a failed one's checkpoint serves its retry
            told = self.handle.study.tell(trial, value, state=state, skip_if_finished=True)
            if told.state != state:
                self._taken_over(trial)
                return
            self.checkpoints.delete(first_attempt(trial))
        self.log(
            f"trial {trial.number} {state.name}{shown} [{run.params['schedule']}]"
            + (f": {reason}" if reason else "")
        )
        self.publisher.refresh()

    def _taken_over(self, trial: optuna.Trial, why: BaseException | None = None) -> None:
        """Another worker failed this trial (its heartbeat went stale here) and re-queued
        it: its outcome here is dropped, and its retry resumes from the checkpoint."""
        self.log(
            f"trial {trial.number} was taken over by another worker" + (f": {why}" if why else "")
        )


def _retry(failed: Failure) -> str:
    return "no retries left" if failed.retry is None else f"re-queued as trial {failed.retry}"
