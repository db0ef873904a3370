"""What `sweeps run` and `sweeps status` tell a user while a study goes wrong: one error
repeating stops it early and is named with its count, `--resume` after the fix continues,
a killed worker is named as it dies (and restarted with `--restart-workers`), and `status`
shows the running trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from storage.optuna_internals import storage_of
from sweeps.cli import main
from sweeps_helpers import config, sweeps, wait_until

# An objective whose environment lacks a package: every trial fails alike.
NEEDS_A_PACKAGE = """
def objective(run):
    import helper_package_not_installed as helper
    for epoch in range(1, run.epochs + 1):
        run.report(helper.score(run.params["lr"]), epoch)
    return helper.score(run.params["lr"])
"""

# An objective to be watched (and killed) mid-trial: while the file "hold" exists, each
# trial waits after its first epoch.
SLOW = """
import os, time

def objective(run):
    for epoch in range(1, run.epochs + 1):
        run.report(epoch / 10, epoch)
        while os.path.exists("hold"):  # a test holds the trial here while it looks
            time.sleep(0.05)
    return run.epochs / 10
"""

SPACE = {
    "lr": {"low": 0.01, "high": 0.5, "log": True},
    "optimizer": "sgd",
    "batch_size": 128,
    "schedule": {"constant": {}, "cosine": {}, "polynomial": {}},
}


def states(url: str) -> dict[str, int]:
    done = optuna.load_study(study_name="t", storage=url).get_trials()
    return {
        s.name: sum(t.state == s for t in done)
        for s in TrialState
        if any(t.state == s for t in done)
    }


@pytest.mark.e2e
def test_one_error_repeating_stops_early_and_resume_continues_after_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sweeps run` in a process, then its resumes in this one (their workers in
    processes)."""
    (tmp_path / "needs.py").write_text(NEEDS_A_PACKAGE)
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(
        tmp_path,
        objective="needs:objective",
        budget={"trials": 12, "epochs": 2},  # retries 2, max_failures 12, repeated 3
        space=SPACE,
    )
    result = sweeps("run", str(cfg), "--workers", "2", "--storage", url, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = states(url)["FAIL"]
    # Three in a row across families (the first trials take one family each), plus what the
    # other worker had in flight; budget.max_failures alone would have allowed 12.
    assert 3 <= failed <= 6
    error = "ModuleNotFoundError: No module named 'helper_package_not_installed'"
    assert f"failed {failed}x: {error}" in result.stdout  # the summary's top reason
    assert "failed with the same error (budget.max_repeated_failures=3)" in result.stdout
    assert f"continue with: sweeps run {cfg} --resume" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr

    monkeypatch.chdir(tmp_path)  # the objective's module is here
    resume = ["run", str(cfg), "--workers", "1", "--storage", url, "--resume"]
    assert main(resume) == 1  # the cause is still there: it stops again, as early
    assert "failed with the same error" in capsys.readouterr().out
    assert states(url)["FAIL"] - failed <= 6

    (tmp_path / "helper_package_not_installed.py").write_text("def score(lr):\n    return lr\n")
    assert main(resume) == 0, capsys.readouterr()
    assert states(url).get("COMPLETE") == 12


def start_run(tmp_path: Path, url: str, *extra: str) -> subprocess.Popen[str]:
    """`sweeps run` of 4 trials on two workers, their trials held while "hold" exists."""
    (tmp_path / "slow.py").write_text(SLOW)
    cfg = config(
        tmp_path,
        objective="slow:objective",
        budget={"trials": 4, "epochs": 3},
        heartbeat={"interval": 0.25, "grace_period": 2.0},
        space=SPACE,
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(cfg), "--workers", "2", "--storage", url]
        + list(extra),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Its workers' logs are made once the study is launched: reading the database before
    # would race the run's creation of Optuna's schema.
    wait_until(
        lambda: (tmp_path / "s.db.artifacts" / "t" / "logs").exists() or run.poll() is not None
    )
    return run


def running_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="t", storage=url)
    return [
        t
        for t in study.get_trials(states=(TrialState.RUNNING,))
        if t.intermediate_values and "sweeps:worker" in t.user_attrs
    ]


