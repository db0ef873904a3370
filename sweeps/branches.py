"""Cooldown branches (`branches: {per_trunk: M}`): trials that differ only in their cooldown
share one trunk's stable phase (`objectives.trunks`).

How the sampler sees it: a trial whose family has a cooldown (``wsd``) and that is no
branch is a *trunk*, sampled as any trial. Once its stable phase is trained (its kept
epochs in `STABLE_EPOCHS`), the next M − 1 trials any worker takes become its *branches*:
every parameter but the cooldown's is fixed to the trunk's (`FixedParams`, so the sampler
still sees them as observations), and the sampler chooses the cooldown (``decay_fraction``,
``decay_shape``, ``min_lr``). Each branch starts from the trunk's last kept checkpoint
before its own decay starts, with the trunk's seed, and trains only the rest. Branches are
created only once those checkpoints exist, so no worker ever waits for one; a pruned trunk
takes no more branches, nor does one whose checkpoints this worker cannot read (the study
ended, or ``--artifacts`` is not shared). The budget counts trials as always: a branch is
one trial. A branch whose trunk's file cannot be read after all trains from step 0, to the
same curve.

Racing workers may each give a trunk its last branch at once: a trunk then has one or two
more than M − 1.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

import schedules
from objectives.trunks import Branch, Trunk
from storage.base import first_attempt
from sweeps.space import Space
from sweeps.trial_attrs import params_of
from sweeps.wrapped_sampler import WrappedSampler

if TYPE_CHECKING:
    from storage import CheckpointStore
    from sweeps.study import StudyHandle

TRUNK = "sweeps:trunk"  # on a branch: {"trial": its trunk's number, "epochs": kept epochs}
STABLE_EPOCHS = "sweeps:stable_epochs"  # on a trunk, once its stable phase is trained
BRANCHED_AT = "sweeps:branched_at"  # on a branch: the trunk's epochs it did not train again


def cooldown(params: dict[str, Any]) -> tuple[str, ...]:
    """The names (``family.param``) of ``params``' cooldown parameters; none for a family
    without a cooldown."""
    family = params["schedule"]
    return tuple(f"{family}.{p}" for p in schedules.SCHEDULES[family].COOLDOWN)


def earliest_branch_epoch(space: Space, epochs: int) -> int:
    """The first epoch a branch may start from: the largest decay the space allows
    (``wsd``'s ``decay_fraction``) leaves this many whole epochs before it. A trunk keeps
    no earlier checkpoint."""
    dim = space.families.get("wsd", {}).get("decay_fraction")
    default = schedules.SCHEDULES["wsd"].PARAMS["decay_fraction"].default
    largest = float(dim.bounds()[1] if dim else default)
    # One epoch earlier than exact: `stable_steps` is T − f·T in floats, which may round
    # just below a whole epoch.
    return max(1, math.floor((1.0 - largest) * epochs) - 1)


def trunk_of(trial: FrozenTrial | optuna.Trial) -> int | None:
    """The trunk a branch trial starts from (its first attempt's number), or None."""
    branch = trial.user_attrs.get(TRUNK)  # None also where a queued trial lost the role
    return None if branch is None else int(branch["trial"])


def latest_attempts(trials: Sequence[FrozenTrial]) -> dict[int, FrozenTrial]:
    """Each trial's latest attempt, by the number of its first."""
    return {first_attempt(t): t for t in sorted(trials, key=lambda t: t.number)}


def open_trunk(
    trials: Sequence[FrozenTrial],
    per_trunk: int,
    readable: Callable[[int], bool] = lambda trunk: True,
) -> FrozenTrial | None:
    """The oldest trunk that takes another branch: its stable phase is trained, it was not
    pruned, it has fewer than ``per_trunk − 1`` branches (a trial and its retries count
    once), and its kept checkpoints are ``readable`` here (gone once a study ends; on
    another machine's disk if the artifacts are not shared)."""
    latest = latest_attempts(trials)
    branches = Counter(trunk_of(t) for t in latest.values())
    for number, trunk in sorted(latest.items()):
        if (
            trunk.user_attrs.get(STABLE_EPOCHS)
            and trunk.state != TrialState.PRUNED
            and branches[number] < per_trunk - 1
            and readable(number)
        ):
            return trunk
    return None


def branch_params(trunk: FrozenTrial) -> dict[str, Any]:
    """What a branch of ``trunk`` takes from it: every parameter but the cooldown's."""
    params = params_of(trunk)
    return {k: v for k, v in params.items() if k not in cooldown(params)}


class FixedParams(WrappedSampler):
    """A sampler that gives the trials it is told of (`fix`) fixed values for some
    parameters, and leaves every other parameter, and every other trial, to ``sampler``."""

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        super().__init__(sampler)
        self._fixed: dict[int, dict[str, Any]] = {}  # by trial number

    def fix(self, number: int, params: dict[str, Any]) -> None:
        self._fixed[number] = params

    def unfix(self, number: int) -> None:
        self._fixed.pop(number, None)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self.sampler.infer_relative_search_space(study, trial)
        fixed = self._fixed.get(trial.number, {})
        return {k: v for k, v in space.items() if k not in fixed}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        fixed = self._fixed.get(trial.number, {})
        if param_name in fixed:
            return fixed[param_name]
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)


class Branching:
    """A worker's part in branches: which new trial branches from which trunk, and the
    hooks each run gets (`objectives.trunks`)."""

    def __init__(self, handle: StudyHandle, checkpoints: CheckpointStore) -> None:
        config = handle.config
        assert config.branches is not None and isinstance(handle.study.sampler, FixedParams)
        self.handle = handle
        self.sampler = handle.study.sampler
        self.per_trunk = config.branches.per_trunk
        self.checkpoints = checkpoints
        self.earliest = earliest_branch_epoch(handle.space, config.budget.epochs)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a trial: a fresh one as the next branch of an open trunk if there is one.
        A trial from the queue keeps its role: a retry or a handed-back trial its
        parameters (a branch's retry gets those it lacks from its trunk again); one queued
        with its own values (``sweeps enqueue``) is no branch."""
        if trial.params and trunk_of(trial) is None:
            return self.handle.space.sample(trial)
        # A fresh read, not the batch's snapshot: other workers' branches count too.
        trials = self.handle.study.get_trials(deepcopy=False)
        if (number := trunk_of(trial)) is not None:
            trunk: FrozenTrial | None = latest_attempts(trials).get(number)
        else:
            trunk = open_trunk(trials, self.per_trunk, self._readable)
        if trunk is None:
            return self.handle.space.sample(trial)
        if number is None:
            epochs = trunk.user_attrs[STABLE_EPOCHS]
            trial.set_user_attr(TRUNK, {"trial": first_attempt(trunk), "epochs": epochs})
        fixed = branch_params(trunk)
        self.sampler.fix(trial.number, fixed)
        try:
            params = self.handle.space.sample(trial)
        finally:
            self.sampler.unfix(trial.number)
        if any(params.get(k) != v for k, v in fixed.items()):  # values queued with it won
            trial.set_user_attr(TRUNK, None)
        return params

    def _readable(self, trunk: int) -> bool:
        return bool(self.checkpoints.stable_epochs(trunk))

    def roles(
        self, trial: optuna.Trial, params: dict[str, Any]
    ) -> tuple[Trunk | None, Branch | None, int]:
        """A run's trunk hooks, or where its branch starts, and the trial whose seed it
        trains with (a branch: its trunk's)."""
        if not cooldown(params):
            return None, None, first_attempt(trial)
        if (trunk := trunk_of(trial)) is not None:
            kept = trial.user_attrs[TRUNK]["epochs"]
            return None, Branch(kept, functools.partial(self._load, trunk)), trunk
        hooks = Trunk(
            functools.partial(self._keep, first_attempt(trial)),
            functools.partial(self._open, trial),
        )
        return hooks, None, first_attempt(trial)

    def _load(self, trunk: int, epoch: int) -> dict[str, Any] | None:
        """A trunk's kept checkpoint, or None if it cannot be read (then the branch trains
        from step 0, to the same curve)."""
        try:
            return self.checkpoints.load_stable(trunk, epoch)
        except Exception:  # a partly synced or damaged file on a shared volume
            return None

    def _keep(self, first: int, epoch: int) -> None:
        """A trunk's stable-phase checkpoint, kept from the first epoch a branch may start
        from."""
        if epoch >= self.earliest:
            self.checkpoints.keep_stable(first, epoch)

    def _open(self, trial: optuna.Trial) -> None:
        """The trunk's stable phase is over: it opens for branches (`STABLE_EPOCHS`)."""
        if STABLE_EPOCHS in trial.user_attrs:
            return
        try:
            kept = self.checkpoints.stable_epochs(first_attempt(trial))
            trial.set_user_attr(STABLE_EPOCHS, kept)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # taken over by another worker (`Lost`): its retry opens the trunk


def tree(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """The study's trunks and branches, JSON-ready: each trunk (a trial with kept stable
    epochs) with its branches (trial number, the epoch it started from once finished),
    and the epochs the branches took from trunks instead of training them
    (``epochs_reused``) out of all epochs the trials reported."""
    latest = latest_attempts(trials)  # a trial and its retries count once
    trunks: dict[int, dict[str, Any]] = {
        number: {"trial": number, "branches": []}
        for number, t in sorted(latest.items())
        if STABLE_EPOCHS in t.user_attrs
    }
    for t in latest.values():
        if (trunk := trunk_of(t)) in trunks:
            trunks[trunk]["branches"].append(
                {"trial": t.number, "branched_at": t.user_attrs.get(BRANCHED_AT)}
            )
    return {
        "trunks": list(trunks.values()),
        "epochs_reused": sum(t.user_attrs.get(BRANCHED_AT, 0) for t in latest.values()),
        "epochs_reported": sum(len(t.intermediate_values) for t in latest.values()),
    }


def tree_line(branches: dict[str, Any]) -> str:
    """``12 branches of 5 trunks reused 96 of 410 epochs (23%)``."""
    count = sum(len(t["branches"]) for t in branches["trunks"])
    reused, reported = branches["epochs_reused"], branches["epochs_reported"]
    share = f" ({reused / reported:.0%})" if reported else ""
    return (
        f"{count} branches of {len(branches['trunks'])} trunks reused {reused} of "
        f"{reported} epochs{share}"
    )


def trunk_line(trunk: dict[str, Any]) -> str:
    """``trunk 3: branches 9 (from epoch 8), 12 (from epoch 10), 14``."""
    shown = [
        f"{b['trial']} (from epoch {b['branched_at']})" if b["branched_at"] else str(b["trial"])
        for b in trunk["branches"]
    ]
    return f"trunk {trunk['trial']}: " + (
        f"branches {', '.join(shown)}" if shown else "no branches"
    )
