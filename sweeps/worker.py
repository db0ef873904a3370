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
from typing import Any

import optuna
from optuna.trial import TrialState

import objectives
from storage import CheckpointStore, Database
from sweeps.study import StudyHandle, load

ATTEMPT = "sweeps:attempt"  # 1 for a first try, 2 for its first retry, ...
RETRY_OF = "sweeps:retry_of"  # the first attempt's trial number
PARAMS = "sweeps:params"  # the complete parameters, fixed values included
REASON = "sweeps:reason"  # why a trial was pruned or failed


def trial_seed(study_seed: int, first_attempt: int) -> int:
    """A trial's seed: from the study seed and the trial number of its first attempt, so a
    retry trains exactly as the attempt it replaces."""
    return (study_seed * 1_000_003 + first_attempt) % 2**31


class Worker:
    def __init__(
        self,
        db: Database,
        study: str,
        *,
        artifacts: Path,
        worker: int = 0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.db = db
        self.handle: StudyHandle = load(db, study, worker=worker)
        self.config = self.handle.config
        self.objective = objectives.resolve(self.config.objective)
        self.checkpoints = CheckpointStore(artifacts, study)
        self.log = log

    def run(self) -> int:
        """Run trials until the budget is met (exit code 0), or too many failed (1)."""
        study, study_id = self.handle.study, self.handle.study_id
        retry: optuna.trial.FrozenTrial | None = None
        while True:
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if failed >= self.config.max_failures:
                self.log(
                    f"stopping: {failed} trials failed (budget.max_failures="
                    f"{self.config.max_failures}); see each trial's {REASON}"
                )
                if retry is not None:
                    self.db.release_slot(study_id)
                return 1
            if retry is None and not self.db.claim_slot(study_id):
                return 0
            trial = self._retry_of(retry) if retry is not None else study.ask()
            state = self.run_trial(trial)
            retry = None
            if state == TrialState.FAIL:
                frozen = study._storage.get_trial(trial._trial_id)
                if frozen.user_attrs.get(ATTEMPT, 1) <= self.config.budget.retries:
                    retry = frozen
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

    def run_trial(self, trial: optuna.Trial) -> TrialState:
        """Train one trial and tell Optuna how it ended; never raises for the trial's faults."""
        study, config = self.handle.study, self.config
        params = self.handle.space.sample(trial)
        first = trial.user_attrs.get(RETRY_OF, trial.number)
        trial.set_user_attr(PARAMS, params)
        trial_id = trial._trial_id
        run = objectives.Run(
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
        )
        state, value, reason = self._train(run)
        if reason:
            trial.set_user_attr(REASON, reason[:2000])
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        if state != TrialState.FAIL:
            self.checkpoints.delete(first)  # a FAILed attempt's checkpoint serves its retry
        shown = f" {value:.6g}" if value is not None else ""
        self.log(
            f"trial {trial.number} {state.name}{shown} [{params['schedule']}]"
            + (f": {reason}" if reason else "")
        )
        return state

    def _train(self, run: objectives.Run) -> tuple[TrialState, float | None, str]:
        try:
            value = float(self.objective(run))
            run.flush()
        except optuna.TrialPruned as e:
            run.flush()
            return TrialState.PRUNED, None, str(e) or "pruned"
        except objectives.Diverged as e:
            run.flush()
            return TrialState.PRUNED, None, f"diverged: {e}"
        except Exception as e:  # the user's code failed: this trial fails, the sweep goes on
            traceback.print_exc(file=sys.stderr)
            return TrialState.FAIL, None, f"{type(e).__name__}: {e}"
        if not math.isfinite(value):
            return TrialState.PRUNED, None, f"diverged: objective returned {value}"
        return TrialState.COMPLETE, value, ""


def _device(setting: str) -> str:
    if setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def params_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A finished trial's complete parameters (fixed values included)."""
    stored: dict[str, Any] = trial.user_attrs.get(PARAMS, trial.params)
    return stored
