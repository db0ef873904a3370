"""The deployment files, checked without Docker or a cluster: they parse, match the compose
spec and Kubernetes' schemas, wire together (references, environment, ports), and every
`sweeps` command in them is one the real CLI accepts."""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import sqlalchemy
import yaml
from deploy_files import (
    COMPOSE,
    DOCKERFILE,
    IMAGE,
    KUBERNETES,
    ROOT,
    SLURM,
    MissingVariable,
    compose_argv,
    compose_service,
    container_argvs,
    containers,
    entrypoint,
    find_object,
    interpolate,
    kubernetes_files,
    kubernetes_objects,
    load_compose,
    pod_spec,
    shell_sweeps_argvs,
)

import storage
import storage.checkpoints
import sweeps.commands.worker
from sweeps.cli import build_parser
from sweeps.config import load_yaml, parse_config

# The environment variable names, from the code that reads them.
STORAGE_ENV = storage.ENV_VAR
ARTIFACTS_ENV = storage.checkpoints.ENV_VAR
INDEX_ENV = sweeps.commands.worker.INDEX_ENV
SWEEPS_SERVICES = ("launcher", "worker", "dashboard")
COMPOSE_ENV = {"POSTGRES_PASSWORD": "compose-password"}
EXAMPLE = ROOT / "examples" / "digits.yaml"


def yaml_files() -> list[Path]:
    return [COMPOSE, *sorted(KUBERNETES.glob("*.yaml"))]


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: p.name)
def test_deploy_file_parses_as_yaml_documents(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


# docker compose ---------------------------------------------------------------------------


def compose_schema_errors(data: dict[str, Any]) -> list[str]:
    # The compose spec's JSON schema as check-jsonschema ships it: no download at test time.
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def test_compose_file_matches_the_compose_spec() -> None:
    assert compose_schema_errors(load_compose()) == []


def test_compose_schema_check_rejects_a_misspelt_key() -> None:
    data = copy.deepcopy(load_compose())
    data["services"]["worker"]["depends_onn"] = data["services"]["worker"].pop("depends_on")
    assert any("depends_onn" in e for e in compose_schema_errors(data))


def test_compose_services_start_in_order_and_scale() -> None:
    services = load_compose()["services"]
    assert set(services) == {"postgres", *SWEEPS_SERVICES}
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in load_compose()["volumes"], "PostgreSQL's data lives in a named volume"

    launcher = services["launcher"]
    assert launcher["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert launcher.get("restart") == "no"
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"]["launcher"]["condition"] == (
            "service_completed_successfully"
        )
    worker = services["worker"]
    assert worker["restart"] == "on-failure"
    # `--scale worker=N` needs containers without a fixed name or host port.
    assert "container_name" not in worker and "ports" not in worker


def test_compose_launcher_reads_the_config_from_a_read_only_mount() -> None:
    launcher = compose_service("launcher", COMPOSE_ENV)
    argv = compose_argv(launcher)
    assert argv[:2] == ["sweeps", "launch"] and "--resume" in argv
    mounts = [m.split(":") for m in launcher["volumes"]]
    config_mounts = [m for m in mounts if argv[2].startswith(m[1] + "/")]
    assert len(config_mounts) == 1
    source, _, mode = config_mounts[0]
    assert mode == "ro"
    # By default, the repository's examples: the config the README's demo runs.
    assert (ROOT / source / Path(argv[2]).name).resolve() == EXAMPLE


def test_compose_dashboard_is_published_on_loopback_only() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    dashboard = compose_service("dashboard", COMPOSE_ENV)
    args = build_parser().parse_args(compose_argv(dashboard)[1:])
    assert args.host == "0.0.0.0", "inside the container it must listen beyond its loopback"
    assert dashboard["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]


def test_compose_services_share_environment_names_and_artifacts() -> None:
    services = {name: compose_service(name, COMPOSE_ENV) for name in SWEEPS_SERVICES}
    urls = {service["environment"][STORAGE_ENV] for service in services.values()}
    assert len(urls) == 1, "every service must use the same study database"
    for name in ("worker", "dashboard"):
        service = services[name]
        artifacts = service["environment"][ARTIFACTS_ENV]
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert mounts.get(artifacts) == "artifacts", f"{name}: {ARTIFACTS_ENV} is not the volume"
    assert "artifacts" in load_compose()["volumes"]
    images = {service["image"] for service in services.values()}
    assert images == {f"{IMAGE}:latest"}


def test_compose_storage_url_matches_the_postgres_service() -> None:
    postgres = compose_service("postgres", COMPOSE_ENV)
    url = sqlalchemy.make_url(compose_service("worker", COMPOSE_ENV)["environment"][STORAGE_ENV])
    env = postgres["environment"]
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.database) == (
        env["POSTGRES_USER"],
        env["POSTGRES_PASSWORD"],
        env["POSTGRES_DB"],
    )
    assert (url.host, url.port) == ("postgres", 5432)


def test_compose_refuses_to_start_without_a_password() -> None:
    # No default password: compose stops with the message instead of using a known one.
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose_service("worker", {})


def test_compose_default_study_is_the_default_config_study() -> None:
    worker = build_parser().parse_args(compose_argv(compose_service("worker", COMPOSE_ENV))[1:])
    assert worker.study == load_yaml(EXAMPLE)["study"]


# Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", kubernetes_files(), ids=lambda p: p.name)
def test_kubernetes_manifest_matches_the_schema(path: Path) -> None:
    for obj in yaml.safe_load_all(path.read_text()):
        # Strict: unknown fields (a misspelt key) are errors. Schemas ship in the package.
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_schema_check_rejects_a_misspelt_key() -> None:
    job = copy.deepcopy(find_object("Job", "sweeps-worker"))
    job["spec"]["paralellism"] = job["spec"].pop("parallelism")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_objects_are_named_and_namespace_agnostic() -> None:
    objects = kubernetes_objects()
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name")
        assert "namespace" not in obj["metadata"], "kubectl -n or kustomize sets it"
    kinds = sorted(obj["kind"] for obj in objects)
    for kind in ("Secret", "ConfigMap", "PersistentVolumeClaim", "Deployment"):
        assert kind in kinds
    assert kinds.count("Job") == 2 and kinds.count("Service") == 2
    assert "StatefulSet" in kinds or kinds.count("Deployment") == 2


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) == {p.name for p in kubernetes_files()}


