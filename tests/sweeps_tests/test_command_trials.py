"""Command trials through the CLI, with real processes: a training script swept as it is
(`objectives.command`). The fast ones run `command_script.py` (no torch); one sweeps the
nanoGPT-style example under a real ``torchrun --nproc_per_node 2`` on gloo. Workers and
their commands are real processes; studies are launched and read in this process
(`cli_in_process`), and what a trial's command makes of its script's output is also checked
by running `objectives.command.Command` here, on the real script."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import torch
from cli_in_process import sweeps_here
from optuna.trial import TrialState

import schedules
from disk_faults import tmpfs
from objectives import Run
from objectives.command import Command
from objectives.command.trial import CommandFailed
from storage.base import RETRY_OF
from storage.checkpoints import DiskFull
from storage.optuna_internals import trial_id_of
from sweeps_helpers import config, study_trials, sweeps, wait_until

REPO = Path(__file__).parents[2]
SCRIPT = Path(__file__).with_name("command_script.py")
WORKER = [sys.executable, "-m", "sweeps", "worker", "--study", "t"]


def command_config(tmp_path: Path, command: str, **changes: Any) -> Path:
    objective = {"command": f"python {SCRIPT} {command}", "grace_period": 2}
    objective |= changes.pop("objective", {})
    return config(
        tmp_path,
        objective=objective,
        objective_args={},
        direction="minimize",
        **{"sampler": {"name": "random", "seed": 0}} | changes,
    )


def launched(tmp_path: Path, cfg: Path, *queued: dict[str, Any]) -> str:
    """The study of ``cfg`` launched in an SQLite file, with trials of the ``queued``
    parameters first (`sweeps enqueue`)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    launch = sweeps_here("launch", str(cfg), "--storage", url, cwd=tmp_path)
    assert launch.returncode == 0, launch.stderr
    for params in queued:
        enqueue = ("enqueue", "--study", "t", "--params", json.dumps(params), "--storage", url)
        queue = sweeps_here(*enqueue, cwd=tmp_path)
        assert queue.returncode == 0, queue.stderr
    return url


def command_run(tmp_path: Path, folder: Path | None = None) -> Run:
    """A trial run in this process, as a worker builds one for a command: its checkpoint
    folder ``folder`` (default: under ``tmp_path``)."""
    study = optuna.create_study(direction="minimize")
    params = {"lr": 1e-3, "schedule": "constant"}
    return Run(
        study.ask(),
        params,
        seed=0,
        epochs=3,
        direction="minimize",
        checkpoint_dir=folder or tmp_path / "trial-0.files",
    )


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def step_lrs(url: str, trial_id: int) -> dict[int, float]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT step, lr FROM sweeps_curve_steps WHERE trial_id = :t"),
            {"t": trial_id},
        ).all()
    engine.dispose()
    return {int(step): float(lr) for step, lr in rows}


def assert_lrs_are_the_schedules(url: str, *, lr: float, steps: int, rel: float) -> None:
    """Every trial COMPLETE, and the lr stored for its step t (from its output) is its
    schedule's ``lr_at(t - 1)`` over a run of ``steps``."""
    trials = study_trials(url)
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    for t in trials:
        family = t.user_attrs["sweeps:params"]["schedule"]  # not searched where it is one
        params = {
            k.split(".", 1)[1]: v
            for k, v in t.user_attrs["sweeps:params"].items()
            if k.startswith(f"{family}.")
        }
        schedule = schedules.for_run(family, lr=lr, total_steps=steps, **params)
        assert step_lrs(url, trial_id_of(t)) == {
            it: pytest.approx(schedule.lr_at(it - 1), rel=rel) for it in range(1, steps + 1)
        }


