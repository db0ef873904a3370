"""Workers killed, preempted or cut off from their database, as real processes: nothing
stored is lost, no trial is stuck or counted twice, and a resumed trial's values equal an
uninterrupted run of the same trial."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from disk_faults import DAMAGE, remount, tmpfs
from objectives import BUILTIN, Diverged, Run
from pg_cluster import PostgresCluster, find_bindir
from redis_server import RedisServer
from storage import Database
from storage.base import ATTEMPT, REASON, RETRY_OF, WORKER, first_attempt
from sweeps.cli import main
from sweeps.config import load_yaml, parse_config
from sweeps.study import launch as launch_study
from sweeps.trial_attrs import params_of
from sweeps.worker import Worker, trial_seed
from sweeps_helpers import BASE, config, study_trials, sweeps, wait_until

# Long enough trials (about 0.1 s an epoch on one thread) to be caught mid-run.
SPACE = {**BASE["space"], "batch_size": 16}
ARGS = {"hidden": 128}
HEARTBEAT = {"interval": 0.5, "grace_period": 3.0}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def launch(tmp_path: Path, url: str, *, trials: int, epochs: int, **changes: Any) -> None:
    changes = {"heartbeat": HEARTBEAT, **changes}
    cfg = config(
        tmp_path,
        objective_args=ARGS,
        budget={"trials": trials, "epochs": epochs, "retries": 3},
        space=SPACE,
        **changes,
    )
    result = sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def start_worker(tmp_path: Path, url: str, name: str, stack: int = 1) -> subprocess.Popen[str]:
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--threads", "1"]
        + ["--stack", str(stack)],
        cwd=tmp_path,
        env={**os.environ, "SWEEPS_STORAGE": url},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def running_with_epochs(url: str, epochs: int) -> bool:
    try:
        trials = study_trials(url)
    except KeyError:  # not launched yet
        return False
    return any(
        t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs for t in trials
    )


def uninterrupted(trial: FrozenTrial, epochs: int) -> dict[int, float]:
    """The per-epoch values of ``trial``'s parameters trained in one go, here."""
    torch.set_num_threads(1)  # as the workers: the same sums in the same order
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    run = Run(
        study.ask(),
        params_of(trial),
        seed=trial_seed(0, first_attempt(trial)),
        epochs=epochs,
        args=ARGS,
    )
    try:
        BUILTIN["digits_mlp"](run)
    except Diverged:
        pass
    return {e["epoch"]: e["value"] for e in run.reported}


def test_a_killed_workers_trial_is_failed_requeued_and_resumed(
    tmp_path: Path, storage_url: str
) -> None:
    launch(tmp_path, storage_url, trials=3, epochs=20)
    victim = start_worker(tmp_path, storage_url, "victim")
    wait_until(lambda: running_with_epochs(storage_url, 3))
    victim.kill()  # SIGKILL: no chance to clean up
    victim.wait()
    (killed,) = [t for t in study_trials(storage_url) if t.state == TrialState.RUNNING]

    rescuer = start_worker(tmp_path, storage_url, "rescuer")
    assert rescuer.wait(timeout=300) == 0, (tmp_path / "rescuer.log").read_text()

    trials = study_trials(storage_url)
    assert sum(t.state in FINISHED for t in trials) == 3
    assert {t.state for t in trials} <= {*FINISHED, TrialState.FAIL}
    failed = next(t for t in trials if t.number == killed.number)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[REASON].startswith("stale: no heartbeat")
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == killed.number]
    assert retry.user_attrs[ATTEMPT] == 2 and retry.params == killed.params
    log = (tmp_path / "rescuer.log").read_text()
    assert f"trial {retry.number} resumes from the checkpoint of trial {killed.number}" in log
    assert retry.intermediate_values == uninterrupted(retry, 20)
    assert len(retry.intermediate_values) == 20


