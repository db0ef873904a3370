"""Helpers for tests that drive the `sweeps` CLI as a user would: config files, subprocesses;
and for tests that wait for an event (never for a fixed time: machines are shared and slow)."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml
from optuna.trial import FrozenTrial

from storage.optuna_internals import trial_id_of

BASE: dict[str, Any] = {
    "study": "t",
    "objective": "digits_mlp",
    "objective_args": {"hidden": 32},
    "direction": "maximize",
    "budget": {"trials": 8, "epochs": 3},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "space": {
        "lr": {"low": 0.01, "high": 0.5, "log": True},
        "optimizer": "sgd",
        "batch_size": 128,
        "schedule": {"constant": {}, "cosine": {}, "step": {"decay_steps": 20}},
    },
}


def config(tmp_path: Path, name: str = "sweep.yaml", **changes: Any) -> Path:
    """Write BASE with top-level ``changes`` (``budget={...}`` replaces the whole key)."""
    data = copy.deepcopy(BASE) | changes
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweeps(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``sweeps ARGS`` in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_epoch_curves_stored(url: str, trials: list[FrozenTrial]) -> None:
    """Each trial's stored epoch curve has a row per epoch it reported (at least one)."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        for t in trials:
            epochs = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM sweeps_curve_epochs WHERE trial_id = :t"),
                {"t": trial_id_of(t)},
            ).scalar_one()
            assert epochs == len(t.intermediate_values) > 0
    engine.dispose()


def optuna_storage(url: str) -> Any:
    """What plain Optuna opens the study at ``url`` with: the URL itself, or for Redis its
    journal (plain Optuna reads a study lr-sweeps wrote, on every backend)."""
    if not url.startswith("redis"):
        return url
    import warnings

    from optuna.storages.journal import JournalRedisBackend, JournalStorage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(JournalRedisBackend(url))


def study_trials(url: str, study: str = "t") -> list[FrozenTrial]:
    """The study's trials as plain Optuna reads them."""
    return optuna.load_study(study_name=study, storage=optuna_storage(url)).get_trials()


def wait_until(condition: Callable[[], object], timeout: float = 120) -> None:
    """Poll ``condition`` until it is true; ``timeout`` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def rounds_around_an_outage(
    one_round: Callable[[], None],
    *,
    stop: Callable[[], None],
    start: Callable[[], None],
    rounds: int = 3,
    timeout: float = 120,
) -> int:
    """``one_round`` ``rounds`` times with a server up, once begun while it is down (its
    calls retry until the server is back), then ``rounds`` times after. Each phase waits for
    its event, not for a clock. Returns how many rounds ran."""
    for _ in range(rounds):
        one_round()
    down, trying = threading.Event(), threading.Event()

    def outage() -> None:
        stop()
        down.set()
        trying.wait(timeout)
        time.sleep(1)  # a while of failed attempts before the server is back
        start()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        assert down.wait(timeout), "the server did not stop"
        trying.set()
        one_round()
    finally:
        trying.set()
        thread.join()
    for _ in range(rounds):
        one_round()
    return 2 * rounds + 1