def run_worker(tmp_path: Path, url: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKER, "--storage", url, *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_a_command_sweep_reads_exponents_and_prunes_a_nan(tmp_path: Path) -> None:
    """One trial per --mode (grid): lines with exponents, then with a NaN."""
    cfg = command_config(
        tmp_path,
        "--lr={lr} --steps={epochs} --out={checkpoint_dir} --mode={args.mode} --text",
        objective={"report": r"step (?P<step>\d+): val loss (?P<value>\S+), lr (?P<lr>\S+)"},
        budget={"trials": 2, "epochs": 4, "retries": 0},
        sampler={"name": "grid", "seed": 0},
        space={"lr": 1.0e-5, "schedule": {"constant": {}}, "args": {"mode": ["ok", "nan"]}},
    )
    url = launched(tmp_path, cfg)
    worker = run_worker(tmp_path, url)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    by_mode = {t.params["args.mode"]: t for t in study_trials(url)}
    text, nan = by_mode["ok"], by_mode["nan"]
    assert text.state == TrialState.COMPLETE
    assert text.intermediate_values == {s: float(f"{16 + 1e-5 / s:.6e}") for s in (1, 2, 3, 4)}
    assert step_lrs(url, trial_id_of(text)) == dict.fromkeys((1, 2, 3, 4), 1e-5)
    assert nan.state == TrialState.PRUNED
    assert nan.user_attrs["sweeps:reason"] == "diverged: validation metric is nan at epoch 2"
    # Shown like any other trial, with the parameters the config wrote.
    status = sweeps_here(
        "status", "--study", "t", "--storage", url, "--format", "json", cwd=tmp_path
    )
    best = json.loads(status.stdout)["best"]
    assert best["number"] == text.number and best["params"] == {
        "lr": 1e-5,
        "schedule": "constant",
        "args.mode": "ok",
    }
    export = sweeps_here(
        "export", "--study", "t", "--storage", url, "--out", "t.csv", cwd=tmp_path
    )
    assert export.returncode == 0, export.stderr
    assert "param:args.mode" in (tmp_path / "t.csv").read_text().splitlines()[0]


CANNOT_BE_STORED = {
    "silent": ([], "printed no value: waited for JSON lines with a 'value' (and 'step') "),
    "huge-step": ([1], "reported step 2147483648: storage keeps steps up to 2147483647 "),
}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", CANNOT_BE_STORED)
def test_a_commands_values_that_cannot_be_stored_are_a_failure_saying_why(
    tmp_path: Path, mode: str
) -> None:
    """No value at all, or a step past the 32-bit steps storage keeps: `Command`, run here
    on the script, fails with the reason, naming its log, after reporting what it could."""
    run = command_run(tmp_path)
    log = tmp_path / "trial-0.log"
    command = Command(
        f"python {SCRIPT} --lr={{lr}} --steps={{epochs}} --out={{checkpoint_dir}} --mode={mode}"
    )
    reported, reason = CANNOT_BE_STORED[mode]
    with pytest.raises(CommandFailed) as failed:
        command(run, log=log)
    assert str(failed.value).startswith(reason) and str(failed.value).endswith(f"(log: {log})")
    assert [point["epoch"] for point in run.reported] == reported


@pytest.mark.e2e
def test_a_command_whose_values_cannot_be_stored_fails_its_trial_saying_why(
    tmp_path: Path,
) -> None:
    """Through a worker: the trial keeps what was stored and FAILs with the reason, which
    names the trial's log."""
    cfg = command_config(
        tmp_path,
        "--lr={lr} --steps={epochs} --out={checkpoint_dir} --mode=huge-step",
        budget={"trials": 1, "epochs": 3, "retries": 0, "max_failures": 1},
    )
    url = launched(tmp_path, cfg)
    worker = run_worker(tmp_path, url)
    assert worker.returncode == 1
    (failed,) = study_trials(url)
    reported, reason = CANNOT_BE_STORED["huge-step"]
    assert list(failed.intermediate_values) == reported
    assert failed.user_attrs["sweeps:reason"].startswith(f"CommandFailed: {reason}")
    log = tmp_path / "s.db.artifacts" / "t" / "logs" / "trial-0.log"
    assert failed.user_attrs["sweeps:reason"].endswith(f"(log: {log})")


FILLS_THE_DISK = {
    "fill-disk": "OSError: [Errno 28] No space left on device",
    "fill-disk-quietly": "RuntimeError: unexpected pos",  # says nothing of the disk
}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", FILLS_THE_DISK)
def test_a_command_that_fills_its_checkpoint_folders_disk_is_a_full_disk(
    tmp_path: Path, mode: str
) -> None:
    """Its weights outgrow the disk under ``{checkpoint_dir}`` and it dies, saying so or
    not: `Command`, run here on the script, raises DiskFull with the script's error."""
    log = tmp_path / "trial-0.log"
    with tmpfs(tmp_path / "checkpoints", size="2m") as checkpoints:
        (checkpoints / "trial-0.pt").write_bytes(b"")  # the worker's checkpoint of step 1
        folder = checkpoints / "trial-0.files"
        run = command_run(tmp_path, folder)
        command = Command(
            f"python {SCRIPT} --lr={{lr}} --steps={{epochs}} --out={{checkpoint_dir}} "
            f"--mode={mode}"
        )
        with pytest.raises(DiskFull) as full:
            command(run, log=log)
        assert (folder / "weights.bin").exists()  # what it wrote stays
    said = f"CommandFailed: exit code 1: {FILLS_THE_DISK[mode]}"
    assert str(full.value).startswith(f"no room for the trial's files in {folder} (")
    assert said in str(full.value) and f"(log: {log})" in str(full.value)


@pytest.mark.e2e
def test_a_command_that_fills_its_checkpoint_folders_disk_is_handed_back(
    tmp_path: Path,
) -> None:
    """Through a worker, the script dying without a word of the disk (it has no room
    left): no attempt spent, the worker stops on one line."""
    cfg = command_config(
        tmp_path,
        "--lr={lr} --steps={epochs} --out={checkpoint_dir} --mode=fill-disk-quietly",
        budget={"trials": 1, "epochs": 3, "retries": 0, "max_failures": 1},
    )
    url = launched(tmp_path, cfg)
    artifacts = tmp_path / "s.db.artifacts"
    with tmpfs(artifacts / "t" / "checkpoints", size="2m") as checkpoints:
        worker = run_worker(tmp_path, url)
        folder = checkpoints / "trial-0.files"
        assert (folder / "weights.bin").exists()  # what it wrote stays
    assert worker.returncode == 1, worker.stdout + worker.stderr
    (trial,) = study_trials(url)
    assert trial.state == TrialState.WAITING
    assert list(trial.intermediate_values) == [1]
    (line,) = [line for line in worker.stdout.splitlines() if "stopping:" in line]
    assert f"stopping: no room for the trial's files in {folder} (" in line
    log = artifacts / "t" / "logs" / "trial-0.log"
    said = FILLS_THE_DISK["fill-disk-quietly"]
    assert f"CommandFailed: exit code 1: {said}" in line and f"(log: {log})" in line


@pytest.mark.e2e
def test_the_same_error_in_every_trial_stops_the_study_with_one_reason(tmp_path: Path) -> None:
    """Each trial fails in a "rank"; the reason drops the rank prefix and names the trial's
    log, which holds the whole output; three alike across families stop the study."""
    cfg = command_config(
        tmp_path,
        "--lr={lr} --steps={epochs} --out={checkpoint_dir} --mode=fail",
        budget={"trials": 8, "epochs": 3, "retries": 0},
    )
    url = launched(tmp_path, cfg)
    worker = run_worker(tmp_path, url)
    assert worker.returncode == 1, worker.stdout + worker.stderr
    failed = study_trials(url)
    assert [t.state for t in failed] == [TrialState.FAIL] * 3
    for t in failed:
        log = tmp_path / "s.db.artifacts/t/logs" / f"trial-{t.number}.log"
        assert t.user_attrs["sweeps:reason"] == (
            f"CommandFailed: exit code 1: ValueError: the batch is empty (log: {log})"
        )
        assert "[rank1]: Traceback" in log.read_text()
    assert "failed with the same error" in worker.stdout


@pytest.mark.e2e
def test_a_sigkilled_workers_command_dies_and_its_retry_resumes(tmp_path: Path) -> None:
    """The worker is killed while its command waits before step 4 (``--hold``), steps 1 to 3
    done; the retry's command resumes from the script's own state."""
    steps = 6
    pids, hold = tmp_path / "pids", tmp_path / "hold"
    cfg = command_config(
        tmp_path,
        f"--lr={{lr}} --steps={{epochs}} --out={{checkpoint_dir}} --pids={pids} "
        f"--hold={hold} --hold-at=4",
        objective={"resume": "--resume"},
        budget={"trials": 1, "epochs": steps, "retries": 1},
        heartbeat={"interval": 0.2, "grace_period": 1.0},
    )
    url = launched(tmp_path, cfg)
    env = {**os.environ, "SWEEPS_STORAGE": url}
    hold.touch()
    victim = subprocess.Popen(WORKER, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    wait_until(lambda: Path(f"{hold}.held").exists() or victim.poll() is not None)
    wait_until(lambda: any(len(t.intermediate_values) >= 3 for t in study_trials(url)))
    victim.kill()
    victim.wait()
    started = [int(p) for p in pids.read_text().split()]  # the script and its "rank"
    wait_until(lambda: not any(alive(p) for p in started), timeout=10)
    hold.unlink()
    rescuer = subprocess.run(WORKER, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rescuer.returncode == 0, rescuer.stdout + rescuer.stderr
    killed, retry = study_trials(url)
    assert retry.user_attrs[RETRY_OF] == killed.number
    assert retry.state == TrialState.COMPLETE
    log = (tmp_path / "s.db.artifacts/t/logs/trial-1.log").read_text()
    assert "--resume" in log and "resumed at step 0" not in log
    resumed = int(re.search(r"resumed at step (\d+)", log)[1])  # type: ignore[index]
    assert resumed == 3  # where the script was held
    # The replayed reports are a prefix of what the script had done; it may have gone a step
    # or two beyond what the worker read before the kill, and those steps are not printed again.
    reported = sorted(retry.intermediate_values)
    replayed = [step for step in reported if step <= resumed]
    assert replayed == list(range(1, len(replayed) + 1)) and replayed
    assert reported[len(replayed) :] == list(range(resumed + 1, steps + 1))
    assert not any(alive(int(p)) for p in pids.read_text().split())


@pytest.mark.e2e
def test_sigterm_hands_a_command_trial_back(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cfg = command_config(
        tmp_path,
        f"--lr={{lr}} --steps={{epochs}} --out={{checkpoint_dir}} --sleep=0.2 --pids={pids}",
        budget={"trials": 1, "epochs": 100},
    )
    url = launched(tmp_path, cfg)
    worker = subprocess.Popen(
        [*WORKER, "--storage", url], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    wait_until(lambda: any(len(t.intermediate_values) >= 2 for t in study_trials(url)))
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0
    (trial,) = study_trials(url)
    assert trial.state == TrialState.WAITING, out
    assert not any(alive(int(p)) for p in pids.read_text().split())


@pytest.mark.e2e
def test_a_worker_with_gpus_runs_a_trial_per_share_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU is needed: the placement is read from each command's environment, which
    never holds the worker's private settings."""
    monkeypatch.setenv("SWEEPS_PROXY_TOKEN", "a-token-no-command-sees")
    seen = tmp_path / "seen"
    seen.mkdir()
    cfg = command_config(
        tmp_path,
        f"--lr={{lr}} --steps=1 --out={{checkpoint_dir}} --env-dir={seen} --port={{port}}",
        objective={"processes": 2},
        budget={"trials": 2, "epochs": 1},
        sampler={"name": "random", "seed": 0},
    )
    url = launched(tmp_path, cfg)
    worker = run_worker(tmp_path, url, "--gpus", "0,1,2,3,4")
    assert worker.returncode == 0, worker.stdout + worker.stderr
    placed = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert sorted(p["gpus"] for p in placed) == ["0,1", "2,3"]
    assert placed[0]["port"] != placed[1]["port"]
    for p in placed:
        assert not {"SWEEPS_PROXY_TOKEN", "SWEEPS_STORAGE", "SWEEPS_LIFELINE"} & set(
            p["sweeps_env"]
        )
        assert "SWEEPS_SCHEDULE" in p["sweeps_env"]


def test_gpus_are_shared_out_in_whole_trials() -> None:
    from sweeps.device import gpu_slots, parse_gpus, split_gpus
    from sweeps.errors import UsageError

    gpus = parse_gpus("0,1,2,3,4,5,6,7")
    assert split_gpus(gpus, 3, 2) == [["0", "1", "2", "3"], ["4", "5"], ["6", "7"]]
    assert gpu_slots(["4", "5", "6"], 2) == [{"CUDA_VISIBLE_DEVICES": "4,5"}]
    assert gpu_slots([], 2) == [{}]  # no GPUs: one trial at a time, environment unchanged
    with pytest.raises(UsageError, match="fewer than --workers 3"):
        split_gpus(gpus[:5], 3, 2)
    for bad in ("0,0", "", "0;1", "0,"):
        with pytest.raises(UsageError, match="^--gpus: "):
            parse_gpus(bad)


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("cosine", {"warmup_steps": 5, "min_lr": 1e-4}),
        ("step", {"decay_rate": 0.5, "decay_steps": 7}),
        ("wsd", {"decay_fraction": 0.3, "decay_shape": "1-sqrt"}),
    ],
)
def test_a_commands_environment_holds_the_trials_schedule_exactly(
    tmp_path: Path, family: str, params: dict[str, Any]
) -> None:
    """What a script's `schedules.from_env` builds from the environment a trial's command
    gets (`Command.environment`) runs every step at the schedule's `lr_at`, its family's
    parameters and no other's. (The torchrun sweep below runs a script that applies it.)"""
    steps = 40
    run = command_run(tmp_path)
    run.params = {
        "lr": 0.003,
        "schedule": family,
        **{f"{family}.{k}": v for k, v in params.items()},
        "constant.unused": 1,  # another family's parameter, never handed over
    }
    env = Command("python train.py").environment(run, None)
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = schedules.from_env(optimizer, total_steps=steps, environ=env)
    reference = schedules.for_run(family, lr=0.003, total_steps=steps, **params)
    ran = []
    for _ in range(steps):
        ran.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert ran == pytest.approx([reference.lr_at(t) for t in range(steps)], rel=1e-12)


@pytest.mark.e2e
def test_two_workers_sweep_a_torchrun_ddp_script_to_the_budget_with_pruning(
    tmp_path: Path,
) -> None:
    """The nanoGPT-style example under ``torchrun --nproc_per_node 2`` (gloo): two trials of a
    good lr, one on each worker, then a tiny one, which starts once a worker's first trial is
    COMPLETE and which the median pruner stops at its first evaluation. (The two good trials
    run alike, to the same values: neither can prune the other.) The script applies the
    trial's schedule from its environment (`schedules.from_env`): the lr it printed for each
    step, stored as the trial's curve, is the schedule's."""
    steps = 20
    cfg = config(
        tmp_path,
        objective={
            "command": "torchrun --nproc_per_node=2 --master_port={port} "
            f"{REPO / 'examples/script/train.py'} --lr={{lr}} --max-iters={{epochs}} "
            "--eval-interval=10 --log-interval=1 --out-dir={checkpoint_dir}",
            "resume": "--init-from=resume",
            "report": r"(?:iter|step) (?P<step>\d+): "
            r"(?:val loss (?P<value>\S+)|loss (?P<loss>\S+), lr (?P<lr>\S+))",
            "processes": 2,
        },
        objective_args={},
        direction="minimize",
        budget={"trials": 3, "epochs": steps},
        pruner={"name": "median", "n_startup_trials": 1},
        space={
            "lr": {"low": 1e-7, "high": 1e-2, "log": True},
            "schedule": {"cosine": {"warmup_steps": 3}},
        },
    )
    url = launched(tmp_path, cfg, *({"lr": lr} for lr in (1e-2, 1e-2, 1e-7)))
    env = {**os.environ, "SWEEPS_STORAGE": url}
    workers = [
        subprocess.Popen(WORKER, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = study_trials(url)
    assert [(t.state, t.params["lr"]) for t in trials] == [
        (TrialState.COMPLETE, 1e-2),
        (TrialState.COMPLETE, 1e-2),
        (TrialState.PRUNED, 1e-7),
    ]
    assert max(trials[2].intermediate_values) == 10
    for t in trials:  # its curve from the output: every step it ran, at the schedule's lr
        schedule = schedules.for_run(
            "cosine", lr=t.params["lr"], total_steps=steps, warmup_steps=3
        )
        lrs = step_lrs(url, trial_id_of(t))
        ran = max(t.intermediate_values)
        assert sorted(lrs)[:ran] == list(range(1, ran + 1))
        assert lrs == {it: pytest.approx(schedule.lr_at(it - 1), rel=1e-12) for it in lrs}


@pytest.mark.e2e
def test_an_hf_trainer_script_runs_at_every_step_the_lr_lr_sweeps_records(
    tmp_path: Path,
) -> None:
    """``{hf_args}`` hands the Trainer its own scheduler flags for the trial's schedule (a
    warmup and a floor here; every family's flags: `tests/objectives_tests/test_hf_args.py`)."""
    steps = 20
    cfg = config(
        tmp_path,
        objective={
            "command": f"python {Path(__file__).with_name('hf_trainer_script.py')} "
            "--output_dir={checkpoint_dir} --max_steps={epochs} --eval_strategy=steps "
            "--eval_steps=5 --per_device_train_batch_size=8 --save_strategy=no "
            "--report_to=none --use_cpu --seed={seed} {hf_args}",
        },
        objective_args={},
        direction="minimize",
        budget={"trials": 1, "epochs": steps},
        sampler={"name": "grid", "seed": 0},
        space={"lr": 0.05, "schedule": {"cosine": {"warmup_steps": 3, "min_lr": 1e-3}}},
    )
    url = launched(tmp_path, cfg)
    worker = run_worker(tmp_path, url)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert_lrs_are_the_schedules(url, lr=0.05, steps=steps, rel=1e-6)
    assert all(sorted(t.intermediate_values) == [5, 10, 15, 20] for t in study_trials(url))


@pytest.mark.parametrize(
    ("objective", "error"),
    [
        (
            {"command": "no-such-trainer --lr={lr}"},
            "objective.command: program 'no-such-trainer' is not on PATH (nor in this Python "
            "environment's bin), or is not executable",
        ),
        (
            {"command": "python train.py --lr={lr} --wd={weight_decay} --x={warmup}"},
            "objective.command: {warmup} names no parameter; known: epochs, seed, trial, "
            "checkpoint_dir, port, args, hf_args, ",
        ),
        (
            {"command": "python train.py", "report": r"val loss (?P<loss>\S+)"},
            "objective.report: needs a group (?P<value>...) for the metric; optional: step, "
            "lr, loss, grad_norm",
        ),
        ({"command": "python train.py", "reprot": "x"}, "objective.reprot: unknown field"),
        ({"command": "python train.py", "processes": 0}, "objective.processes: Input should be"),
        ({"command": "{schedule} train.py"}, "objective.command: the program must be written"),
        (
            {"command": "python train.py {hf_args}"},
            "space.schedule.step: {hf_args}: step: ",
        ),
    ],
    ids=["program", "placeholder", "report", "unknown-key", "processes", "program-template", "hf"],
)
def test_a_bad_command_is_one_error_line(
    tmp_path: Path, objective: dict[str, Any], error: str
) -> None:
    from sweeps.commands.common import load_checked_config
    from sweeps.config import ConfigError

    cfg = config(tmp_path, objective=objective, objective_args={}, direction="minimize")
    with pytest.raises(ConfigError) as raised:
        load_checked_config(str(cfg))
    (line,) = raised.value.errors
    assert line.startswith(error)


@pytest.mark.e2e
def test_a_bad_command_exits_2_with_its_line_and_writes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, objective={"command": "no-such-trainer {lr}"}, objective_args={})
    launch = sweeps(
        "launch", str(cfg), "--storage", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path
    )
    assert launch.returncode == 2
    assert launch.stderr.splitlines() == [
        "error: objective.command: program 'no-such-trainer' is not on PATH (nor in this "
        "Python environment's bin), or is not executable"
    ]
    assert not (tmp_path / "s.db").exists()


@pytest.mark.e2e
def test_sweeps_runs_workers_and_their_commands_end_when_it_dies(tmp_path: Path) -> None:
    """``sweeps run ... | head -5``, a closed terminal, a SIGKILL: its workers stop, handing
    their trials back, and their commands end with them."""
    pids = tmp_path / "pids"
    cfg = command_config(
        tmp_path,
        f"--lr={{lr}} --steps={{epochs}} --out={{checkpoint_dir}} --sleep=0.2 --pids={pids}",
        budget={"trials": 2, "epochs": 1000},
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    run = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(cfg), "--storage", url, "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: pids.exists() and len(pids.read_text().splitlines()) == 2)
    wait_until(lambda: all(len(t.intermediate_values) >= 1 for t in study_trials(url)))
    run.kill()
    run.wait()
    started = [int(p) for p in pids.read_text().split()]
    wait_until(lambda: not any(alive(p) for p in started), timeout=30)
    logs = tmp_path / "s.db.artifacts/t/logs"
    wait_until(
        lambda: all("worker done" in (logs / f"worker-{i}.log").read_text() for i in (0, 1)),
        timeout=30,
    )
    assert {t.state for t in study_trials(url)} == {TrialState.WAITING}
