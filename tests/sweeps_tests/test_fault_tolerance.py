"""Workers killed, preempted or cut off from their database, as real processes: nothing
stored is lost, no trial is stuck or counted twice, and a resumed trial's values equal an
uninterrupted run of the same trial."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from disk_faults import DAMAGE, remount, tmpfs
from objectives import BUILTIN, Diverged, Run
from pg_cluster import PostgresCluster
from redis_server import RedisServer
from storage import Database, open_database
from storage.base import ATTEMPT, REASON, RETRY_OF, WORKER, first_attempt
from storage.checkpoints import default_root
from sweeps.cli import main
from sweeps.config import load_yaml, parse_config
from sweeps.study import launch as launch_study
from sweeps.trial_attrs import params_of
from sweeps.worker import Worker, trial_seed
from sweeps_helpers import BASE, config, study_trials, sweeps, wait_until

# Trials long enough (about 0.1 s an epoch on one thread) for a kill at random to catch
# them mid-run; a kill that waits for its event (HELD) needs no long trials.
LONG_SPACE = {**BASE["space"], "batch_size": 16}
ARGS = {"hidden": 128}
HEARTBEAT = {"interval": 0.5, "grace_period": 3.0}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
EPOCHS = 6  # a trial held at its 4th evaluation (HELD) has more to train

# The built-in digits MLP with evaluations that can be held: where $HOLD names a file, a
# process's evaluations after its third wait while that file exists. A test kills or stops
# a worker held there: its first trial is running, 3 epochs reported and checkpointed,
# however loaded the machine. The values are the built-in's.
HELD = "held:digits_mlp"
HELD_SOURCE = """
import dataclasses, os, time
from objectives import BUILTIN

DIGITS = BUILTIN["digits_mlp"]
EVALUATIONS = [0]

@dataclasses.dataclass(frozen=True, eq=False)
class Held(type(DIGITS)):
    def metric(self, output, target):
        EVALUATIONS[0] += 1
        while EVALUATIONS[0] > 3 and os.path.exists(os.environ.get("HOLD", "")):
            time.sleep(0.05)
        return super().metric(output, target)

digits_mlp = Held(**{f.name: getattr(DIGITS, f.name) for f in dataclasses.fields(DIGITS)})
"""


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The HELD objective in the test's folder, made the current one (a worker here imports
    it from there, as one started there does), and its hold file (present)."""
    (tmp_path / "held.py").write_text(HELD_SOURCE)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hold"
    path.touch()
    return path


def launch(tmp_path: Path, url: str, *, trials: int, epochs: int, **changes: Any) -> None:
    """`sweeps launch` of a study of digits trials (in process)."""
    changes = {"heartbeat": HEARTBEAT, **changes}
    cfg = config(
        tmp_path,
        objective_args=ARGS,
        budget={"trials": trials, "epochs": epochs, "retries": 3},
        **changes,
    )
    assert main(["launch", str(cfg), "--storage", url]) == 0


def work_here(tmp_path: Path, url: str) -> tuple[int, list[str]]:
    """Another worker, in this process (the one `sweeps worker` runs, on the artifacts of
    workers started in ``tmp_path``): its exit code and its log's lines."""
    torch.set_num_threads(1)  # as the workers: the same sums in the same order
    lines: list[str] = []
    db = open_database(url)
    try:
        worker = Worker(db, "t", artifacts=tmp_path / default_root(url), log=lines.append)
        code = worker.run()
    finally:
        db.close()
    return code, lines


