"""What lr-sweeps stores on each Optuna trial, beside Optuna's own fields (user attrs, so
plain Optuna and optuna-dashboard show them)."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from storage.base import ATTEMPT, REASON, RETRY_OF, WORKER

PARAMS = "sweeps:params"  # the complete parameters, fixed values included

__all__ = ["ATTEMPT", "PARAMS", "REASON", "RETRY_OF", "WORKER", "params_of"]


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's complete parameters (fixed values included)."""
    stored: dict[str, Any] = trial.user_attrs.get(PARAMS, trial.params)
    return stored