def test_sigterm_hands_the_trial_back_and_exits_0(tmp_path: Path, storage_url: str) -> None:
    launch(tmp_path, storage_url, trials=2, epochs=20)
    worker = start_worker(tmp_path, storage_url, "preempted")
    wait_until(lambda: running_with_epochs(storage_url, 3))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    log = (tmp_path / "preempted.log").read_text()
    assert "SIGTERM: handing trials back" in log and "back in the queue as WAITING" in log
    (handed,) = [t for t in study_trials(storage_url) if t.state == TrialState.WAITING]
    assert len(handed.intermediate_values) >= 3

    result = subprocess.run(  # another worker takes it over and finishes the budget
        [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--threads", "1"],
        cwd=tmp_path,
        env={**os.environ, "SWEEPS_STORAGE": storage_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    trials = study_trials(storage_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # no FAIL, nothing lost
    resumed = next(t for t in trials if t.number == handed.number)
    assert f"trial {handed.number} resumes from the checkpoint" in result.stdout
    assert resumed.intermediate_values == uninterrupted(resumed, 20)


def test_ctrl_c_on_sweeps_run_hands_trials_back_and_resume_finishes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(
        tmp_path,
        objective_args=ARGS,
        budget={"trials": 3, "epochs": 60},  # long enough to be running when Ctrl-C lands
        space=SPACE,
        heartbeat=HEARTBEAT,
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(cfg), "--workers", "2", "--storage", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: running_with_epochs(url, 3))
    run.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert f"continue with sweeps run {cfg} --resume" in err
    states = [t.state for t in study_trials(url)]
    assert TrialState.WAITING in states and TrialState.RUNNING not in states

    resumed = sweeps("run", str(cfg), "--workers", "2", "--storage", url, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [t.state for t in study_trials(url)] == [TrialState.COMPLETE] * 3  # none FAILed


@pytest.mark.slow
def test_chaos_killed_workers_and_a_database_outage(tmp_path: Path) -> None:
    """Three workers on PostgreSQL, some training stacks of trials; every few seconds one
    is SIGKILLed and replaced; the database is stopped for several seconds mid-sweep.
    Exactly the budget finishes, nothing is left RUNNING or WAITING, and every resumed trial
    equals an uninterrupted run."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("SWEEPS_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL binaries not found, and SWEEPS_REQUIRE_POSTGRES is set")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found")
    cluster = PostgresCluster(bindir)  # our own: this test stops it
    cluster.start()
    try:
        url = cluster.create_database("chaos")
        _chaos(tmp_path, url, cluster)
    finally:
        cluster.destroy()


def _chaos(tmp_path: Path, url: str, cluster: PostgresCluster) -> None:
    budget, epochs = 24, 12
    launch(
        tmp_path,
        url,
        trials=budget,
        epochs=epochs,
        heartbeat={"interval": 0.5, "grace_period": 8.0},  # longer than the outage
    )
    rng = random.Random(0)
    started = 0

    def spawn() -> subprocess.Popen[str]:
        nonlocal started
        started += 1
        return start_worker(tmp_path, url, f"w{started}", stack=1 + 2 * (started % 2))

    workers = [spawn() for _ in range(3)]
    kills = 0
    outage_done = False
    begin = time.monotonic()
    while any(w.poll() is None for w in workers):
        assert time.monotonic() - begin < 900, "the sweep did not finish"
        time.sleep(2)
        if not outage_done and time.monotonic() - begin > 12:
            cluster.stop()  # the database goes away for several seconds
            time.sleep(5)
            cluster.start()
            outage_done = True
            continue
        # Victims in the middle of a trial: past its second epoch (`sweeps:worker` names
        # the process that took it).
        busy = {
            int(t.user_attrs[WORKER].rsplit(":", 1)[1])
            for t in study_trials(url)
            if t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2
        }
        ripe = [w for w in workers if w.poll() is None and w.pid in busy]
        if ripe and kills < 8:
            victim = rng.choice(ripe)
            victim.kill()
            victim.wait()
            kills += 1
            workers.remove(victim)
            workers.append(spawn())
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("w*.log")))
    assert all(w.returncode == 0 for w in workers), logs[-4000:]
    assert outage_done and kills > 0

    trials = study_trials(url)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    assert by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] == budget
    assert by_state[TrialState.RUNNING] == by_state[TrialState.WAITING] == 0
    stale = [t for t in trials if t.user_attrs.get(REASON, "").startswith("stale")]
    assert stale, "no trial was caught mid-run by a kill"
    retries = [t for t in trials if RETRY_OF in t.user_attrs and t.state in FINISHED]
    assert retries and "resumes from the checkpoint" in logs
    for retry in retries:  # every resumed trial: all its epochs, as if never interrupted
        assert retry.intermediate_values == uninterrupted(retry, epochs), retry.number


@pytest.mark.slow
def test_redis_killed_workers_and_a_redis_restart(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The same guarantees with the study in Redis (`storage.redis_journal`): a worker is
    SIGKILLed mid-trial and Redis restarts mid-sweep; exactly the budget finishes, nothing
    is left RUNNING or WAITING, and the killed trial's retry equals an uninterrupted run."""
    import redis

    url = redis_server.url(2)
    redis.Redis.from_url(url).flushdb()
    budget, epochs = 10, 12
    heartbeat = {"interval": 0.5, "grace_period": 6.0}  # longer than the outage
    launch(tmp_path, url, trials=budget, epochs=epochs, heartbeat=heartbeat)
    victim = start_worker(tmp_path, url, "w1")
    workers = [start_worker(tmp_path, url, "w2", stack=3)]

    def victim_mid_trial() -> bool:
        return any(
            t.state == TrialState.RUNNING
            and len(t.intermediate_values) >= 2
            and t.user_attrs.get(WORKER, "").endswith(f":{victim.pid}")
            for t in study_trials(url)
        )

    wait_until(victim_mid_trial)
    victim.kill()  # SIGKILL mid-trial
    victim.wait()
    redis_server.stop()  # then Redis goes away for a while
    time.sleep(3)
    redis_server.start()
    workers.append(start_worker(tmp_path, url, "w3", stack=2))
    codes = [w.wait(timeout=600) for w in workers]
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("w*.log")))
    assert codes == [0, 0], logs[-4000:]

    trials = study_trials(url)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    assert by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] == budget
    assert by_state[TrialState.RUNNING] == by_state[TrialState.WAITING] == 0
    assert any(t.user_attrs.get(REASON, "").startswith("stale") for t in trials)
    retries = [t for t in trials if RETRY_OF in t.user_attrs and t.state in FINISHED]
    assert retries and "resumes from the checkpoint" in logs
    for retry in retries:
        assert retry.intermediate_values == uninterrupted(retry, epochs), retry.number


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_retry_window_is_one_error_line_and_runs_nothing(tmp_path: Path, value: str) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    launch(tmp_path, url, trials=1, epochs=1)
    result = sweeps(
        "worker", "--study", "t", "--storage", url,
        cwd=tmp_path, env={"SWEEPS_DB_RETRY_SECONDS": value},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: $SWEEPS_DB_RETRY_SECONDS: must be a number of seconds >= 0, got {value!r}"
    ]
    assert study_trials(url) == []


def test_sweeps_run_on_a_full_artifacts_disk_stops_hands_back_and_resumes(tmp_path: Path) -> None:
    """Checkpoints of about 1.2 MiB on a 2 MiB disk: whatever the order of the two
    workers' saves, none has room for a second one beside the first, so each worker stops
    with one line naming the folder and its free space, its trial handed back on the
    checkpoint it had; once there is room, --resume finishes every trial."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(
        tmp_path,
        objective_args={"hidden": 2048},  # 154k weights, as many momenta
        budget={"trials": 3, "epochs": 4},
        heartbeat=HEARTBEAT,
    )
    with tmpfs(tmp_path / "artifacts", size="2m") as artifacts:
        run = ("run", str(cfg), "--workers", "2", "--storage", url, "--artifacts", str(artifacts))
        full = sweeps(*run, cwd=tmp_path)
        assert full.returncode == 1, full.stdout + full.stderr
        checkpoints = artifacts / "t" / "checkpoints"
        said = [line for line in full.stdout.splitlines() if line.startswith("worker ")]
        assert len(said) == 2, full.stdout
        for line in said:
            assert f"stopping: no room for a checkpoint in {checkpoints} (" in line
            assert " free; " in line
        states = [t.state for t in study_trials(url)]
        assert TrialState.RUNNING not in states and TrialState.FAIL not in states
        assert TrialState.WAITING in states
        kept = sorted(checkpoints.iterdir())
        assert all(p.suffix == ".pt" for p in kept), kept  # no temporary file left
        for path in kept:  # each one complete: it loads
            assert torch.load(path, weights_only=True)["epochs"]

        remount(artifacts, "size=64m")
        resumed = sweeps(*run, "--resume", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert [t.state for t in study_trials(url)] == [TrialState.COMPLETE] * 3


# An objective whose own files (a framework's checkpoints) outgrow the disk at epoch 2.
FILLS_THE_DISK = """
def objective(run):
    for epoch in range(1, run.epochs + 1):
        run.report(0.5, epoch)
        (run.checkpoint_dir / f"epoch-{epoch}.bin").write_bytes(bytes(epoch * 1_500_000))
    return 0.5
"""


def test_a_full_disk_under_an_objectives_own_files_hands_the_trial_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fills.py").write_text(FILLS_THE_DISK)
    monkeypatch.syspath_prepend(str(tmp_path))
    db = Database(f"sqlite:///{tmp_path / 'sweeps.db'}")
    cfg = config(tmp_path, objective="fills:objective", budget={"trials": 1, "epochs": 3})
    launch_study(db, parse_config(load_yaml(cfg)))
    lines: list[str] = []
    with tmpfs(tmp_path / "artifacts", size="2m") as artifacts:
        assert Worker(db, "t", artifacts=artifacts, log=lines.append).run() == 1
        folder = artifacts / "t" / "checkpoints" / "trial-0.files"
        assert (folder / "epoch-1.bin").exists()  # what was written before stays
    (trial,) = study_trials(db.url)
    assert trial.state == TrialState.WAITING  # no attempt spent: the disk was at fault
    assert lines[-1].startswith(f"stopping: no room for the trial's files in {artifacts}")
    assert "OSError: [Errno 28] No space left on device" in lines[-1]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_set_aside_and_its_trial_starts_again_the_same(
    tmp_path: Path, damage: str
) -> None:
    """A handed-back trial whose checkpoint was damaged meanwhile: set aside, named in one
    line, and the trial trains again from step 0 to the same curve, failing no attempt."""
    torch.set_num_threads(1)  # as `uninterrupted`: the same sums in the same order
    epochs = 30
    db = Database(f"sqlite:///{tmp_path / 'sweeps.db'}")
    cfg = config(tmp_path, objective_args=ARGS, budget={"trials": 1, "epochs": epochs})
    launch_study(db, parse_config(load_yaml(cfg)))
    artifacts = tmp_path / "artifacts"
    first = Worker(db, "t", artifacts=artifacts, log=lambda _: None)
    checkpoint = first.checkpoints.path(0)

    def stop_once_saved() -> None:
        wait_until(checkpoint.exists)
        first.stop()

    stopper = threading.Thread(target=stop_once_saved)
    stopper.start()
    assert first.run() == 0
    stopper.join()
    (handed,) = study_trials(db.url)
    assert handed.state == TrialState.WAITING
    checkpoint.write_bytes(DAMAGE[damage](checkpoint.read_bytes()))
    damaged = checkpoint.read_bytes()

    lines: list[str] = []
    assert Worker(db, "t", artifacts=artifacts, log=lines.append).run() == 0
    (trial,) = study_trials(db.url)
    assert trial.state == TrialState.COMPLETE
    assert trial.intermediate_values == uninterrupted(trial, epochs)
    set_aside = checkpoint.with_name("trial-0.pt.damaged")
    assert set_aside.read_bytes() == damaged
    (warning,) = [line for line in lines if "cannot be read" in line]
    assert str(set_aside) in warning and "\n" not in warning
    assert "trial 0 has no earlier checkpoint: it starts again from step 0" in lines


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_read_only_artifacts_folder_is_one_error_line_and_writes_nothing(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(tmp_path)
    if command == "worker":
        assert main(["launch", str(cfg), "--storage", url]) == 0
    before = sorted(tmp_path.iterdir())
    capsys.readouterr()
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as ro:
        where = str(ro / "artifacts")
        args = [str(cfg)] if command == "run" else ["--study", "t"]
        code = main([command, *args, "--storage", url, "--artifacts", where])
        err = capsys.readouterr().err
        assert code == 2
        assert err == f"error: --artifacts: {where} is not writable (Read-only file system)\n"
    assert sorted(tmp_path.iterdir()) == sorted([*before, tmp_path / "ro"])  # no study, no db
    if command == "worker":
        assert study_trials(url) == []
