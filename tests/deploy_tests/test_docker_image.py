"""The image built for real and docker-compose.yml's services run from it as containers.

The image comes from deploy/docker/build-local.sh (a debootstrap base and the torch wheel on
disk stand in for python:3.11-slim and PyTorch's index). The launcher, three workers and the
dashboard run as `docker run`s made from their compose services (command, environment,
volumes, init, stop grace period), on the host's network against the tests' throwaway
PostgreSQL, so all traffic stays on loopback. Skipped, with the reason, where Docker is not
installed or its daemon is not running.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from deploy_files import ROOT, compose_service
from optuna.trial import TrialState

import storage
from pg_cluster import PostgresCluster
from sweeps_helpers import config, free_port, wait_until

BUILD = ROOT / "deploy" / "docker" / "build-local.sh"
BASE = "lr-sweeps-base:bookworm"
TAG = "lr-sweeps:test"
STUDY = "docker-study"
BUDGET = {"trials": 4, "epochs": 30}  # epochs enough for a worker to be stopped mid-trial
WORKERS = 3
TIMEOUT_S = 600


def docker(*args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker_missing() -> str | None:
    """Why this machine cannot build and run the image, None when it can."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=60)
    if info.returncode != 0:
        return f"the Docker daemon is not running: {info.stderr.strip()[:200]}"
    if docker("image", "inspect", BASE).returncode != 0 and shutil.which("debootstrap") is None:
        return f"no {BASE} image and no debootstrap to build it"
    return None


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built (the base and Docker's layer cache are kept between runs)."""
    reason = docker_missing()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("docker") / "build.log"
    with log.open("w") as out:
        built = subprocess.run(
            [str(BUILD), TAG], stdout=out, stderr=subprocess.STDOUT, timeout=3 * TIMEOUT_S
        )
    assert built.returncode == 0, log.read_text()[-4000:]
    return TAG


class Containers:
    """Containers of compose services on the host's network; all removed at the end."""

    def __init__(self, image: str, env: Mapping[str, str], volumes: Mapping[str, str]) -> None:
        self.image = image
        self.env = env  # replaces the services' variables of the same name
        self.volumes = volumes  # compose's named volumes -> this run's Docker volumes
        self.prefix = f"lr-sweeps-test-{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    def run(self, service: Mapping[str, Any], name: str, command: list[str]) -> str:
        """Start ``service``'s container as compose would, with ``command``; its name."""
        name = f"{self.prefix}-{name}"
        argv = ["run", "--detach", "--name", name, "--network", "host"]
        if service.get("init"):
            argv.append("--init")
        if "stop_grace_period" in service:
            argv += ["--stop-timeout", str(seconds(service["stop_grace_period"]))]
        for key, value in (dict(service.get("environment", {})) | dict(self.env)).items():
            argv += ["--env", f"{key}={value}"]
        for spec in service.get("volumes", []):
            source, rest = spec.split(":", 1)
            argv += ["--volume", f"{self.volumes.get(source, source)}:{rest}"]
        started = docker(*argv, self.image, *command)
        assert started.returncode == 0, started.stderr
        self.names.append(name)
        return name

    def wait(self, name: str) -> int:
        """The container's exit code, once it has exited."""
        waited = docker("wait", name)
        assert waited.returncode == 0, waited.stderr
        return int(waited.stdout.strip())

    def logs(self, name: str) -> str:
        result = docker("logs", name)
        return result.stdout + result.stderr

    def running(self, name: str) -> bool:
        state = docker("inspect", "--format", "{{.State.Running}}", name)
        return state.stdout.strip() == "true"

    def remove(self) -> None:
        if self.names:
            docker("rm", "--force", "--volumes", *self.names)


def seconds(duration: str) -> int:
    """A compose duration such as ``60s`` or ``1m30s`` in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def option(command: list[str], name: str, value: str) -> list[str]:
    """``command`` with the value after ``name`` replaced."""
    at = command.index(name) + 1
    return [*command[:at], value, *command[at + 1 :]]


@pytest.fixture
def volume() -> Iterator[str]:
    """A fresh Docker volume for the artifacts, as compose creates one."""
    name = f"lr-sweeps-test-artifacts-{uuid.uuid4().hex[:8]}"
    created = docker("volume", "create", name)
    assert created.returncode == 0, created.stderr
    yield name
    docker("volume", "rm", "--force", name)


def study_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=url).get_trials()


def running_trial(url: str, epochs: int) -> int | None:
    """The number of a RUNNING trial with at least ``epochs`` reported, None before."""
    try:
        trials = study_trials(url)
    except KeyError:  # not launched yet
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs:
            return t.number
    return None


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def answers(url: str) -> bool:
    try:
        get_json(url)
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_the_image_runs_the_compose_services_and_a_stopped_worker_hands_its_trial_back(
    image: str, postgres: PostgresCluster, volume: str, tmp_path: Path
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    config(configs, "tiny.yaml", study=STUDY, budget=BUDGET)
    variables = {
        "POSTGRES_PASSWORD": "docker-password-3c9a1",
        "CONFIG_DIR": str(configs),
        "CONFIG": "tiny.yaml",
        "STUDY": STUDY,
    }
    launcher, worker, dashboard = (
        compose_service(name, variables) for name in ("launcher", "worker", "dashboard")
    )
    url = postgres.database_for(worker["environment"][storage.ENV_VAR], "docker_compose")
    containers = Containers(image, {storage.ENV_VAR: url}, {"artifacts": volume})
    try:
        launched = containers.run(launcher, "launcher", launcher["command"])
        assert containers.wait(launched) == 0, containers.logs(launched)
        assert f"study '{STUDY}'" in containers.logs(launched)

        # On the host's network the dashboard listens on loopback, on a free port.
        port = free_port()
        command = option(dashboard["command"], "--host", "127.0.0.1")
        board = containers.run(dashboard, "dashboard", option(command, "--port", str(port)))

        # `docker stop` on a worker in the middle of a trial: it saves the epoch in progress,
        # hands the trial back as WAITING and exits 0.
        first = containers.run(worker, "worker-1", worker["command"])
        wait_until(lambda: running_trial(url, 2) is not None, timeout=TIMEOUT_S)
        handed = running_trial(url, 2)
        stopped = docker("stop", first)
        assert stopped.returncode == 0, stopped.stderr
        log = containers.logs(first)
        assert containers.wait(first) == 0, log
        assert "SIGTERM: handing trials back" in log, log
        assert f"trial {handed} " in log and "back in the queue as WAITING" in log, log
        states = {t.number: t.state for t in study_trials(url)}
        assert states[handed] == TrialState.WAITING, states

        # The stopped worker started again and two more finish exactly the budget; one of
        # them resumes the handed-back trial from its checkpoint.
        assert docker("start", first).returncode == 0
        rest = [containers.run(worker, f"worker-{i}", worker["command"]) for i in (2, 3)]
        for name in [first, *rest]:
            assert containers.wait(name) == 0, containers.logs(name)
        trials = {t.number: t for t in study_trials(url)}
        states = [t.state for t in trials.values()]
        assert states == [TrialState.COMPLETE] * BUDGET["trials"], states  # none lost
        logs = "".join(containers.logs(name) for name in [first, *rest])
        assert f"trial {handed} resumes from the checkpoint" in logs, logs
        assert len(trials[handed].intermediate_values) == BUDGET["epochs"]

        # The dashboard answers on loopback with the finished study.
        site = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: answers(f"{site}/api/studies") or not containers.running(board),
            timeout=TIMEOUT_S,
        )
        assert containers.running(board), containers.logs(board)
        summaries = get_json(f"{site}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in summaries] == [STUDY]
        detail = get_json(f"{site}/api/studies/{summaries[0]['study_id']}")
        assert len(detail["trials"]) == BUDGET["trials"]
        with urllib.request.urlopen(f"{site}/", timeout=30) as page:
            assert page.status == 200
    finally:
        containers.remove()
