"""Creating a study from a config, and loading it (with its stored config) in a worker."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from storage import BaseDatabase, mask_url
from storage.optuna_internals import study_id_of
from sweeps.config import STORED, Grid, SweepConfig, pydantic_errors
from sweeps.errors import UsageError
from sweeps.failures import forget_failures
from sweeps.samplers import build_pruner, build_sampler
from sweeps.space import Space, parse_space

CONFIG_ATTR = "sweeps:config"
# A study system attr set as soon as `launch` creates the study. With no config stored yet,
# the launch never finished (killed, or its clean-up failed too): the next launch replaces it.
LAUNCHING_ATTR = "sweeps:launching"
# Trials a worker has started: a half-launched study holding one is not replaced.
STARTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class StudyHandle:
    study: optuna.Study
    study_id: int
    config: SweepConfig
    space: Space
    note: str | None = None  # what `launch` did besides, for the command to say


def launch(db: BaseDatabase, config: SweepConfig, *, resume: bool = False) -> StudyHandle:
    """Create the study (or, with ``resume``, continue it under this config's budget, its
    failures so far no longer counting towards a stop: `sweeps.failures`). All or nothing:
    a new study that fails part way is deleted again, and the config, which marks a study
    as launched (`load`), is stored last. A study an earlier launch left half-created (it
    was killed, or its clean-up failed) is replaced, with or without ``resume``.

    Raises:
        UsageError: the study exists and ``resume`` is off; or ``resume`` would shrink the
            budget below the trials already holding slots, or change the direction, or the
            study was not created by `launch`.
    """
    taken = UsageError(
        f"study: {config.study!r} already exists in {mask_url(db.url)}; "
        "pass --resume to continue it, or choose another study name"
    )
    space = parse_space(config.space)
    note = None
    exists = config.study in optuna.get_all_study_names(storage=db.optuna)
    if exists and _delete_half_launched(db, config.study):
        exists = False
        note = (
            f"study {config.study!r} in {mask_url(db.url)} was left half-created by an "
            "interrupted launch; created it again"
        )
    if exists and not resume:
        raise taken
    try:
        study = optuna.create_study(
            storage=db.optuna,
            study_name=config.study,
            direction=config.direction,
            load_if_exists=exists,
        )
    except optuna.exceptions.DuplicatedStudyError:  # another launch created it just now
        raise taken from None
    study_id = study_id_of(study)
    try:
        if exists:
            _check_resumable(db, study, study_id, config)
            forget_failures(study)
        else:
            db.optuna.set_study_system_attr(study_id, LAUNCHING_ATTR, True)
        db.set_budget(study_id, config.budget.trials)
        if isinstance(config.sampler, Grid) and not exists:
            points = space.grid()
            random.Random(config.sampler.seed).shuffle(points)
            for point in points[: config.budget.trials]:
                study.enqueue_trial(space.searched(point))
        study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    except BaseException:
        if not exists:
            # The error that stopped the launch is the one to report, not this one's; a
            # study left behind is replaced by the next launch (LAUNCHING_ATTR). By id: a
            # study of this name another launch has made since is not this one.
            with contextlib.suppress(Exception):
                db.optuna.delete_study(study_id)
        raise
    return StudyHandle(study, study_id, config, space, note)


def _half_launched(db: BaseDatabase, study_id: int) -> bool:
    """Created by a `launch` that stored no config, and no trial started."""
    return (
        bool(db.optuna.get_study_system_attrs(study_id).get(LAUNCHING_ATTR))
        and CONFIG_ATTR not in db.optuna.get_study_user_attrs(study_id)
        and not db.optuna.get_all_trials(study_id, deepcopy=False, states=STARTED)
    )


def _delete_half_launched(db: BaseDatabase, name: str) -> bool:
    """Delete the study ``name`` if it is half-launched (`_half_launched`); whether it was."""
    study_id = db.optuna.get_study_id_from_name(name)
    if not _half_launched(db, study_id):
        return False
    db.optuna.delete_study(study_id)
    return True


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
    if stored is None and _half_launched(db, study_id_of(study)):
        raise UsageError(
            f"--study: {name!r} was left half-created by an interrupted launch; run "
            "'sweeps launch' again to create it"
        )
    if stored is None:
        raise UsageError(f"--study: {name!r} was not created by 'sweeps launch'")
    try:
        # Leniently: the range checks added since an older lr-sweeps stored it are skipped.
        config = SweepConfig.model_validate(stored, context=STORED)
    except ValidationError as e:  # a field this version does not know, or a value never valid
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
