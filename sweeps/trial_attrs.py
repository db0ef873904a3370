"""What lr-sweeps stores on each Optuna trial, beside Optuna's own fields (user attrs, so
plain Optuna and optuna-dashboard show them)."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

ATTEMPT = "sweeps:attempt"  # 1 for a first try, 2 for its first retry, ...
RETRY_OF = "sweeps:retry_of"  # the first attempt's trial number
PARAMS = "sweeps:params"  # the complete parameters, fixed values included
REASON = "sweeps:reason"  # why a trial was pruned or failed


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's complete parameters (fixed values included)."""
    stored: dict[str, Any] = trial.user_attrs.get(PARAMS, trial.params)
    return stored
