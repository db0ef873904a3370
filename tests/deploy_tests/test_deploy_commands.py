"""The deployment files' commands, run as local processes against the throwaway PostgreSQL:
the same argv and environment a container or SLURM task would get, with only the storage
host, the mounted paths and the config swapped for local, tiny ones."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from deploy_files import (
    ROOT,
    SLURM,
    compose_argv,
    compose_service,
    container_argvs,
    find_object,
    kubernetes_objects,
    pod_spec,
    shell_sweeps_argvs,
)

import storage
from pg_cluster import PostgresCluster
from sweeps_helpers import config

TIMEOUT_S = 600
BUDGET = {"trials": 6, "epochs": 2}
WORKERS = 3
COMPOSE_PASSWORD = "compose-password-5b1e9"


def to_host(value: str, mounts: Mapping[str, Path]) -> str:
    """``value`` with a container path under one of ``mounts`` (target -> local directory)
    replaced by the local one."""
    for target in sorted(mounts, key=len, reverse=True):
        if value == target or value.startswith(target + "/"):
            return str(mounts[target]) + value[len(target) :]
    return value


def process_env(env: Mapping[str, str], mounts: Mapping[str, Path], url: str) -> dict[str, str]:
    """This machine's environment without our variables, plus the container's ``env`` with
    the storage URL and paths made local, and the `sweeps` script first on PATH."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPS_")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    local = {k: url if k == storage.ENV_VAR else to_host(v, mounts) for k, v in env.items()}
    return base | local


