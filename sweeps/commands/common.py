"""Arguments and set-up shared by the commands that touch a study's storage."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.errors import RunFailed, UsageError

if TYPE_CHECKING:
    from storage import BaseDatabase
    from sweeps.config import SweepConfig
    from sweeps.results.artifact_store import ArtifactStore


def add_storage_arguments(
    parser: argparse.ArgumentParser, *, artifacts: bool = False, proxy: bool = False
) -> None:
    """``proxy``: the command also takes a storage proxy's ``grpc://HOST:PORT`` (workers)."""
    parser.set_defaults(storage_proxy=proxy)
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="database URL"
        + (", or grpc://HOST:PORT of a 'sweeps storage-proxy'" if proxy else "")
        + " (default: $SWEEPS_STORAGE, else sqlite:///sweeps.db)",
    )
    parser.add_argument(
        "--storage-file",
        metavar="FILE",
        help="read the database URL from FILE (a mounted Kubernetes Secret, say), so its "
        "password is on no command line",
    )
    if proxy:
        add_proxy_token_argument(parser, "the token the storage proxy requires")
    if artifacts:
        parser.add_argument(
            "--artifacts",
            metavar="DIR",
            help="checkpoints, logs and dashboard artifacts (default: $SWEEPS_ARTIFACTS, "
            "else beside the SQLite file, else ./sweeps-artifacts)",
        )
        parser.add_argument(
            "--artifact-store",
            metavar="URL",
            help="keep the dashboard's artifacts in an object store: s3://BUCKET or "
            "gs://BUCKET (default: $SWEEPS_ARTIFACT_STORE, else under --artifacts)",
        )


def add_proxy_token_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--proxy-token-file",
        metavar="FILE",
        help=f"read {what} from FILE (default: $SWEEPS_PROXY_TOKEN)",
    )


def proxy_token(args: argparse.Namespace, *, min_length: int = 1) -> str | None:
    """The storage proxy's token: ``--proxy-token-file``'s content, else
    ``$SWEEPS_PROXY_TOKEN``, else None. It travels in gRPC metadata: printable ASCII.

    Raises:
        UsageError: the file cannot be read, or the token is shorter than ``min_length`` or
            has other characters.
    """
    import os

    from storage import PROXY_TOKEN_ENV

    if args.proxy_token_file:
        option = "--proxy-token-file"
        token = read_file(option, args.proxy_token_file)
    elif os.environ.get(PROXY_TOKEN_ENV, "").strip():  # empty: unset, as $SWEEPS_STORAGE
        option, token = f"${PROXY_TOKEN_ENV}", os.environ[PROXY_TOKEN_ENV].strip()
    else:
        return None
    if len(token) < min_length or not all("!" <= c <= "~" for c in token):
        raise UsageError(
            f"{option}: the token must be {min_length} or more printable ASCII characters "
            "without spaces, e.g. the output of 'openssl rand -hex 32'"
        )
    return token


def read_file(option: str, path: str) -> str:
    """The text in ``path``, stripped (a Secret's file may end in a newline).

    Raises:
        UsageError: it cannot be read, or holds nothing.
    """
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise UsageError(f"{option}: cannot read {path}: {why}") from None
    if not text:
        raise UsageError(f"{option}: {path} is empty")
    return text


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """``--stack`` and ``--device``, which override the config's for the workers."""
    parser.add_argument(
        "--stack",
        type=int,
        default=None,
        metavar="K",
        help="train up to K trials at once as one batched model (default: the config's "
        "stack, else 1)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N or auto (default: the config's device, else cpu)",
    )
    parser.add_argument(
        "--gpus",
        default=None,
        metavar="LIST",
        help="GPUs that command trials share out, objective.processes each, e.g. 0,1,2,3 "
        "(default: every GPU torch sees when the device is cuda or auto, else none)",
    )


def check_stack(args: argparse.Namespace) -> None:
    from sweeps.config import MAX_STACK

    if args.stack is not None and not 1 <= args.stack <= MAX_STACK:
        raise UsageError(f"--stack: must be an integer in [1, {MAX_STACK}], got {args.stack}")


# Every database a command opened, for `close_databases` when the process ends.
_OPENED: list[BaseDatabase] = []


def open_database(
    args: argparse.Namespace, *, create: bool = False, wait: bool = False
) -> BaseDatabase:
    """The study database named by ``--storage``/``$SWEEPS_STORAGE``/the default
    (`storage.open_database`). Only commands that create studies (``create``) may create
    a database; the others open only what already is one, and write nothing to anything
    else. With ``wait`` (a worker, which may start while its database or proxy restarts),
    an unreachable one is retried as every worker call is (`storage.resilience`); what no
    wait can fix (`storage.StorageRefused`) is a usage error at once."""
    import storage
    from storage.resilience import retry_seconds

    try:
        retry_seconds()  # checked before anything runs: every storage call reads it
    except ValueError as e:
        raise UsageError(str(e)) from None

    url = storage_url(args)
    token = proxy_token(args) if url.startswith(storage.PROXY_SCHEME) else None
    try:
        opened = storage.open_database(url, wait=wait, create=create, token=token)
    except storage.CredentialsRefused as e:
        raise UsageError(
            f"{storage_option(args)}: the storage proxy refused the credentials ({e.reason}; "
            "give its token with --proxy-token-file FILE or $SWEEPS_PROXY_TOKEN)"
        ) from None
    except storage.StorageRefused as e:
        raise UsageError(str(e).replace("storage:", f"{storage_option(args)}:", 1)) from None
    except storage.StorageError as e:
        raise RunFailed(str(e)) from None
    _OPENED.append(opened)
    return opened


def close_databases() -> None:
    """Close every database `open_database` opened."""
    while _OPENED:
        _OPENED.pop().close()


def storage_url(args: argparse.Namespace) -> str:
    """``--storage`` or ``--storage-file``'s content, else ``$SWEEPS_STORAGE``, else the
    default, checked."""
    import storage

    given, option = args.storage, storage_option(args)
    if args.storage_file:
        if given:
            raise UsageError("--storage-file: give --storage or --storage-file, not both")
        given = read_file(option, args.storage_file)
    try:
        return storage.resolve_url(given, proxy=getattr(args, "storage_proxy", False))
    except storage.StorageURLError as e:
        raise UsageError(str(e).replace("storage:", f"{option}:", 1)) from None


def storage_option(args: argparse.Namespace) -> str:
    """The option that named the storage, for error lines."""
    return "--storage-file" if args.storage_file else "--storage"


def artifacts_root(args: argparse.Namespace, *, writable: bool = False) -> Path:
    """Where checkpoints and logs go; refused if it exists and is not a directory, or, with
    ``writable`` (a command that writes there), if nothing can be written there."""
    from storage.checkpoints import resolve_root, unwritable

    root = resolve_root(getattr(args, "artifacts", None), storage_url(args))
    if root.exists() and not root.is_dir():
        raise UsageError(f"--artifacts: {root} is not a directory")
    if writable and (why := unwritable(root)):
        raise UsageError(f"--artifacts: {root} is not writable ({why})")
    return root


def dashboard_store(args: argparse.Namespace) -> ArtifactStore:
    """The dashboard's artifact store named by ``--artifact-store`` or the environment."""
    from sweeps.results.artifact_store import StoreError, artifact_store

    try:
        return artifact_store(artifacts_root(args), args.artifact_store)
    except StoreError as e:
        raise UsageError(f"--artifact-store: {e}") from None


def check_artifact_store(args: argparse.Namespace) -> None:
    """`dashboard_store`'s checks, without creating anything (before a study is written)."""
    import os

    from sweeps.results.artifact_store import STORE_ENV, StoreError, object_store

    url = args.artifact_store or os.environ.get(STORE_ENV)
    if url:
        try:
            object_store(url)
        except StoreError as e:
            raise UsageError(f"--artifact-store: {e}") from None


def load_checked_config(path: str) -> SweepConfig:
    """Load and validate a config, objective included (it must be importable).

    Raises:
        UsageError: every problem found, one line each.
    """
    import objectives
    from sweeps.config import CommandObjective, ConfigError, load_yaml, parse_config

    data = load_yaml(Path(path))
    errors: list[str] = []
    try:
        config = parse_config(data)
    except ConfigError as e:
        errors = e.errors
    objective = data.get("objective") if isinstance(data, dict) else None
    if isinstance(objective, dict) and not errors:
        assert isinstance(config.objective, CommandObjective)
        errors += program_errors(config.objective.command)
    elif isinstance(objective, str) and objective:
        try:
            task = objectives.resolve(objective)
        except objectives.ObjectiveNotFound as e:
            errors.append(str(e))
        else:  # a task knows which way its metric goes, and may declare its arguments
            direction = data.get("direction", "maximize")
            if isinstance(task, objectives.Task) and direction != task.direction:
                errors.append(
                    f"direction: {objective} reports validation {task.metric_name}; "
                    f"must be {task.direction}, got {direction}"
                )
            errors += objectives.arg_errors(task, data.get("objective_args", {}), _searched(data))
    if errors:
        raise ConfigError(errors)
    return config


def _searched(data: Any) -> dict[str, Any]:
    """The space's ``args`` as parsed (`sweeps.space.Dimension`), those that parse."""
    from sweeps.space import parse_space

    space = data.get("space")
    return parse_space(space).args if isinstance(space, dict) else {}


def program_errors(command: str | list[str]) -> list[str]:
    """A command whose program is not there to run (on PATH, or in this Python environment,
    as command trials find it: `objectives.command.trial.search_path`)."""
    import shutil

    from objectives.command.template import split
    from objectives.command.trial import search_path

    program = split(command)[0]
    if "{" in program:
        return [f"objective.command: the program must be written out, got {program!r}"]
    if shutil.which(program, path=search_path()) is None:
        return [
            f"objective.command: program {program!r} is not on PATH (nor in this Python "
            "environment's bin), or is not executable"
        ]
    return []


def is_loopback(host: str) -> bool:
    """Whether only this machine reaches ``host``, a server's ``--host``: ``localhost`` or
    an address in 127.0.0.0/8 or ``::1`` (``[::1]`` too, as URLs write it). A name may
    resolve to any address: not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False
