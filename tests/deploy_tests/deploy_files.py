"""Reading the deployment files as their tools would: compose's variable interpolation, the
image's entrypoint, Kubernetes containers, and the `sweeps` command lines in shell text."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SLURM = ROOT / "deploy" / "slurm" / "sweep.sbatch"
IMAGE = "lr-sweeps"  # the image built from the Dockerfile, as compose and Kubernetes name it

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, and $$ (a
# literal $): the forms compose and the shell share.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    """A ``${NAME:?error}`` variable that is unset."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` (a string, or lists and dicts of them) with variables replaced from ``env``
    as docker compose does."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: _substitute(m, env), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    name, op, arg = match.group("name"), match.group("op"), match.group("arg")
    given = env.get(name)
    empty_counts = op is not None and op.startswith(":")
    unset = given is None or (empty_counts and given == "")
    if not unset:
        return given or ""
    if op and op.endswith("?"):
        raise MissingVariable(f"{name}: {arg}")
    return arg if op else ""


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_service(name: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Service ``name`` of docker-compose.yml, its variables interpolated from ``env``."""
    service = interpolate(load_compose()["services"][name], env)
    assert isinstance(service, dict)
    return service


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form), read from the Dockerfile."""
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            argv = json.loads(line.removeprefix("ENTRYPOINT "))
            assert isinstance(argv, list)
            return [str(a) for a in argv]
    raise AssertionError("Dockerfile has no ENTRYPOINT")


def compose_argv(service: Mapping[str, Any]) -> list[str]:
    """What the service's container runs: the image's entrypoint, then its command."""
    command = service.get("command", [])
    assert isinstance(command, list), "compose commands are written in exec (list) form"
    return [*entrypoint(), *map(str, command)]


def kubernetes_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def kubernetes_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in kubernetes_files():
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return objects


def find_object(kind: str, name: str) -> dict[str, Any]:
    for obj in kubernetes_objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} named {name!r} in {KUBERNETES}")


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload object, None for other kinds."""
    spec = obj.get("spec", {}).get("template", {}).get("spec")
    return spec if isinstance(spec, dict) else None


def containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def container_argvs(container: Mapping[str, Any]) -> list[list[str]]:
    """The `sweeps` command lines a container of our image runs: its args after the image's
    entrypoint, or those inside a ``sh -c`` script. None for other images (PostgreSQL)."""
    if not str(container.get("image", "")).startswith(f"{IMAGE}:"):
        return []
    command = [str(c) for c in container.get("command", [])]
    args = [str(a) for a in container.get("args", [])]
    if command[:2] == ["sh", "-c"]:
        return shell_sweeps_argvs(" ".join([*command[2:], *args]))
    if command:
        return [[*command, *args]] if command[0] == "sweeps" else []
    return [[*entrypoint(), *args]]


def shell_sweeps_argvs(script: str, *, comments: bool = False) -> list[list[str]]:
    """Every ``sweeps ...`` command in shell ``script``, split as the shell would split it,
    with ``${NAME:-default}`` left for `interpolate`. With ``comments``, also the commented
    examples: comment lines whose text starts with ``sweeps``."""
    found: list[list[str]] = []
    for line in _logical_lines(script):
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if comments and text.startswith("sweeps "):
                found += _commands(text)
            continue
        found += _commands(stripped)
    return found


def _logical_lines(script: str) -> Iterator[str]:
    pending = ""
    for line in script.splitlines():
        if line.endswith("\\") and not line.lstrip().startswith("#"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def _commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    # Control operators and redirections end a simple command.
    segments: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set(";&|()<>"):
            segments.append([])
        else:
            segments[-1].append(token)
    argvs = []
    for words in segments:
        if "sweeps" in words:
            # Whatever precedes it (srun, exec, until, VAR=value) only runs it.
            argvs.append(words[words.index("sweeps") :])
    return argvs