def start_worker(
    tmp_path: Path, url: str, name: str, stack: int = 1, hold: Path | None = None
) -> subprocess.Popen[str]:
    """A worker logging to NAME.log; with ``hold``, its HELD trial waits there."""
    log = (tmp_path / f"{name}.log").open("w")
    env = {**os.environ, "SWEEPS_STORAGE": url}
    if hold is not None:
        env["HOLD"] = str(hold)
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--threads", "1"]
        + ["--stack", str(stack)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def storage_retries(logs: list[Path]) -> int:
    """The storage calls retried so far (through an outage) that ``logs`` tell of."""
    lines = [line for p in logs if p.exists() for line in p.read_text().splitlines()]
    return sum(line.startswith("storage: ") for line in lines)


def running_with_epochs(url: str, epochs: int, count: int = 1) -> bool:
    """Whether ``count`` trials are running with ``epochs`` epochs reported."""
    try:
        trials = study_trials(url)
    except KeyError:  # not launched yet
        return False
    running = [
        t for t in trials if t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs
    ]
    return len(running) >= count


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


@pytest.mark.e2e
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_a_killed_workers_trial_is_failed_requeued_and_resumed(
    tmp_path: Path, storage_url: str, held: Path
) -> None:
    """On PostgreSQL (killed workers on SQLite: `test_run_supervision`, `test_user_task`);
    the rescuing worker runs here."""
    launch(tmp_path, storage_url, trials=2, epochs=EPOCHS, objective=HELD)
    victim = start_worker(tmp_path, storage_url, "victim", hold=held)
    try:
        wait_until(lambda: running_with_epochs(storage_url, 3))  # held in its 4th epoch
    finally:
        victim.kill()  # SIGKILL: no chance to clean up
        victim.wait()
    (killed,) = [t for t in study_trials(storage_url) if t.state == TrialState.RUNNING]

    code, lines = work_here(tmp_path, storage_url)
    assert code == 0, lines

    trials = study_trials(storage_url)
    assert sum(t.state in FINISHED for t in trials) == 2
    assert {t.state for t in trials} <= {*FINISHED, TrialState.FAIL}
    failed = next(t for t in trials if t.number == killed.number)
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[REASON].startswith("stale: no heartbeat")
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == killed.number]
    assert retry.user_attrs[ATTEMPT] == 2 and retry.params == killed.params
    assert f"trial {retry.number} resumes from the checkpoint of trial {killed.number}" in lines
    assert retry.intermediate_values == uninterrupted(retry, EPOCHS)
    assert len(retry.intermediate_values) == EPOCHS


