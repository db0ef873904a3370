"""Creating a study from a config, and loading it (with its stored config) in a worker."""

from __future__ import annotations

import random
from dataclasses import dataclass

import optuna

from storage import BaseDatabase, mask_url
from sweeps.config import Grid, SweepConfig
from sweeps.errors import UsageError
from sweeps.failures import forget_failures
from sweeps.samplers import build_pruner, build_sampler
from sweeps.space import Space, parse_space

CONFIG_ATTR = "sweeps:config"


@dataclass
class StudyHandle:
    study: optuna.Study
    study_id: int
    config: SweepConfig
    space: Space


def launch(db: BaseDatabase, config: SweepConfig, *, resume: bool = False) -> StudyHandle:
    """Create the study (or, with ``resume``, continue it under this config's budget, its
    failures so far no longer counting towards a stop: `sweeps.failures`).

    Raises:
        UsageError: the study exists and ``resume`` is off; or ``resume`` would shrink the
            budget below the trials already holding slots, or change the direction.
    """
    exists = config.study in optuna.get_all_study_names(storage=db.optuna)
    if exists and not resume:
        raise UsageError(
            f"study: {config.study!r} already exists in {mask_url(db.url)}; "
            "pass --resume to continue it, or choose another study name"
        )
    study = optuna.create_study(
        storage=db.optuna,
        study_name=config.study,
        direction=config.direction,
        load_if_exists=True,
    )
    study_id = db.optuna.get_study_id_from_name(config.study)
    if exists:
        _check_resumable(db, study, study_id, config)
        forget_failures(study)
    study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    db.set_budget(study_id, config.budget.trials)
    space = parse_space(config.space)
    if isinstance(config.sampler, Grid) and not exists:
        points = space.grid()
        random.Random(config.sampler.seed).shuffle(points)
        for point in points[: config.budget.trials]:
            study.enqueue_trial(space.searched(point))
    return StudyHandle(study, study_id, config, space)


def _check_resumable(
    db: BaseDatabase, study: optuna.Study, study_id: int, config: SweepConfig
) -> None:
    if study.direction.name.lower() != config.direction:
        raise UsageError(
            f"direction: the study {config.study!r} was created to "
            f"{study.direction.name.lower()}; a resumed study keeps its direction"
        )
    _, claimed = db.budget(study_id)
    if config.budget.trials < claimed:
        raise UsageError(
            f"budget.trials: must be >= {claimed}, the trials this study has already "
            f"started, got {config.budget.trials}"
        )


def load(db: BaseDatabase, name: str, *, worker: int | None = None) -> StudyHandle:
    """Load a study created by `launch`, with the config stored in it. For ``worker``
    (a worker's number), the study samples and prunes as its config says.

    Raises:
        UsageError: no such study, or it was not created by lr-sweeps.
    """
    if name not in optuna.get_all_study_names(storage=db.optuna):
        raise UsageError(f"--study: no study named {name!r} in {mask_url(db.url)}")
    study = optuna.load_study(study_name=name, storage=db.optuna)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise UsageError(f"--study: {name!r} was not created by 'sweeps launch'")
    config = SweepConfig.model_validate(stored)
    if worker is not None:
        study = optuna.load_study(
            study_name=name,
            storage=db.optuna,
            sampler=build_sampler(config, worker),
            pruner=build_pruner(config),
        )
    return StudyHandle(
        study, db.optuna.get_study_id_from_name(name), config, parse_space(config.space)
    )
