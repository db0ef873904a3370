"""When failed trials stop a study: too many in all (``budget.max_failures``), or one error
repeating trial after trial across schedule families (``budget.max_repeated_failures``),
which no other parameters will cure (a missing import, a wrong path, a full disk).

Failures from before the study was last resumed do not count: after fixing their cause,
``sweeps run CONFIG --resume`` continues the study (the failed trials stay in it).
"""

from __future__ import annotations

import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.command import LOG_NOTE
from storage.base import STALE
from sweeps.config import SweepConfig
from sweeps.trial_attrs import REASON, params_of

RESUMED_ATTR = "sweeps:resumed"  # study user attr: trials failed and ended when last resumed
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def forget_failures(study: optuna.Study) -> None:
    """Mark where a resumed study starts counting failures afresh."""
    ended = study.get_trials(deepcopy=False, states=ENDED)
    failed = sum(t.state == TrialState.FAIL for t in ended)
    study.set_user_attr(RESUMED_ATTR, {"failed": failed, "ended": len(ended)})


class FailureWatch:
    """Decides, from the study's trials, whether failures should stop it."""

    def __init__(self, study: optuna.Study, config: SweepConfig) -> None:
        before = study.user_attrs.get(RESUMED_ATTR, {})
        self.study = study
        self.config = config
        self.failed_before: int = before.get("failed", 0)
        self.ended_before: int = before.get("ended", 0)
        self._looked_at = 0  # failures counted when the trials were last read

    def stop_reason(self, failed: int) -> str | None:
        """Why the study should stop, given ``failed`` FAIL trials in all, or None."""
        failed -= self.failed_before
        if failed >= self.config.max_failures:
            return f"{failed} trials failed (budget.max_failures={self.config.max_failures})"
        if failed == self._looked_at:  # no new failure: the trials need no reading
            return None
        self._looked_at = failed
        return self._repeated()

    def _repeated(self) -> str | None:
        ended = sorted(self.study.get_trials(deepcopy=False, states=ENDED), key=_ended_at)
        streak: list[FrozenTrial] = []  # the latest trials, failed with one error
        for t in reversed(ended[self.ended_before :]):
            reason = t.user_attrs.get(REASON, "")
            if t.state != TrialState.FAIL or reason.startswith(STALE):
                break  # a lost worker is not the objective's error
            if streak and _error(reason) != _error(streak[0].user_attrs[REASON]):
                break
            streak.append(t)
        families = sorted({str(params_of(t).get("schedule")) for t in streak})
        # One family failing alike may be that family's fault; the others are worth running.
        if len(streak) < self.config.budget.max_repeated_failures or len(families) < min(
            2, len(self.config.space["schedule"])
        ):
            return None
        return (
            f"the last {len(streak)} trials ({', '.join(families)}) failed with the same "
            f"error (budget.max_repeated_failures="
            f"{self.config.budget.max_repeated_failures}): {streak[0].user_attrs[REASON]}"
        )


def _error(reason: str) -> str:
    """A failure's reason without the trial's own log file (`objectives.command`)."""
    return reason.partition(LOG_NOTE)[0]


def _ended_at(t: FrozenTrial) -> tuple[datetime.datetime, int]:
    return t.datetime_complete or datetime.datetime.min, t.number