@pytest.mark.e2e
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_sigterm_hands_the_trial_back_and_exits_0(
    tmp_path: Path, storage_url: str, held: Path
) -> None:
    """On PostgreSQL (handing back on SQLite: the Ctrl-C test below); the worker taking the
    trial over runs here."""
    launch(tmp_path, storage_url, trials=2, epochs=EPOCHS, objective=HELD)
    worker = start_worker(tmp_path, storage_url, "preempted", hold=held)
    log = tmp_path / "preempted.log"
    try:
        wait_until(lambda: running_with_epochs(storage_url, 3))  # held in its 4th epoch
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: handing trials back" in log.read_text())
    finally:
        held.unlink()  # the epoch in progress ends
    assert worker.wait(timeout=60) == 0
    assert "back in the queue as WAITING" in log.read_text()
    (handed,) = [t for t in study_trials(storage_url) if t.state == TrialState.WAITING]
    assert len(handed.intermediate_values) == 4  # the epoch in progress was saved

    code, lines = work_here(tmp_path, storage_url)  # takes it over, finishes the budget
    assert code == 0, lines
    trials = study_trials(storage_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # no FAIL, nothing lost
    resumed = next(t for t in trials if t.number == handed.number)
    assert f"trial {handed.number} resumes from the checkpoint of trial {handed.number}" in lines
    assert resumed.intermediate_values == uninterrupted(resumed, EPOCHS)


@pytest.mark.e2e
def test_ctrl_c_on_sweeps_run_hands_trials_back_and_resume_finishes(
    tmp_path: Path, held: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(
        tmp_path,
        objective=HELD,
        objective_args=ARGS,
        budget={"trials": 3, "epochs": EPOCHS},
        heartbeat=HEARTBEAT,
    )
    logs = tmp_path / "sweeps.db.artifacts" / "t" / "logs"
    with (tmp_path / "run.err").open("w") as err:
        run = subprocess.Popen(
            [sys.executable, "-m", "sweeps", "run", str(cfg), "--workers", "2"]
            + ["--storage", url],
            cwd=tmp_path,
            env={**os.environ, "HOLD": str(held)},
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:
        wait_until(lambda: running_with_epochs(url, 3, count=2))  # both workers held
        run.send_signal(signal.SIGINT)  # Ctrl-C: `sweeps run` sends its workers SIGTERM
        wait_until(
            lambda: (
                ["SIGTERM: handing trials back" in p.read_text() for p in logs.glob("worker-*")]
                == [True, True]
            )
        )
    finally:
        held.unlink()  # the epochs in progress end
    said = (tmp_path / "run.err").read_text
    assert run.wait(timeout=120) == 130, said()
    assert f"continue with sweeps run {cfg} --resume" in said()
    states = [t.state for t in study_trials(url)]
    assert states.count(TrialState.WAITING) == 2 and TrialState.RUNNING not in states

    capsys.readouterr()
    resumed = main(["run", str(cfg), "--workers", "1", "--storage", url, "--resume"])
    assert resumed == 0, capsys.readouterr()
    assert [t.state for t in study_trials(url)] == [TrialState.COMPLETE] * 3  # none FAILed


@pytest.mark.e2e
@pytest.mark.slow
def test_chaos_killed_workers_and_a_database_outage(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """Workers on PostgreSQL, every other one training stacks of three trials; two are
    SIGKILLed mid-trial, the first replaced, and the database is stopped mid-sweep until a
    worker finds it gone. Exactly the budget finishes, nothing is left RUNNING or WAITING,
    and every resumed trial equals an uninterrupted run."""
    url = postgres.create_database(f"chaos_{os.getpid()}")
    budget, epochs = 6, 8
    launch(
        tmp_path,
        url,
        trials=budget,
        epochs=epochs,
        space=LONG_SPACE,
        # Longer than the outage, which lasts until a worker finds the database gone.
        heartbeat={"interval": 0.5, "grace_period": 6.0},
    )
    rng = random.Random(0)
    started = 0

    def spawn() -> subprocess.Popen[str]:
        nonlocal started
        started += 1
        return start_worker(tmp_path, url, f"w{started}", stack=1 + 2 * (started % 2))

    def mid_trial() -> list[subprocess.Popen[str]]:
        """Live workers in the middle of a trial: past its second epoch and three from its
        end (`sweeps:worker` names the process that took it)."""
        busy = {
            int(t.user_attrs[WORKER].rsplit(":", 1)[1])
            for t in study_trials(url)
            if t.state == TrialState.RUNNING and 2 <= len(t.intermediate_values) <= epochs - 3
        }
        return [w for w in workers if w.poll() is None and w.pid in busy]

    def outage() -> None:
        """The database goes away until a worker finds it gone."""
        logs = sorted(tmp_path.glob("w*.log"))
        before = storage_retries(logs)
        postgres.stop()
        try:
            wait_until(lambda: storage_retries(logs) > before)
        finally:
            postgres.start()

    workers = [spawn(), spawn()]
    kills = 0
    outage_done = False
    begin = time.monotonic()
    try:
        while any(w.poll() is None for w in workers):
            assert time.monotonic() - begin < 600, "the sweep did not finish"
            ripe = mid_trial() if kills < 2 else []
            if ripe:
                victim = rng.choice(ripe)
                victim.kill()
                victim.wait()
                kills += 1
                workers.remove(victim)
                if kills == 1:  # replaced; after the second, the survivor finishes alone
                    workers.append(spawn())
                if not outage_done:  # with a killed worker's trials waiting to go stale
                    outage()
                    outage_done = True
            time.sleep(0.2)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
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


@pytest.mark.e2e
def test_redis_killed_workers_and_a_redis_restart(
    tmp_path: Path, redis_server: RedisServer, held: Path
) -> None:
    """The same guarantees with the study in Redis (`storage.redis_journal`): a worker is
    SIGKILLed mid-trial and Redis restarts mid-sweep; exactly the budget finishes, nothing
    is left RUNNING or WAITING, and the killed trial's retry equals an uninterrupted run."""
    import redis

    url = redis_server.url(2)
    redis.Redis.from_url(url).flushdb()
    budget = 6
    heartbeat = {"interval": 0.5, "grace_period": 4.0}  # longer than the outage
    launch(tmp_path, url, trials=budget, epochs=EPOCHS, heartbeat=heartbeat, objective=HELD)
    victim = start_worker(tmp_path, url, "w1", hold=held)
    worker = start_worker(tmp_path, url, "w2", stack=3)

    def victim_mid_trial() -> bool:
        return any(
            t.state == TrialState.RUNNING
            and len(t.intermediate_values) >= 3
            and t.user_attrs.get(WORKER, "").endswith(f":{victim.pid}")
            for t in study_trials(url)
        )

    try:
        wait_until(victim_mid_trial)  # held in its 4th epoch
        victim.kill()  # SIGKILL mid-trial
        victim.wait()
        before = storage_retries([tmp_path / "w2.log"])
        redis_server.stop()  # then Redis goes away until the other worker finds it gone
        try:
            wait_until(lambda: storage_retries([tmp_path / "w2.log"]) > before)
        finally:
            redis_server.start()
        code = worker.wait(timeout=600)
    finally:
        for w in (victim, worker):
            if w.poll() is None:
                w.kill()
                w.wait()
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("w*.log")))
    assert code == 0, logs[-4000:]

    trials = study_trials(url)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    assert by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED] == budget
    assert by_state[TrialState.RUNNING] == by_state[TrialState.WAITING] == 0
    assert any(t.user_attrs.get(REASON, "").startswith("stale") for t in trials)
    retries = [t for t in trials if RETRY_OF in t.user_attrs and t.state in FINISHED]
    assert retries and "resumes from the checkpoint" in logs
    for retry in retries:
        assert retry.intermediate_values == uninterrupted(retry, EPOCHS), retry.number


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_retry_window_is_one_error_line_and_runs_nothing(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    assert main(["launch", str(config(tmp_path)), "--storage", url]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SWEEPS_DB_RETRY_SECONDS", value)
    assert main(["worker", "--study", "t", "--storage", url]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: $SWEEPS_DB_RETRY_SECONDS: must be a number of seconds >= 0, got {value!r}"
    ]
    assert study_trials(url) == []


@pytest.mark.e2e
def test_sweeps_run_on_a_full_artifacts_disk_stops_hands_back_and_resumes(tmp_path: Path) -> None:
    """Checkpoints of about 1.2 MiB on a 2 MiB disk: whatever the order of the two
    workers' saves, none has room for a second one beside the first, so each worker stops
    with one line naming the folder and its free space, its trial handed back on the
    checkpoint it had; once there is room, a worker (here) finishes every trial."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(
        tmp_path,
        objective_args={"hidden": 2048},  # 154k weights, as many momenta
        budget={"trials": 3, "epochs": 3},  # a second checkpoint before a trial's end
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
        lines: list[str] = []
        db = Database(url)
        try:
            assert Worker(db, "t", artifacts=artifacts, log=lines.append).run() == 0, lines
        finally:
            db.close()
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
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handed-back trial whose checkpoint was damaged meanwhile: set aside, named in one
    line, and the trial trains again from step 0 to the same curve, failing no attempt."""
    torch.set_num_threads(1)  # as `uninterrupted`: the same sums in the same order
    epochs = 4
    db = Database(f"sqlite:///{tmp_path / 'sweeps.db'}")
    cfg = config(tmp_path, objective_args=ARGS, budget={"trials": 1, "epochs": epochs})
    launch_study(db, parse_config(load_yaml(cfg)))
    artifacts = tmp_path / "artifacts"
    first = Worker(db, "t", artifacts=artifacts, log=lambda _: None)
    checkpoint = first.checkpoints.path(0)
    save = first.checkpoints.save

    def save_then_stop(*args: Any, **kwargs: Any) -> None:  # the first worker stops once
        save(*args, **kwargs)  # it saved the first epoch: its trial goes back to the queue
        first.stop()

    monkeypatch.setattr(first.checkpoints, "save", save_then_stop)
    assert first.run() == 0
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
