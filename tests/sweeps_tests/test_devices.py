"""Devices and precision: each local worker gets its own GPU, ``precision: bf16`` trains
under autocast, and (marked ``cuda``, where torch sees a GPU) stacks train on CUDA as on
the CPU and a sweep runs there."""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import pytest
import torch
from cli_in_process import sweeps_here

from objectives import Run, train_stack
from objectives.builtin import digits_cnn, digits_mlp
from sweeps.commands.run import worker_command
from sweeps.device import worker_devices
from sweeps_helpers import config, sweeps

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
PARAMS = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "batch_size": 64,
    "schedule": "cosine",
}


def test_workers_on_a_machine_with_several_gpus_get_one_each() -> None:
    assert worker_devices("cuda", 5, 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0"]
    assert worker_devices("cuda", 2, 1) is None  # one GPU: shared
    assert worker_devices("cuda:1", 2, 4) is None  # a GPU named by the user: theirs
    assert worker_devices("cpu", 2, 0) is None


def test_a_workers_own_device_goes_on_its_command_line() -> None:
    args = argparse.Namespace(artifacts=None, artifact_store=None, stack=None, device="cuda")
    assert worker_command(args, "t", 1, "cuda:1")[-2:] == ["--device", "cuda:1"]
    assert worker_command(args, "t", 1)[-2:] == ["--device", "cuda"]


def runs(k: int, device: str = "cpu", precision: str = "fp32") -> list[Run]:
    study = optuna.create_study(direction="maximize")
    return [
        Run(study.ask(), PARAMS, seed=i, epochs=2, device=device, precision=precision)
        for i in range(k)
    ]


@pytest.mark.parametrize("task", [digits_mlp, digits_cnn], ids=lambda t: t.name)
def test_bf16_autocast_trains_to_about_the_fp32_accuracy(task: object) -> None:
    fp32 = train_stack(task, runs(2))  # type: ignore[arg-type]
    bf16 = train_stack(task, runs(2, precision="bf16"))  # type: ignore[arg-type]
    for a, b in zip(fp32, bf16, strict=True):
        assert isinstance(a, float) and isinstance(b, float)
        assert b == pytest.approx(a, abs=0.05)


@pytest.mark.e2e
def test_bf16_is_set_in_the_config_and_checked(tmp_path: Path) -> None:
    """Refused unless fp32 or bf16 (checked in this process, as `sweeps validate` does); a
    worker trains a launched study's trial under bf16 autocast."""
    bad = config(tmp_path, precision="fp16")
    result = sweeps_here("validate", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "precision" in result.stderr and "Traceback" not in result.stderr
    url = f"sqlite:///{tmp_path / 's.db'}"
    good = config(tmp_path, "good.yaml", precision="bf16", budget={"trials": 1, "epochs": 1})
    launch = sweeps_here("launch", str(good), "--storage", url, cwd=tmp_path)
    assert launch.returncode == 0, launch.stderr
    done = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (trial,) = optuna.load_study(study_name="t", storage=url).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("task", [digits_mlp, digits_cnn], ids=lambda t: t.name)
def test_a_stack_on_cuda_trains_as_on_the_cpu(task: object) -> None:
    """float64 on both: the same curve to the equivalence tolerance."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        on_cpu = train_stack(task, runs(3))  # type: ignore[arg-type]
        on_gpu = train_stack(task, runs(3, "cuda"))  # type: ignore[arg-type]
    finally:
        torch.set_default_dtype(before)
    assert on_gpu == pytest.approx(on_cpu, rel=1e-6)


@pytest.mark.cuda
@cuda
def test_bf16_on_cuda_trains() -> None:
    outcomes = train_stack(digits_cnn, runs(4, "cuda", "bf16"))
    assert all(isinstance(o, float) and o > 0.5 for o in outcomes), outcomes


@pytest.mark.cuda
@pytest.mark.e2e
@cuda
def test_a_sweep_runs_on_cuda_with_one_gpu_per_worker(tmp_path: Path) -> None:
    cfg = config(tmp_path, budget={"trials": 8, "epochs": 2})
    url = f"sqlite:///{tmp_path / 's.db'}"
    done = sweeps(
        "run", str(cfg), "--workers", "2", "--device", "cuda", "--storage", url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    if torch.cuda.device_count() > 1:
        assert "one GPU per worker: worker 0 on cuda:0, worker 1 on cuda:1" in done.stdout
