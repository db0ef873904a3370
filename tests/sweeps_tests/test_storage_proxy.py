"""Workers behind `sweeps storage-proxy` (`storage.remote`), through the CLI, on SQLite and on
the throwaway PostgreSQL: the same exact budget and curves as workers on the database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import optuna
import pytest
from optuna.trial import TrialState

from storage import CredentialsRefused, Database
from storage.base import WORKER
from storage.remote import RemoteDatabase, serve
from sweeps.config import parse_config
from sweeps.study import CONFIG_ATTR, launch
from sweeps_helpers import BASE, assert_epoch_curves_stored, config, free_port, sweeps


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pause(processes: list[subprocess.Popen[str]], signum: signal.Signals) -> None:
    for process in processes:
        process.send_signal(signum)


def finished(url: str) -> int:
    trials = optuna.load_study(study_name="t", storage=url).trials
    return sum(t.state.is_finished() for t in trials)


@pytest.mark.slow
def test_workers_behind_a_proxy_finish_exactly_the_budget(
    tmp_path: Path, storage_url: str
) -> None:
    """Three stacked workers start before the proxy (they wait for it), share one study
    through it, ride out a restart of the proxy mid-sweep, and finish exactly the budget,
    each trial with its curves; the trials name the workers that took them, not the proxy.
    SIGTERM stops the proxy cleanly."""
    cfg = config(
        tmp_path,
        budget={"trials": 24, "epochs": 4},
        pruner={"name": "median", "n_startup_trials": 2},
        stack=2,
    )
    assert sweeps("launch", str(cfg), "--storage", storage_url, cwd=tmp_path).returncode == 0
    port = str(free_port())
    address = f"grpc://127.0.0.1:{port}"
    worker_args = ("worker", "--study", "t", "--storage", address, "--artifacts", "shared")
    workers = [start(*worker_args, cwd=tmp_path) for _ in range(3)]
    time.sleep(1)
    proxy_args = ("storage-proxy", "--storage", storage_url, "--port", port)
    proxy = start(*proxy_args, cwd=tmp_path)
    try:
        # Count with the workers paused, so that the proxy stops mid-sweep however fast
        # the workers run beside a slow count (they had once finished all 24 by then).
        db = Database(storage_url)
        slots = db.trial_slots(db.optuna.get_study_id_from_name("t"), retries=0)
        deadline = time.monotonic() + 120
        while True:
            pause(workers, signal.SIGSTOP)
            counts = slots.counts()
            done = counts.get(TrialState.COMPLETE, 0) + counts.get(TrialState.PRUNED, 0)
            if done >= 6 or time.monotonic() > deadline:
                break
            pause(workers, signal.SIGCONT)
            time.sleep(0.3)
        proxy.send_signal(signal.SIGTERM)  # mid-sweep: the workers retry until it is back
        out, err = proxy.communicate(timeout=60)
        assert proxy.returncode == 0, err
        assert f"to workers at {address}" in out and "storage proxy stopped" in out
        assert 6 <= finished(storage_url) < 24
        pause(workers, signal.SIGCONT)
        db.close()
        time.sleep(2)
        proxy = start(*proxy_args, cwd=tmp_path)
        logs = ""
        for w in workers:
            out, err = w.communicate(timeout=300)
            assert w.returncode == 0, out + err
            assert "Traceback" not in err
            logs += out
        # The workers met the restart and waited it out, saying so in their logs.
        assert "storage: " in logs and "; retry 1" in logs
    finally:
        for process in [proxy, *workers]:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.communicate()

    done = optuna.load_study(study_name="t", storage=storage_url).trials
    assert len(done) == 24
    assert {t.state for t in done} <= {TrialState.COMPLETE, TrialState.PRUNED}
    pids = {str(w.pid) for w in workers}
    assert {t.user_attrs[WORKER].rsplit(":", 1)[1] for t in done} <= pids
    assert_epoch_curves_stored(storage_url, done)


def test_a_claim_retried_after_a_lost_answer_takes_one_trial(
    tmp_path: Path, storage_url: str
) -> None:
    """The client sends a claim's token with every retry: the proxy returns the trial the
    first attempt took instead of taking another."""
    db = Database(storage_url)
    handle = launch(db, parse_config({**BASE, "budget": {"trials": 3, "epochs": 1}}))
    port = free_port()
    server = serve(db, "127.0.0.1", port)
    try:
        remote = RemoteDatabase(f"grpc://127.0.0.1:{port}")
        remote.wait_ready(30)
        slots = remote.trial_slots(handle.study_id, retries=0)
        first = slots.claim(token="lost-answer")
        again = slots.claim(token="lost-answer")
        other = slots.claim()
        assert first is not None and again == first and other not in (None, first)
        assert slots.counts() == {TrialState.RUNNING: 2}
        assert remote.budget(handle.study_id) == (3, 2)
        failed = slots.fail(first, "ValueError: boom")
        assert failed is not None and failed.retry is None  # retries=0
        assert slots.counts() == {TrialState.RUNNING: 1, TrialState.FAIL: 1}
    finally:
        server.stop(grace=None)
        db.engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status", "--study", "t", "--storage", "grpc://127.0.0.1:13000"), "--storage: "),
        (("worker", "--study", "t", "--storage", "grpc://127.0.0.1"), "grpc://HOST:PORT"),
        (("worker", "--study", "t", "--storage", "grpc://u:pw@h:1"), "grpc://HOST:PORT"),
        (("storage-proxy", "--storage", "grpc://127.0.0.1:13000"), "serves workers only"),
        (("storage-proxy", "--port", "0"), "--port: must be an integer in [1, 65535]"),
        (("storage-proxy", "--threads", "0"), "--threads: must be an integer >= 1"),
        (("storage-proxy", "--host", "0.0.0.0"), "--host: 0.0.0.0 is reached from other"),
        (("storage-proxy", "--proxy-token-file", "nothing"), "--proxy-token-file: cannot read"),
    ],
)
def test_bad_proxy_arguments_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = sweeps(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_worker_gives_up_on_a_proxy_that_never_answers(tmp_path: Path) -> None:
    address = f"grpc://127.0.0.1:{free_port()}"
    result = sweeps(
        "worker",
        "--study",
        "t",
        "--storage",
        address,
        cwd=tmp_path,
        env={"SWEEPS_DB_RETRY_SECONDS": "1"},
    )
    assert result.returncode == 1
    assert result.stderr == f"error: storage {address}: no proxy answered in 1 s\n"


def test_the_proxy_never_shows_the_database_password(tmp_path: Path, postgres: Any) -> None:
    url = postgres.create_database("proxy_masking").replace("postgres@", "postgres:s3cr3t@")
    proxy = start("storage-proxy", "--storage", url, "--port", str(free_port()), cwd=tmp_path)
    assert proxy.stdout is not None
    first = proxy.stdout.readline()  # the proxy is serving
    proxy.send_signal(signal.SIGTERM)
    out, err = proxy.communicate(timeout=60)
    assert proxy.returncode == 0 and "postgres:***@" in first
    unreachable = sweeps(
        "storage-proxy",
        "--storage",
        url.replace(str(postgres.port), "1"),
        cwd=tmp_path,
        env={"SWEEPS_DB_RETRY_SECONDS": "1"},
    )
    assert unreachable.returncode == 1  # after its retries (logged), one error line:
    assert unreachable.stderr.splitlines()[-1].startswith("error: storage postgresql")
    for text in (first + out + err, unreachable.stdout + unreachable.stderr):
        assert "s3cr3t" not in text and "Traceback" not in text


def test_a_second_proxy_on_a_taken_port_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert sweeps("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path).returncode == 0
    port = str(free_port())
    first = start("storage-proxy", "--storage", url, "--port", port, cwd=tmp_path)
    try:
        assert first.stdout is not None and "serving" in first.stdout.readline()
        second = sweeps("storage-proxy", "--storage", url, "--port", port, cwd=tmp_path)
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert second.returncode == 2
    assert second.stderr == (
        f"error: --host/--port: cannot listen on 127.0.0.1:{port} (port in use, or not an "
        "address of this machine)\n"
    )


def test_a_proxy_for_other_machines_without_a_token_warns_when_trusted(tmp_path: Path) -> None:
    result = sweeps("storage-proxy", "--host", "192.0.2.1", "--trusted-network", cwd=tmp_path)
    warning, error = result.stderr.splitlines()  # the address is not ours: refused after
    assert warning.startswith("warning: --trusted-network: serving 192.0.2.1:13000 without")
    assert error.startswith("error: ") and result.returncode == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_calls_without_the_proxys_token_are_refused_and_change_nothing(tmp_path: Path) -> None:
    """With a token, the proxy refuses every call that lacks it (Optuna's and ours, a worker's
    first one with one error line), changing nothing; a worker given it finishes the study."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(tmp_path, budget={"trials": 2, "epochs": 1})
    assert sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")  # as a mounted Secret's file may end
    port = free_port()
    proxy = start(
        "storage-proxy", "--storage", url, "--port", str(port), "--host", "0.0.0.0",
        "--proxy-token-file", str(token), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proxy.stdout is not None and "with a token" in proxy.stdout.readline()
        stored = optuna.load_study(study_name="t", storage=url).user_attrs[CONFIG_ATTR]
        intruder = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
        with pytest.raises(grpc.RpcError) as refused:
            intruder.set_study_user_attr(1, CONFIG_ATTR, {**stored, "objective": "this:s"})
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError):
            intruder.get_all_studies()
        intruder.close()
        wrong = RemoteDatabase(f"grpc://127.0.0.1:{port}", token="not-the-token-at-all")
        with pytest.raises(CredentialsRefused, match=r"\(wrong token\)"):
            wrong.trial_slots(1, retries=0).claim()
        wrong.close()
        worker = ("worker", "--study", "t", "--storage", f"grpc://127.0.0.1:{port}")
        anonymous = sweeps(*worker, cwd=tmp_path, env={"SWEEPS_PROXY_TOKEN": ""})
        assert anonymous.returncode == 2 and anonymous.stderr == (
            "error: --storage: the storage proxy refused the credentials (no token given; give "
            "its token with --proxy-token-file FILE or $SWEEPS_PROXY_TOKEN)\n"
        )
        study = optuna.load_study(study_name="t", storage=url)
        assert study.user_attrs[CONFIG_ATTR] == stored and not study.trials
        done = sweeps(*worker, "--proxy-token-file", str(token), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    finally:
        proxy.terminate()
        proxy.communicate(timeout=60)
    trials = optuna.load_study(study_name="t", storage=url).trials
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