def sweeps_commands_of(obj: dict[str, Any]) -> list[list[str]]:
    pod = pod_spec(obj)
    return [argv for c in containers(pod) for argv in container_argvs(c)] if pod else []


def job_running(subcommand: str) -> dict[str, Any]:
    jobs = [
        obj
        for obj in kubernetes_objects()
        if obj["kind"] == "Job"
        and any(argv[1] == subcommand for argv in sweeps_commands_of(obj)[-1:])
    ]
    assert len(jobs) == 1, f"one Job runs sweeps {subcommand}"
    return jobs[0]


def test_kubernetes_worker_job_runs_parallel_workers_to_completion() -> None:
    spec = job_running("worker")["spec"]
    assert spec["parallelism"] >= 2
    # Every worker exits 0 when the budget is met: either each of `parallelism` indexes
    # completes once, or (no completions) the first success ends the Job.
    completions = spec.get("completions")
    assert completions is None or completions == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (worker,) = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    if spec.get("completionMode") == "Indexed":
        field = env[INDEX_ENV]["valueFrom"]["fieldRef"]["fieldPath"]
        assert "job-completion-index" in field


def test_kubernetes_launcher_job_can_be_re_applied() -> None:
    (launch,) = sweeps_commands_of(job_running("launch"))
    assert "--resume" in launch


def test_kubernetes_workers_wait_for_the_study_they_run() -> None:
    commands = sweeps_commands_of(job_running("worker"))
    studies = {build_parser().parse_args(argv[1:]).study for argv in commands}
    assert [argv[1] for argv in commands] == ["status", "worker"]
    assert len(studies) == 1


def walk(value: Any) -> list[dict[str, Any]]:
    """Every mapping inside ``value``."""
    if isinstance(value, dict):
        return [value, *(m for v in value.values() for m in walk(v))]
    if isinstance(value, list):
        return [m for v in value for m in walk(v)]
    return []


