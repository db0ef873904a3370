"""Creating a study from a config, and loading it (with its stored config) in a worker."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import optuna
from pydantic import ValidationError

from storage import BaseDatabase, mask_url
from sweeps.config import Grid, SweepConfig, pydantic_errors
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
    failures so far no longer counting towards a stop: `sweeps.failures`). All or nothing:
    a new study that fails part way is deleted again, and the config, which marks a study
    as launched (`load`), is stored last.

    Raises:
        UsageError: the study exists and ``resume`` is off; or ``resume`` would shrink the
            budget below the trials already holding slots, or change the direction, or the
            study was not created by `launch`.
    """
    taken = UsageError(
        f"study: {config.study!r} already exists in {mask_url(db.url)}; "
        "pass --resume to continue it, or choose another study name"
    )
    exists = config.study in optuna.get_all_study_names(storage=db.optuna)
    if exists and not resume:
        raise taken
    space = parse_space(config.space)
    try:
        study = optuna.create_study(
            storage=db.optuna,
            study_name=config.study,
            direction=config.direction,
            load_if_exists=exists,
        )
    except optuna.exceptions.DuplicatedStudyError:  # another launch created it just now
        raise taken from None
    study_id = db.optuna.get_study_id_from_name(config.study)
    try:
        if exists:
            _check_resumable(db, study, study_id, config)
            forget_failures(study)
        db.set_budget(study_id, config.budget.trials)
        if isinstance(config.sampler, Grid) and not exists:
            points = space.grid()
            random.Random(config.sampler.seed).shuffle(points)
            for point in points[: config.budget.trials]:
                study.enqueue_trial(space.searched(point))
        study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    except BaseException:
        if not exists:
            # The error that stopped the launch is the one to report, not this one's.
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=config.study, storage=db.optuna)
        raise
    return StudyHandle(study, study_id, config, space)


def _check_resumable(
    db: BaseDatabase, study: optuna.Study, study_id: int, config: SweepConfig
) -> None:
    if CONFIG_ATTR not in study.user_attrs:
        raise UsageError(
            f"study: {config.study!r} in {mask_url(db.url)} was not created by 'sweeps "
            "launch'; choose another study name"
        )
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
    try:
        config = SweepConfig.model_validate(stored)
    except ValidationError as e:  # stored by an older lr-sweeps, which checked less
        lines = pydantic_errors(e)
        raise UsageError(
            "\n".join(f"--study: {name!r}'s stored config: {x}" for x in lines)
        ) from None
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
