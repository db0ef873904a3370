"""The Kubernetes overlay that puts `sweeps storage-proxy` between the workers and PostgreSQL
(`deploy/kubernetes-storage-proxy/`): its manifest is valid, its patch points the workers at
the proxy's Service with the proxy's token, and the proxy's and the patched workers'
commands, run as local processes against the throwaway PostgreSQL, finish exactly the
budget."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import optuna
import pytest
import yaml
from deploy_files import KUBERNETES, container_argvs, containers, find_object, pod_spec

from pg_cluster import PostgresCluster
from storage import ENV_VAR
from sweeps.cli import build_parser
from sweeps.commands.common import storage_url
from sweeps_helpers import config, free_port, sweeps

OVERLAY = KUBERNETES.parent / "kubernetes-storage-proxy"  # kustomize refuses one inside its base
TOKEN = "SWEEPS_PROXY_TOKEN"
TOKEN_REF = {"name": "sweeps-proxy-token", "key": TOKEN}


def overlay() -> dict[str, Any]:
    data = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def proxy_objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((OVERLAY / "storage-proxy.yaml").read_text()) if d]


def patched_worker_job() -> dict[str, Any]:
    """The base's worker Job with the overlay's JSON patch applied (RFC 6902 test, replace
    and add, the operations it uses), as kustomize would."""
    (entry,) = overlay()["patches"]
    assert entry["target"] == {"group": "batch", "version": "v1", "kind": "Job"} | {
        "name": "sweeps-worker"
    }
    job = copy.deepcopy(find_object("Job", "sweeps-worker"))
    for op in yaml.safe_load(entry["patch"]):
        *parents, last = op["path"].strip("/").split("/")
        node: Any = job
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if op["op"] == "add" and last == "-":  # the end of a list
            node.append(op["value"])
            continue
        index: Any = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            assert node[index] == op["value"], op
        else:
            assert op["op"] == "replace"
            node[index] = op["value"]
    return job


def proxy_address() -> tuple[str, int]:
    service = next(o for o in proxy_objects() if o["kind"] == "Service")
    (port,) = service["spec"]["ports"]
    return service["metadata"]["name"], int(port["port"])


def test_overlay_builds_on_the_base_and_lists_its_manifest() -> None:
    resources = overlay()["resources"]
    assert resources[0] == "../kubernetes"
    assert set(resources[1:]) == {
        p.name for p in OVERLAY.glob("*.yaml") if p.name != "kustomization.yaml"
    }


def test_proxy_manifest_matches_the_schema_and_serves_its_service_port() -> None:
    objects = proxy_objects()
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        assert "namespace" not in obj["metadata"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = containers(pod_spec(deployment) or {})
    (argv,) = container_argvs(container)
    args = build_parser().parse_args(argv[1:])
    assert args.command == "storage-proxy" and args.host == "0.0.0.0"
    (target,) = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[target["targetPort"]] == args.port
    env = {e["name"]: e for e in container["env"]}
    assert env[ENV_VAR]["valueFrom"]["secretKeyRef"] == {
        "name": "sweeps-credentials",
        "key": ENV_VAR,
    }
    assert env[TOKEN]["valueFrom"]["secretKeyRef"] == TOKEN_REF


def test_the_proxy_refuses_the_token_placeholder(tmp_path: Path) -> None:
    """The overlay's Secret holds a placeholder the proxy will not start with."""
    (secret,) = (o for o in proxy_objects() if o["kind"] == "Secret")
    assert secret["metadata"]["name"] == TOKEN_REF["name"]
    refused = sweeps("storage-proxy", cwd=tmp_path, env={TOKEN: secret["stringData"][TOKEN]})
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: ${TOKEN}: the token must be 16 or more")


def test_patched_workers_take_the_proxy_and_still_wait_on_the_database() -> None:
    pod = pod_spec(patched_worker_job())
    assert pod is not None
    (worker,) = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    host, port = proxy_address()
    assert env[ENV_VAR] == {"name": ENV_VAR, "value": f"grpc://{host}:{port}"}
    (argv,) = container_argvs(worker)
    args = build_parser().parse_args([*argv[1:], "--storage", env[ENV_VAR]["value"]])
    assert storage_url(args) == f"grpc://{host}:{port}"  # a worker takes a proxy URL
    assert env[TOKEN]["valueFrom"]["secretKeyRef"] == TOKEN_REF  # the proxy's
    (wait,) = pod["initContainers"]  # `sweeps status` needs the database itself
    assert {e["name"]: e for e in wait["env"]}[ENV_VAR]["valueFrom"]["secretKeyRef"]


@pytest.mark.slow
def test_the_overlays_proxy_and_workers_finish_exactly_the_budget(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    url = postgres.create_database("overlay")
    deployment = next(o for o in proxy_objects() if o["kind"] == "Deployment")
    (proxy_argv,) = container_argvs(containers(pod_spec(deployment) or {})[0])
    pod = pod_spec(patched_worker_job())
    assert pod is not None
    (worker_argv,) = container_argvs(pod["containers"][0])
    study = worker_argv[3]
    cfg = config(tmp_path, study=study, budget={"trials": 6, "epochs": 2})
    sweeps = [sys.executable, "-m", "sweeps"]
    launched = subprocess.run(
        [*sweeps, "launch", str(cfg), "--storage", url], cwd=tmp_path, capture_output=True
    )
    assert launched.returncode == 0, launched.stderr
    port = str(free_port())  # the Service's port may be taken on this machine
    argv = proxy_argv[1:]
    argv[argv.index("--port") + 1] = port
    token = "0123456789abcdef"  # the Secret's, replaced as its comment says
    proxy = subprocess.Popen(
        [*sweeps, *argv], cwd=tmp_path, env={ENV_VAR: url, TOKEN: token, "PATH": ""}, text=True
    )
    try:
        workers = [
            subprocess.Popen(
                [*sweeps, *worker_argv[1:], "--artifacts", "shared"],
                cwd=tmp_path,
                env={
                    ENV_VAR: f"grpc://127.0.0.1:{port}",
                    TOKEN: token,
                    "SWEEPS_WORKER_INDEX": str(i),
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        for w in workers:
            out, err = w.communicate(timeout=300)
            assert w.returncode == 0, out + err
    finally:
        proxy.terminate()
        proxy.wait(timeout=60)
    trials = optuna.load_study(study_name=study, storage=url).trials
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_overlay() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    objects = list(yaml.safe_load_all(built.stdout))
    job = next(
        o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "sweeps-worker"
    )
    assert job == patched_worker_job()