def keys_of(kind: str, name: str) -> set[str]:
    obj = find_object(kind, name)
    return {*obj.get("data", {}), *obj.get("stringData", {})}


def test_kubernetes_references_resolve() -> None:
    objects = kubernetes_objects()
    checked = 0
    for obj in objects:
        for node in walk(obj):
            if "secretKeyRef" in node:
                ref = node["secretKeyRef"]
                assert ref["key"] in keys_of("Secret", ref["name"])
                checked += 1
            if "configMapKeyRef" in node:
                ref = node["configMapKeyRef"]
                assert ref["key"] in keys_of("ConfigMap", ref["name"])
                checked += 1
            if "configMap" in node and "name" in node["configMap"]:
                config_map = node["configMap"]
                have = keys_of("ConfigMap", config_map["name"])
                assert {item["key"] for item in config_map.get("items", [])} <= have
                checked += 1
            if "persistentVolumeClaim" in node:
                find_object("PersistentVolumeClaim", node["persistentVolumeClaim"]["claimName"])
                checked += 1
        pod = pod_spec(obj)
        if pod is None:
            continue
        claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | claims
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{obj['metadata']['name']}: {mount['name']}"
                checked += 1
    assert checked >= 10


def test_kubernetes_services_select_pods_and_their_ports() -> None:
    pods = [
        (o["spec"]["template"]["metadata"]["labels"], pod_spec(o))
        for o in kubernetes_objects()
        if pod_spec(o) and o["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in (o for o in kubernetes_objects() if o["kind"] == "Service"):
        # ClusterIP only: the dashboard has no authentication (reach it by port-forward).
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        selector = service["spec"]["selector"]
        matched = [p for labels, p in pods if selector.items() <= labels.items()]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {
            p.get("name"): p["containerPort"] for c in containers(matched[0]) for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values()


def test_kubernetes_storage_url_matches_postgres() -> None:
    secret = find_object("Secret", "sweeps-credentials")["stringData"]
    url = sqlalchemy.make_url(secret[STORAGE_ENV])
    (postgres,) = find_object("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in postgres["env"]}
    password_ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    service = find_object("Service", "postgres")
    assert url.drivername == "postgresql+psycopg"
    assert (
        url.password
        == find_object("Secret", password_ref["name"])["stringData"][password_ref["key"]]
    )
    assert (url.username, url.database) == (
        env["POSTGRES_USER"]["value"],
        env["POSTGRES_DB"]["value"],
    )
    assert (url.host, url.port) == (
        service["metadata"]["name"],
        service["spec"]["ports"][0]["port"],
    )


def test_kubernetes_sweeps_containers_use_the_same_environment_names() -> None:
    allowed = {STORAGE_ENV, ARTIFACTS_ENV, INDEX_ENV}
    artifacts_users = 0
    for obj in kubernetes_objects():
        pod = pod_spec(obj)
        for container in containers(pod) if pod else []:
            if not container_argvs(container):
                continue
            env = {e["name"]: e for e in container.get("env", [])}
            assert STORAGE_ENV in env and set(env) <= allowed, container["name"]
            assert container["image"] == f"{IMAGE}:latest"
            if ARTIFACTS_ENV in env:
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert env[ARTIFACTS_ENV]["value"] in mounts
                artifacts_users += 1
    assert artifacts_users == 2, "the workers and the dashboard share the artifacts volume"
    claim = find_object("PersistentVolumeClaim", "sweeps-artifacts")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kubernetes_config_is_the_example_and_names_the_workers_study() -> None:
    config_map = find_object("ConfigMap", "sweeps-config")
    (text,) = config_map["data"].values()
    data = yaml.safe_load(text)
    assert data == load_yaml(EXAMPLE), "the same config on a laptop and on Kubernetes"
    parse_config(data)
    (launch,) = sweeps_commands_of(job_running("launch"))
    assert Path(launch[2]).name in config_map["data"]
    worker = sweeps_commands_of(job_running("worker"))[-1]
    assert build_parser().parse_args(worker[1:]).study == data["study"]


# SLURM ------------------------------------------------------------------------------------


def test_slurm_script_is_an_array_job_that_reads_storage_from_the_environment() -> None:
    text = SLURM.read_text()
    assert text.startswith("#!/bin/bash\n")
    directives = re.findall(r"^#SBATCH (\S+)", text, re.MULTILINE)
    assert any(re.fullmatch(r"--array=0-\d+(%\d+)?", d) for d in directives)
    # sbatch stops reading directives at the first command.
    first_command = next(
        i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#")
    )
    assert all(not line.startswith("#SBATCH") for line in text.splitlines()[first_command:]), (
        "an #SBATCH line after a command is ignored"
    )
    assert f"${{{STORAGE_ENV}:?" in text, "a missing storage URL stops the task"
    assert f"export {ARTIFACTS_ENV}=" in text
    assert f"export {INDEX_ENV}=" in text and "SLURM_ARRAY_TASK_ID" in text
    (launch, worker) = shell_sweeps_argvs(text, comments=True)
    assert launch[:2] == ["sweeps", "launch"] and "--resume" in launch
    assert worker[:2] == ["sweeps", "worker"] and "--storage" not in worker
    study = build_parser().parse_args(interpolate(worker, {})[1:]).study
    assert study == load_yaml(ROOT / launch[2])["study"]


# Every command ----------------------------------------------------------------------------


def every_sweeps_command() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for name in load_compose()["services"]:
        service = compose_service(name, COMPOSE_ENV)
        if str(service.get("image", "")).startswith(f"{IMAGE}:"):
            found.append((f"compose-{name}", compose_argv(service)))
    for obj in kubernetes_objects():
        for i, argv in enumerate(sweeps_commands_of(obj)):
            found.append((f"kubernetes-{obj['metadata']['name']}-{i}", argv))
    for i, argv in enumerate(shell_sweeps_argvs(SLURM.read_text(), comments=True)):
        # The shell's ${NAME:-default} as if nothing were set.
        found.append((f"slurm-{i}", interpolate(argv, {})))
    return found


COMMANDS = every_sweeps_command()


def test_every_deploy_file_has_its_sweeps_commands_found() -> None:
    found = {(source.split("-")[0], argv[1]) for source, argv in COMMANDS}
    assert found >= {
        ("compose", "launch"),
        ("compose", "worker"),
        ("compose", "dashboard"),
        ("kubernetes", "launch"),
        ("kubernetes", "status"),
        ("kubernetes", "worker"),
        ("kubernetes", "dashboard"),
        ("slurm", "launch"),
        ("slurm", "worker"),
    }


@pytest.mark.parametrize(("source", "argv"), COMMANDS, ids=[s for s, _ in COMMANDS])
def test_sweeps_command_parses_with_the_real_cli(
    source: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert argv[0] == "sweeps"
    parser = build_parser()
    try:
        parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{source}: {' '.join(argv)}: {capsys.readouterr().err}")
    # argparse accepts a prefix (--thread for --threads); the files spell options out.
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = subparsers.choices[argv[1]]._option_string_actions
    for word in argv[2:]:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{source}: {word} is not spelt out"


# Dockerfile -------------------------------------------------------------------------------


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))


def test_dockerfile_builds_cpu_torch_by_default_at_the_pinned_version() -> None:
    text = DOCKERFILE.read_text()
    args = dockerfile_args()
    # python:3.11-slim unless the build names another base (build-local.sh's Debian one).
    assert args["BASE_IMAGE"] == "python:3.11-slim"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
    assert args["TORCH_INDEX"] == "cpu"
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert pin and args["TORCH_VERSION"] == pin.group(1)
    assert "/whl/${TORCH_INDEX}" in text and '"torch==${TORCH_VERSION}"' in text
    # torch is installed before the project, so the project's install keeps that build.
    assert text.index("torch==${TORCH_VERSION}") < text.index("pip install .")
    assert entrypoint() == ["sweeps"]


def test_dockerfile_copies_the_packages_and_dockerignore_keeps_them() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        source
        for sources in re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
        for source in sources.split()
    }
    assert copied >= packages | {"pyproject.toml", pyproject["project"]["readme"]}
    ignored = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    assert ".venv" in ignored and ".git" in ignored
