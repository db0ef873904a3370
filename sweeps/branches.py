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
takes no more branches. The budget counts trials as always: a branch is one trial. A
branch whose worker cannot read the trunk's checkpoint (``--artifacts`` not shared) trains
from step 0, to the same curve.

Racing workers may each give a trunk its last branch at once: a trunk then has one or two
more than M − 1.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
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
    return max(1, math.floor((1.0 - largest) * epochs))


def open_trunk(trials: Sequence[FrozenTrial], per_trunk: int) -> FrozenTrial | None:
    """The oldest trunk that takes another branch: its stable phase is trained, it was not
    pruned, and it has fewer than ``per_trunk − 1`` branches (a trial and its retries count
    once)."""
    branches = Counter(
        t.user_attrs[TRUNK]["trial"]
        for t in trials
        if TRUNK in t.user_attrs and first_attempt(t) == t.number
    )
    latest = {first_attempt(t): t for t in sorted(trials, key=lambda t: t.number)}
    for number, trunk in sorted(latest.items()):
        if (
            trunk.user_attrs.get(STABLE_EPOCHS)
            and trunk.state != TrialState.PRUNED
            and branches[number] < per_trunk - 1
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
        """Sample a new trial: as the next branch of an open trunk if there is one. A trial
        taken from the queue (a retry, a handed-back trial) keeps its parameters and role."""
        if trial.params:
            return self.handle.space.sample(trial)
        # A fresh read, not the batch's snapshot: other workers' branches count too.
        trunk = open_trunk(self.handle.study.get_trials(deepcopy=False), self.per_trunk)
        if trunk is None:
            return self.handle.space.sample(trial)
        epochs = trunk.user_attrs[STABLE_EPOCHS]
        trial.set_user_attr(TRUNK, {"trial": first_attempt(trunk), "epochs": epochs})
        self.sampler.fix(trial.number, branch_params(trunk))
        try:
            return self.handle.space.sample(trial)
        finally:
            self.sampler.unfix(trial.number)

    def roles(
        self, trial: optuna.Trial, params: dict[str, Any]
    ) -> tuple[Trunk | None, Branch | None, int]:
        """A run's trunk hooks, or where its branch starts, and the trial whose seed it
        trains with (a branch: its trunk's)."""
        if TRUNK in trial.user_attrs:
            trunk, kept = trial.user_attrs[TRUNK]["trial"], trial.user_attrs[TRUNK]["epochs"]
            return (
                None,
                Branch(kept, functools.partial(self.checkpoints.load_stable, trunk)),
                trunk,
            )
        if not cooldown(params):
            return None, None, first_attempt(trial)
        hooks = Trunk(
            functools.partial(self._keep, first_attempt(trial)),
            functools.partial(self._open, trial),
        )
        return hooks, None, first_attempt(trial)

    def _keep(self, first: int, epoch: int, saved: dict[str, Any]) -> None:
        """A trunk's stable-phase checkpoint, kept from the first epoch a branch may start
        from."""
        if epoch >= self.earliest:
            self.checkpoints.save_stable(first, epoch, saved)

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
    trunks: dict[int, dict[str, Any]] = {}
    for t in trials:
        if STABLE_EPOCHS in t.user_attrs and first_attempt(t) == t.number:
            trunks[t.number] = {"trial": t.number, "branches": []}
    for t in trials:
        if TRUNK in t.user_attrs and t.user_attrs[TRUNK]["trial"] in trunks:
            trunks[t.user_attrs[TRUNK]["trial"]]["branches"].append(
                {"trial": t.number, "branched_at": t.user_attrs.get(BRANCHED_AT)}
            )
    return {
        "trunks": list(trunks.values()),
        "epochs_reused": sum(t.user_attrs.get(BRANCHED_AT, 0) for t in trials),
        "epochs_reported": sum(len(t.intermediate_values) for t in trials),
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