def kill_a_worker(url: str) -> int:
    """SIGKILL the worker of a trial held in training; its process id."""
    wait_until(lambda: running_trials(url))
    trial = running_trials(url)[0]  # held: still running
    pid = int(trial.user_attrs["sweeps:worker"].rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.e2e
def test_status_shows_running_trials_and_a_killed_worker_is_named_as_it_dies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While the trials are held: `sweeps status` shows them running, with their epoch,
    worker and last value. Then a worker is SIGKILLed: `sweeps run` names it as it dies,
    and the survivor finishes the budget."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    (tmp_path / "hold").touch()  # trials wait after their first epoch while it exists
    run = start_run(tmp_path, url)
    try:
        wait_until(lambda: running_trials(url))
        capsys.readouterr()
        assert main(["status", "--study", "t", "--storage", url, "--format", "json"]) == 0
        running = json.loads(capsys.readouterr().out)["running"]
        assert main(["status", "--study", "t", "--storage", url]) == 0
        table = capsys.readouterr().out
        pid = kill_a_worker(url)
    finally:
        (tmp_path / "hold").unlink()  # the others go on
    out, err = run.communicate(timeout=300)
    assert running
    for r in running:
        assert r["worker"].rpartition(":")[2].isdigit()
        assert r["epoch"] == 0 or r["value"] == r["epoch"] / 10
    assert "running trial epoch     last  worker  settings" in table

    assert f"(pid {pid}) was killed by SIGKILL, a signal not from lr-sweeps; " in out, out
    assert run.returncode == 0, err  # the survivor finished the study's budget
    assert "ended with an error" not in err
    assert states(url).get("COMPLETE") == 4  # its trial was reaped and retried
    # The reaped trial's page shows the curves its lost worker stored, as a FAIL's does.
    study = optuna.load_study(study_name="t", storage=url)
    (lost,) = study.get_trials(states=(TrialState.FAIL,))
    dashboard = tmp_path / "s.db.artifacts" / "dashboard"
    n = lost.number
    files = {
        m.filename: (dashboard / m.artifact_id).read_text()
        for m in get_all_artifact_meta(lost, storage=storage_of(study))
    }
    assert set(files) == {f"trial-{n}-curves.svg", f"trial-{n}-steps.csv", f"trial-{n}-epochs.csv"}
    assert f"trial {n} FAIL (its worker was lost)" in files[f"trial-{n}-curves.svg"]
    epochs = files[f"trial-{n}-epochs.csv"].splitlines()
    assert epochs[1:] == [f"{e},{v}," for e, v in sorted(lost.intermediate_values.items())]


@pytest.mark.e2e
def test_restart_workers_starts_a_killed_worker_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    (tmp_path / "hold").touch()
    run = start_run(tmp_path, url, "--restart-workers", "1")
    try:
        pid = kill_a_worker(url)
    finally:
        (tmp_path / "hold").unlink()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, out + err
    assert f"(pid {pid}) was killed by SIGKILL" in out
    assert "started again as pid" in out and "(0 restart(s) left)" in out
    assert states(url).get("COMPLETE") == 4


def test_a_kill_is_not_blamed_on_the_trial_the_worker_finished_last() -> None:
    from sweeps.local_workers import how_it_ended

    assert how_it_ended(-signal.SIGKILL, "trial 2 COMPLETE 0.5 [cosine]") == (
        "was killed by SIGKILL, a signal not from lr-sweeps; "
        'what its log said last, before the kill: "trial 2 COMPLETE 0.5 [cosine]"'
    )
    assert how_it_ended(1, "ValueError: bad") == "exited with code 1: ValueError: bad"
