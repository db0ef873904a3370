"""Creating a study from a config, and loading it (with its stored config) in a worker."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

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
# A study system attr set as soon as `launch` creates the study, naming that launch (host,
# pid, a token, the time). With no config stored yet, the launch is running or never
# finished (killed, or its clean-up failed too); once it is gone (`_launch_gone`), the next
# launch replaces the study.
LAUNCHING_ATTR = "sweeps:launching"
# A launch on another machine, whose process cannot be looked up, is taken for gone after
# this long: far beyond the longest launch (MAX_GRID_POINTS queued at a few hundred a second).
LAUNCH_GONE_SECONDS = 600.0
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
    if exists and _delete_abandoned(db, config.study):
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
    mark = _launch_mark()
    try:
        if exists:
            _check_resumable(db, study, study_id, config)
            forget_failures(study)
        else:
            db.optuna.set_study_system_attr(study_id, LAUNCHING_ATTR, mark)
        db.set_budget(study_id, config.budget.trials)
        if isinstance(config.sampler, Grid) and not exists:
            points = space.grid()
            random.Random(config.sampler.seed).shuffle(points)
            for point in points[: config.budget.trials]:
                study.enqueue_trial(space.searched(point))
        study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    except BaseException as e:
        if not exists:
            # The error that stopped the launch is the one to report, not this one's; a
            # study left behind is replaced by the next launch (LAUNCHING_ATTR). Only while
            # it holds this launch's mark: SQLite reuses a deleted study's id, so the study
            # with this id may be another launch's by now.
            with contextlib.suppress(Exception):
                if db.optuna.get_study_system_attrs(study_id).get(LAUNCHING_ATTR) == mark:
                    db.optuna.delete_study(study_id)
        if isinstance(e, KeyError) and not _ours(db, config.study, study_id, mark):
            raise UsageError(
                f"study: {config.study!r} was replaced while this launch ran (another launch "
                "took it for abandoned); launch it again"
            ) from None
        raise
    return StudyHandle(study, study_id, config, space, note)


def _launch_mark() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "at": time.time(),
    }


def _ours(db: BaseDatabase, name: str, study_id: int, mark: dict[str, Any]) -> bool:
    """Whether the study ``name`` is still the one this launch created."""
    try:
        same = db.optuna.get_study_id_from_name(name) == study_id
        return same and db.optuna.get_study_system_attrs(study_id).get(LAUNCHING_ATTR) == mark
    except KeyError:
        return False


def _half_launched(db: BaseDatabase, study_id: int) -> dict[str, Any] | None:
    """The launch mark of a study created by a `launch` that has stored no config (yet),
    and in which no trial started; else None."""
    mark = db.optuna.get_study_system_attrs(study_id).get(LAUNCHING_ATTR)
    if not isinstance(mark, dict) or CONFIG_ATTR in db.optuna.get_study_user_attrs(study_id):
        return None
    if db.optuna.get_all_trials(study_id, deepcopy=False, states=STARTED):
        return None
    return mark


def _launch_gone(mark: dict[str, Any]) -> bool:
    """Whether the launch that set ``mark`` no longer runs: its process is gone, on this
    machine; elsewhere, it is older than any launch lasts."""
    if mark.get("host") == socket.gethostname() and isinstance(mark.get("pid"), int):
        try:
            os.kill(mark["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    started = mark.get("at")
    return not isinstance(started, int | float) or time.time() - started > LAUNCH_GONE_SECONDS


def _delete_abandoned(db: BaseDatabase, name: str) -> bool:
    """Delete the study ``name`` if a launch left it half-created and is gone
    (`_half_launched`, `_launch_gone`); whether it is gone now.

    Raises:
        UsageError: a launch that is still running is creating it.
    """
    try:
        study_id = db.optuna.get_study_id_from_name(name)
        mark = _half_launched(db, study_id)
        if mark is None:
            return False
        if not _launch_gone(mark):
            raise UsageError(
                f"study: {name!r} is being launched right now (on {mark.get('host')}, pid "
                f"{mark.get('pid')}); wait for that launch to end, or choose another name"
            )
        db.optuna.delete_study(study_id)
    except KeyError:  # another launch deleted it first
        pass
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
    mark = _half_launched(db, study_id_of(study)) if stored is None else None
    if mark is not None and not _launch_gone(mark):
        raise UsageError(f"--study: {name!r} is being launched; try again once it is")
    if mark is not None:
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
