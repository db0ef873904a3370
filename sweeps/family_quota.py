"""Every schedule family gets tried: a sampler that, while some family has fewer than
``min_trials_per_family`` trials, gives the next trial the family with the fewest (ties in
the config's order; workers starting trials at once take different ones), and leaves
everything else to the configured sampler.

Without it a model-based sampler can starve a family for a whole study (a user reported
TPE with five families and 30 trials never drawing one), and a study that compares
families then compares four. Only the family is chosen here; its parameters and the
training parameters are the wrapped sampler's. Trials the user enqueued keep their own
family (Optuna applies fixed parameters before asking any sampler)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from storage.base import first_attempt
from sweeps.wrapped_sampler import WrappedSampler

FAMILY = "schedule"  # the Optuna parameter that picks the family (`sweeps.space`)


class FamilyQuota(WrappedSampler):
    def __init__(
        self, sampler: optuna.samplers.BaseSampler, families: Sequence[str], minimum: int
    ) -> None:
        super().__init__(sampler)
        self.families = list(families)
        self.minimum = minimum
        self._met = False  # once every family has its quota it keeps it: stop reading trials

    def due(self, study: optuna.Study, trial: FrozenTrial) -> str | None:
        """The family ``trial`` must take, or None when each has its quota. A trial and its
        retries count once; a failed one counts (its family was tried)."""
        if self._met:
            return None
        trials = study.get_trials(deepcopy=False)
        tried = Counter({first_attempt(t): t.params.get(FAMILY) for t in trials}.values())
        least = min(tried[f] for f in self.families)
        if least >= self.minimum:
            self._met = True
            return None
        fewest = [f for f in self.families if tried[f] == least]
        # Earlier trials choosing their family right now (other workers) take the first ones.
        choosing = sum(
            t.state == TrialState.RUNNING and t.number < trial.number and FAMILY not in t.params
            for t in trials
        )
        return fewest[choosing % len(fewest)]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self.sampler.infer_relative_search_space(study, trial)
        if FAMILY in space and self.due(study, trial) is not None:
            space = {k: v for k, v in space.items() if k != FAMILY}  # chosen independently
        return space

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name == FAMILY and (family := self.due(study, trial)) is not None:
            return family
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)