def run(
    argv: list[str], env: Mapping[str, str], cwd: Path, *, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_parallel(
    commands: list[tuple[list[str], Mapping[str, str]]], cwd: Path
) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once, as a scaled service would, and wait for all. Output goes
    to files: a pipe nobody reads yet could fill and stall a worker."""
    with ExitStack() as stack:
        started = []
        for i, (argv, env) in enumerate(commands):
            out = stack.enter_context((cwd / f"process-{i}.out").open("w+"))
            err = stack.enter_context((cwd / f"process-{i}.err").open("w+"))
            process = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=out, stderr=err)
            started.append((process, out, err))
        results = []
        try:
            for process, out, err in started:
                process.wait(timeout=TIMEOUT_S)
                out.seek(0)
                err.seek(0)
                results.append(
                    subprocess.CompletedProcess(
                        process.args, process.returncode, out.read(), err.read()
                    )
                )
        finally:
            for process, _, _ in started:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return results


def assert_ok(results: list[subprocess.CompletedProcess[str]], password: str) -> None:
    for result in results:
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{result.args}: {output}"
        assert password not in output, f"{result.args} printed the password"


def assert_exact_budget(url: str, study: str) -> None:
    counts: dict[str, int] = {}
    for trial in optuna.load_study(study_name=study, storage=url).get_trials():
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == BUDGET["trials"], counts
    assert set(counts) <= {"COMPLETE", "PRUNED"}, counts


def has_files(directory: Path) -> bool:
    return directory.is_dir() and any(p.is_file() for p in directory.rglob("*"))


def workdir(tmp_path: Path) -> Path:
    # Like the image's WORKDIR: nothing of the repository's.
    path = tmp_path / "workdir"
    path.mkdir()
    return path


# docker compose ---------------------------------------------------------------------------


def compose_mounts(service: Mapping[str, Any], volumes: Mapping[str, Path]) -> dict[str, Path]:
    """The service's ``source:target[:mode]`` mounts: named volumes to local directories,
    bind mounts to their path (relative to the compose file)."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        mounts[target] = volumes[source] if source in volumes else ROOT / source
    return mounts


@pytest.mark.slow
def test_compose_launcher_and_scaled_workers_finish_exactly_the_budget(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    config(configs, "tiny.yaml", study="compose-study", budget=BUDGET)
    # What a user sets for `docker compose up`, per the file's header.
    variables = {
        "POSTGRES_PASSWORD": COMPOSE_PASSWORD,
        "CONFIG_DIR": str(configs),
        "CONFIG": "tiny.yaml",
        "STUDY": "compose-study",
    }
    volumes = {"artifacts": tmp_path / "volumes" / "artifacts"}
    launcher = compose_service("launcher", variables)
    worker = compose_service("worker", variables)
    url = postgres.database_for(worker["environment"][storage.ENV_VAR], "deploy_compose")
    cwd = workdir(tmp_path)

    def command(service: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
        mounts = compose_mounts(service, volumes)
        argv = [to_host(a, mounts) for a in compose_argv(service)]
        return argv, process_env(service["environment"], mounts, url)

    launched = run(*command(launcher), cwd=cwd)
    assert_ok([launched], COMPOSE_PASSWORD)
    assert "study 'compose-study'" in launched.stdout and "127.0.0.1" in launched.stdout
    assert_ok(run_parallel([command(worker)] * WORKERS, cwd), COMPOSE_PASSWORD)
    assert_exact_budget(url, "compose-study")
    assert has_files(volumes["artifacts"]), "workers wrote nothing to the shared volume"
    # `docker compose up` again: the launcher finds the study and succeeds.
    assert_ok([run(*command(launcher), cwd=cwd)], COMPOSE_PASSWORD)


# Kubernetes -------------------------------------------------------------------------------


def kubernetes_env(container: Mapping[str, Any], index: int) -> dict[str, str]:
    """The container's environment as the kubelet sets it: values, Secret and ConfigMap keys,
    and the Job's completion index."""
    env = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[entry["name"]] = str(find_object("Secret", ref["name"])["stringData"][ref["key"]])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[entry["name"]] = str(find_object("ConfigMap", ref["name"])["data"][ref["key"]])
        elif "job-completion-index" in source.get("fieldRef", {}).get("fieldPath", ""):
            env[entry["name"]] = str(index)
        else:
            raise AssertionError(f"unhandled env source: {entry}")
    return env


def kubernetes_mounts(
    container: Mapping[str, Any], pod: Mapping[str, Any], tmp_path: Path
) -> dict[str, Path]:
    """Each mount as a local directory: a ConfigMap's keys written as files; a volume claim
    as a directory shared by every pod that names the claim."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            path = tmp_path / "claims" / volume["persistentVolumeClaim"]["claimName"]
        else:
            path = tmp_path / "configmaps" / volume["configMap"]["name"]
        path.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = path
    return mounts


def job(subcommand: str) -> dict[str, Any]:
    for obj in kubernetes_objects():
        pod = pod_spec(obj)
        if obj["kind"] == "Job" and pod:
            argvs = container_argvs(pod["containers"][0])
            if argvs and argvs[0][1] == subcommand:
                return obj
    raise AssertionError(f"no Job runs sweeps {subcommand}")


@pytest.mark.slow
def test_kubernetes_jobs_finish_exactly_the_budget(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    launcher_pod = job("launch")["spec"]["template"]["spec"]
    worker_job = job("worker")
    worker_pod = worker_job["spec"]["template"]["spec"]
    (launcher,) = launcher_pod["containers"]
    (wait_for_study,) = worker_pod["initContainers"]
    (worker,) = worker_pod["containers"]
    study = container_argvs(worker)[0][3]
    password = sqlalchemy.make_url(kubernetes_env(worker, 0)[storage.ENV_VAR]).password
    assert password
    url = postgres.database_for(kubernetes_env(worker, 0)[storage.ENV_VAR], "deploy_k8s")
    cwd = workdir(tmp_path)

    # The ConfigMap holds the user's config; here a tiny one under the workers' study name.
    launch_mounts = kubernetes_mounts(launcher, launcher_pod, tmp_path)
    (argv,) = container_argvs(launcher)
    config_path = Path(to_host(argv[2], launch_mounts))
    config(config_path.parent, config_path.name, study=study, budget=BUDGET)
    launch_env = process_env(kubernetes_env(launcher, 0), launch_mounts, url)
    assert_ok([run([to_host(a, launch_mounts) for a in argv], launch_env, cwd)], password)

    # The init container's wait ends at once: the study exists.
    script = [*wait_for_study["command"], *wait_for_study.get("args", [])]
    wait_env = process_env(kubernetes_env(wait_for_study, 0), {}, url)
    assert_ok([run(script, wait_env, cwd, timeout=120)], password)

    commands = []
    for index in range(WORKERS):
        mounts = kubernetes_mounts(worker, worker_pod, tmp_path)
        (argv,) = container_argvs(worker)
        env = process_env(kubernetes_env(worker, index), mounts, url)
        commands.append(([to_host(a, mounts) for a in argv], env))
    assert_ok(run_parallel(commands, cwd), password)
    assert_exact_budget(url, study)
    assert has_files(tmp_path / "claims" / "sweeps-artifacts")


# SLURM ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_slurm_array_tasks_finish_exactly_the_budget(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    password = "slurm-password-0c4d2"
    url = postgres.database_for(
        f"postgresql+psycopg://sweeps:{password}@dbhost:5432/sweeps", "deploy_slurm"
    )
    home = tmp_path / "home"  # the shared filesystem: the script's default artifacts go here
    home.mkdir()
    cwd = workdir(tmp_path)
    env = process_env({}, {}, url) | {storage.ENV_VAR: url, "HOME": str(home)}

    # The script's comment: launch once, with the config swapped for a tiny one.
    (launch, _) = shell_sweeps_argvs(SLURM.read_text(), comments=True)
    tiny = config(tmp_path, "tiny.yaml", study="slurm-study", budget=BUDGET)
    assert_ok([run([*launch[:2], str(tiny), *launch[3:]], env, cwd)], password)

    # srun inside an allocation runs the task's command; outside SLURM, this stands in.
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (shims / "srun").chmod(0o755)
    tasks = [
        (
            ["bash", str(SLURM)],
            env
            | {
                "PATH": f"{shims}{os.pathsep}{env['PATH']}",
                "STUDY": "slurm-study",
                "SLURM_ARRAY_TASK_ID": str(task),
                "SLURM_CPUS_PER_TASK": "1",
            },
        )
        for task in range(WORKERS)
    ]
    assert_ok(run_parallel(tasks, cwd), password)
    assert_exact_budget(url, "slurm-study")
    assert has_files(home / "lr-sweeps-artifacts")


def test_slurm_task_without_storage_stops_before_running_a_worker(tmp_path: Path) -> None:
    env = process_env({}, {}, "unused") | {"HOME": str(tmp_path)}
    assert storage.ENV_VAR not in env
    result = run(["bash", str(SLURM)], env | {"SLURM_ARRAY_TASK_ID": "0"}, tmp_path)
    assert result.returncode != 0
    assert storage.ENV_VAR in result.stderr
    assert not (tmp_path / "sweeps.db").exists(), "it fell back to a local SQLite file"
