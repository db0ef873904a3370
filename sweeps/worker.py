"""The worker loop: claim a budget slot, ask a trial, train, tell; until the budget is met.

Every finished trial (COMPLETE or PRUNED) consumes exactly one slot of the study's budget,
claimed atomically in the database before the trial is asked for, so any number of racing
workers finish exactly ``budget.trials``. A FAILed trial keeps its slot while its parameters
are retried (as a new trial resuming from the failed attempt's checkpoint); once its retries
are spent, the slot is given back.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

import objectives
from storage import CheckpointStore, Database
from sweeps.batch_ask import ask_batch
from sweeps.results.curves import Curves
from sweeps.results.dashboard import ArtifactStore, Publisher, artifact_store
from sweeps.study import StudyHandle, load
from sweeps.summary import describe
from sweeps.trial_attrs import ATTEMPT, PARAMS, REASON, RETRY_OF


def trial_seed(study_seed: int, first_attempt: int) -> int:
    """A trial's seed: from the study seed and the trial number of its first attempt, so a
    retry trains exactly as the attempt it replaces."""
    return (study_seed * 1_000_003 + first_attempt) % 2**31


class Worker:
    """Runs a study's trials, ``stack`` at a time when the objective can train them as one
    batched model (`objectives.train`), one at a time otherwise."""

    def __init__(
        self,
        db: Database,
        study: str,
        *,
        artifacts: Path,
        worker: int = 0,
        stack: int | None = None,
        store: ArtifactStore | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        """``artifacts``: checkpoints (and the dashboard's artifacts unless ``store``)."""
        self.db = db
        self.handle: StudyHandle = load(db, study, worker=worker)
        self.config = self.handle.config
        self.objective = objectives.resolve(self.config.objective)
        self.checkpoints = CheckpointStore(artifacts, study)
        self.publisher = Publisher(db, self.handle, store or artifact_store(artifacts), log)
        self.log = log
        self.stack = stack or self.config.stack
        if self.stack > 1 and not isinstance(self.objective, objectives.ClassifierTask):
            log(
                f"objective {self.config.objective} cannot be stacked (only the built-in "
                f"tasks {', '.join(objectives.BUILTIN)} can); running trials one at a time"
            )
            self.stack = 1

    def run(self) -> int:
        """Run trials until the budget is met (exit code 0), or too many failed (1)."""
        study, study_id = self.handle.study, self.handle.study_id
        retries: list[optuna.trial.FrozenTrial] = []  # failed trials; each keeps its slot
        while True:
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if failed >= self.config.max_failures:
                self.log(
                    f"stopping: {failed} trials failed (budget.max_failures="
                    f"{self.config.max_failures}); see each trial's {REASON}"
                )
                for _ in retries:
                    self.db.release_slot(study_id)
                self.publisher.refresh(final=True)
                return 1
            if retries:
                batch = [self._retry_of(retries.pop(0))]
            else:
                batch = ask_batch(
                    study,
                    self.stack,
                    claim=lambda: self.db.claim_slot(study_id),
                    sample=self.handle.space.sample,
                    ramp_up=True,
                )
                if not batch:
                    self.publisher.refresh(final=True)
                    return 0
            for trial, state in self.run_trials(batch):
                if state != TrialState.FAIL:
                    continue
                frozen = self.db.optuna.get_trial(trial._trial_id)
                if frozen.user_attrs.get(ATTEMPT, 1) <= self.config.budget.retries:
                    retries.append(frozen)
                else:
                    self.db.release_slot(study_id)

    def _retry_of(self, failed: optuna.trial.FrozenTrial) -> optuna.Trial:
        """A new RUNNING trial with the failed one's parameters (never queued, so no other
        worker can take it)."""
        first = failed.user_attrs.get(RETRY_OF, failed.number)
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs={ATTEMPT: failed.user_attrs.get(ATTEMPT, 1) + 1, RETRY_OF: first},
        )
        trial_id = self.db.optuna.create_new_trial(self.handle.study_id, template_trial=template)
        return optuna.Trial(self.handle.study, trial_id)

    def run_trials(self, trials: list[optuna.Trial]) -> list[tuple[optuna.Trial, TrialState]]:
        """Train ``trials`` and tell Optuna how each ended; never raises for their faults.

        Trials that can share a stack (`objectives.stack_key`) train together; a trial
        resuming from a checkpoint trains alone (a stack starts at one epoch).
        """
        runs = [self._start(trial) for trial in trials]
        groups: dict[object, list[int]] = {}
        for i, run in enumerate(runs):
            resumes = self.checkpoints.path(self._first(trials[i])).exists()
            key = ("alone", i) if len(runs) == 1 or resumes else objectives.stack_key(run)
            groups.setdefault(key, []).append(i)
        outcomes: dict[int, objectives.Outcome] = {}
        for members in groups.values():
            group = [runs[i] for i in members]
            if len(group) == 1:
                results = [self._train_one(group[0])]
            else:
                assert isinstance(self.objective, objectives.ClassifierTask)
                try:
                    results = objectives.train_stack(self.objective, group)
                except Exception as e:  # the stack failed as a whole: so does each trial
                    traceback.print_exc(file=sys.stderr)
                    results = [e] * len(group)
            outcomes.update(zip(members, results, strict=True))
        return [(t, self._finish(t, runs[i], outcomes[i])) for i, t in enumerate(trials)]

    def _first(self, trial: optuna.Trial) -> int:
        first: int = trial.user_attrs.get(RETRY_OF, trial.number)
        return first

    def _start(self, trial: optuna.Trial) -> objectives.Run:
        config = self.config
        params = self.handle.space.sample(trial)
        first = self._first(trial)
        trial.set_user_attr(PARAMS, params)
        trial_id = trial._trial_id
        return objectives.Run(
            trial,
            params,
            seed=trial_seed(config.seed, first),
            epochs=config.budget.epochs,
            direction=config.direction,
            args=config.objective_args,
            device=_device(config.device),
            curves=lambda steps, epochs: self.db.add_curves(trial_id, steps, epochs),
            checkpoint=(
                lambda state: self.checkpoints.save(first, state),
                lambda: self.checkpoints.load(first),
            ),
            reports=self.db.add_reports,
        )

    def _train_one(self, run: objectives.Run) -> objectives.Outcome:
        try:
            return float(self.objective(run))
        except Exception as e:  # the trial's own fault: its outcome, not the worker's
            return e

    def _finish(
        self, trial: optuna.Trial, run: objectives.Run, outcome: objectives.Outcome
    ) -> TrialState:
        run.flush()
        value: float | None = None
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
        if reason:
            trial.set_user_attr(REASON, reason[:2000])
        shown = f" {value:.6g}" if value is not None else ""
        self.publisher.trial_ended(
            trial,
            Curves.of_run(run),
            f"trial {trial.number} {state.name}{shown} · {describe(run.params)}",
        )
        if state == TrialState.COMPLETE:
            self.handle.study.tell(trial, value)
        else:
            self.handle.study.tell(trial, state=state)
        if state != TrialState.FAIL:
            self.checkpoints.delete(self._first(trial))  # a FAILed one's serves its retry
        self.log(
            f"trial {trial.number} {state.name}{shown} [{run.params['schedule']}]"
            + (f": {reason}" if reason else "")
        )
        self.publisher.refresh()
        return state


def _device(setting: str) -> str:
    if setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting
