"""What the console tells a user: an unusable device, a stack that cannot be, the worker
command `launch` suggests."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from cli_in_process import InProcess
from optuna.trial import TrialState

from sweeps_helpers import config, sweeps

QUICK = "def objective(run):\n    run.report(0.5, 1)\n    return 0.5\n"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def assert_device_refused(result: Any, device: str, cwd: Path) -> None:
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: device: '{device}' cannot be used here: ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (cwd / "sweeps.db").exists()


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_sweeps_run_on_a_device_this_torch_cannot_use_exits_2_writing_nothing(
    tmp_path: Path, cli: InProcess, device: str
) -> None:
    result = cli("run", str(config(tmp_path, device=device)), cwd=tmp_path)
    assert_device_refused(result, device, tmp_path)


@NO_CUDA
@pytest.mark.e2e
def test_the_sweeps_program_refuses_a_device_it_cannot_use(tmp_path: Path) -> None:
    result = sweeps("run", str(config(tmp_path, device="cuda")), cwd=tmp_path, timeout=120)
    assert_device_refused(result, "cuda", tmp_path)


WORKER_DEVICES = [
    ("cuda:99", "error: --device: 'cuda:99' cannot be used here: "),  # fewer GPUs here
    ("gpu", "error: --device: must be cpu, cuda, cuda:N or auto, got 'gpu'"),
]


def assert_worker_refused(result: Any, message: str, url: str) -> None:
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert optuna.load_study(study_name="t", storage=url).get_trials() == []


@pytest.mark.parametrize(("option", "message"), WORKER_DEVICES)
def test_a_worker_refuses_a_device_before_it_runs_a_trial(
    tmp_path: Path, cli: InProcess, option: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path).returncode == 0
    result = cli("worker", "--study", "t", "--storage", url, "--device", option, cwd=tmp_path)
    assert_worker_refused(result, message, url)


@pytest.mark.e2e
def test_the_sweeps_worker_program_refuses_a_device_before_it_runs_a_trial(
    tmp_path: Path, cli: InProcess
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path).returncode == 0
    option, message = WORKER_DEVICES[0]
    result = sweeps("worker", "--study", "t", "--storage", url, "--device", option, cwd=tmp_path)
    assert_worker_refused(result, message, url)


@pytest.mark.e2e
def test_sweeps_run_says_on_the_console_that_a_user_objective_is_not_stacked(
    tmp_path: Path,
) -> None:
    (tmp_path / "quick.py").write_text(QUICK)
    cfg = config(tmp_path, objective="quick:objective", budget={"trials": 2, "epochs": 1})
    result = sweeps("run", str(cfg), "--stack", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "note: objective quick:objective cannot be stacked (it runs its own loop; an "
        "objectives.Task stacks); each worker trains one trial at a time"
    ) in result.stderr


WHERE = ["--storage", "--storage-file", "$SWEEPS_STORAGE"]  # how launch is given the storage


def launch_printing_the_hint(
    tmp_path: Path, cli: InProcess, where: str
) -> tuple[str, dict[str, str]]:
    """`sweeps launch` with the storage given as ``where`` says: the worker command it
    prints, and the environment it ran in."""
    (tmp_path / "quick.py").write_text(QUICK)
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    (tmp_path / "url.txt").write_text(url)
    given = {
        "--storage": ["--storage", url],
        "--storage-file": ["--storage-file", "url.txt"],
        "$SWEEPS_STORAGE": [],
    }[where]
    env = {"SWEEPS_STORAGE": url} if where == "$SWEEPS_STORAGE" else {}
    cfg = config(tmp_path, objective="quick:objective", budget={"trials": 2, "epochs": 1})
    launched = cli("launch", str(cfg), *given, cwd=tmp_path, env=env)
    assert launched.returncode == 0, launched.stderr
    hint = launched.stdout.splitlines()[-1].removeprefix("start workers with: ")
    assert hint.startswith("sweeps worker --study t")
    return hint, env


@pytest.mark.parametrize("where", WHERE)
def test_the_worker_command_launch_prints_opens_the_study_as_written(
    tmp_path: Path, cli: InProcess, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The hint as `sweeps worker` parses it, in the user's shell: the launched study."""
    from sweeps.cli import build_parser
    from sweeps.commands.common import storage_url

    hint, env = launch_printing_the_hint(tmp_path, cli, where)
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(shlex.split(hint)[1:])
    assert (args.command, args.study) == ("worker", "t")
    assert storage_url(args) == f"sqlite:///{tmp_path / 'elsewhere.db'}"


@pytest.mark.e2e
def test_the_worker_command_launch_prints_runs_as_written(tmp_path: Path, cli: InProcess) -> None:
    hint, env = launch_printing_the_hint(tmp_path, cli, "--storage-file")
    # The hint as a user pastes it, `sweeps` being the venv's entry point.
    argv = [sys.executable, "-m", "sweeps", *shlex.split(hint)[1:]]
    worker = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}
    )
    assert worker.returncode == 0, worker.stderr
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    done = optuna.load_study(study_name="t", storage=url).get_trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2


def test_a_password_is_not_printed_in_the_worker_command() -> None:
    import argparse

    from sweeps.commands.launch import worker_command

    args = argparse.Namespace(storage="postgresql+psycopg://u:secret@db/s", storage_file=None)
    line = worker_command(args, "t", args.storage)
    assert "secret" not in line and "--storage-file FILE" in line


def test_a_dashboard_on_a_taken_port_says_only_that_it_cannot_listen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    import storage
    from sweeps.cli import main

    url = f"sqlite:///{tmp_path / 's.db'}"
    storage.open_database(url).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--storage", url, "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 2
    assert (
        err == f"error: --host/--port: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    assert out == ""  # nothing claims to listen
