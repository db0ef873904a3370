"""Optuna samplers and pruners from the config, by name (an allow-list, nothing else)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from sweeps import config as c
from sweeps.branches import FixedParams
from sweeps.family_quota import FamilyQuota


def _tpe(s: c.TPE, seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=s.n_startup_trials,
        multivariate=s.multivariate,
        group=s.group,
        constant_liar=s.constant_liar,
    )


SAMPLERS: dict[type, Callable[[Any, int | None], optuna.samplers.BaseSampler]] = {
    c.TPE: _tpe,
    c.GP: lambda s, seed: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=s.n_startup_trials, warn_independent_sampling=False
    ),
    c.CmaEs: lambda s, seed: optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=s.n_startup_trials, warn_independent_sampling=False
    ),
    c.Random: lambda s, seed: optuna.samplers.RandomSampler(seed=seed),
    # QMC indexes one sequence by trial number: every worker must share the seed.
    c.QMC: lambda s, seed: optuna.samplers.QMCSampler(
        qmc_type=s.qmc_type,
        scramble=s.scramble,
        # Wrapped: a stored config's seed may be out of range (`sweeps.config.STORED`).
        seed=None if s.seed is None else s.seed % (c.MAX_SEED + 1),
        warn_independent_sampling=False,
    ),
    # The grid's points are enqueued at launch; the sampler only fills what they leave open.
    c.Grid: lambda s, seed: optuna.samplers.RandomSampler(seed=seed),
}


def build_sampler(config: c.SweepConfig, worker: int) -> optuna.samplers.BaseSampler:
    """The config's sampler for worker number ``worker``: workers get distinct seeds, so
    parallel workers do not suggest the same random points. Each schedule family gets its
    ``min_trials_per_family`` first (`sweeps.family_quota`; a grid enumerates them all).
    With ``branches``, it fixes a branch's parameters to its trunk's (`sweeps.branches`)."""
    seed = config.sampler.seed
    if seed is not None:  # kept a valid seed, however large the config's and the number
        seed = (seed + worker) % (c.MAX_SEED + 1)
    with warnings.catch_warnings():  # group-TPE and QMC are chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = SAMPLERS[type(config.sampler)](config.sampler, seed)
    families = list(config.space["schedule"])
    if (
        len(families) > 1
        and config.min_trials_per_family
        and not isinstance(config.sampler, c.Grid)
    ):
        sampler = FamilyQuota(sampler, families, config.min_trials_per_family)
    if config.branches is not None:  # a branch's parameters are its trunk's, but the cooldown
        sampler = FixedParams(sampler)
    return sampler


PRUNERS: dict[type, Callable[[Any, int], optuna.pruners.BasePruner]] = {
    c.NoPruner: lambda p, epochs: optuna.pruners.NopPruner(),
    c.Median: lambda p, epochs: optuna.pruners.MedianPruner(**_options(p)),
    c.Percentile: lambda p, epochs: optuna.pruners.PercentilePruner(**_options(p)),
    c.SuccessiveHalving: lambda p, epochs: optuna.pruners.SuccessiveHalvingPruner(**_options(p)),
    c.Hyperband: lambda p, epochs: optuna.pruners.HyperbandPruner(
        max_resource=epochs, **_options(p)
    ),
    c.Wilcoxon: lambda p, epochs: optuna.pruners.WilcoxonPruner(**_options(p)),
}


def blind_trials(config: c.SweepConfig) -> int | None:
    """How many of the study's first trials learn nothing from each other, or None for all:
    the sampler draws them at random (TPE's, GP's and CMA-ES's startup trials; random, QMC
    and grid sampling never learn) and the pruner prunes none of them (a median or
    percentile pruner waits for that many finished trials; no pruner never prunes). Other
    pruners (successive halving, hyperband, Wilcoxon) may prune the first trials: 0."""
    sampler, pruner = config.sampler, config.pruner
    learns_after = (
        sampler.n_startup_trials if isinstance(sampler, c.TPE | c.GP | c.CmaEs) else None
    )
    spares: int | None = 0
    if isinstance(pruner, c.NoPruner):
        spares = None
    elif isinstance(pruner, c.Median):  # a Percentile is a Median with a percentile
        spares = max(pruner.n_startup_trials, pruner.n_min_trials)
    known = [n for n in (learns_after, spares) if n is not None]
    return min(known) if known else None


def _options(model: Any) -> dict[str, Any]:
    options: dict[str, Any] = model.model_dump(exclude={"name"})
    return options


def build_pruner(config: c.SweepConfig) -> optuna.pruners.BasePruner:
    """The config's pruner; Hyperband's maximum resource is the epoch budget."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return PRUNERS[type(config.pruner)](config.pruner, config.budget.epochs)
