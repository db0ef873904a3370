"""`sweeps schedules plot`: previews drawn from the config's own space and run length."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from cli_in_process import InProcess
from test_results import png_size

import schedules
from sweeps.config import parse_config
from sweeps.results.schedule_preview import sample_config
from sweeps_helpers import BASE, config, sweeps

REPO = Path(__file__).resolve().parents[2]


def test_samples_follow_the_space_and_the_configured_run_length() -> None:
    cfg = parse_config({**BASE, "space": {**BASE["space"], "batch_size": [32, 128]}})
    samples = sample_config(cfg, per_family=6, seed=1, total_steps=None)
    assert set(samples) == {"constant", "cosine", "step"}
    steps_per_epoch = {32: math.ceil(1437 / 32), 128: math.ceil(1437 / 128)}
    for curves in samples.values():
        assert len(curves) == 6
        for label, schedule, total in curves:
            assert total in {cfg.budget.epochs * s for s in steps_per_epoch.values()}
            assert 0.01 <= schedule.lr <= 0.5 and f"lr={schedule.lr:.3g}" in label
    # cosine decays over exactly the run length, as in training: ~0 at the last step.
    _, cosine, total = samples["cosine"][0]
    assert cosine.lr_at(total) == pytest.approx(0.0, abs=1e-12)
    assert cosine.lr_at(total // 2) > 0
    assert {s.decay_steps for _, s, _ in samples["step"]} == {20}  # fixed in the space


@pytest.mark.parametrize("family", list(schedules.SCHEDULES))
def test_nominal_lr_is_the_closed_form_or_warmup_then_peak(family: str) -> None:
    kwargs = {"lr": 0.2, "warmup_steps": 10}
    if "total_steps" in schedules.SCHEDULES[family].PARAMS:
        kwargs["total_steps"] = 100
    if family in ("step", "exponential"):
        kwargs |= {"decay_rate": 0.5, "decay_steps": 20}
    sched = schedules.build(family, **kwargs)
    for t in (0, 5, 10, 50, 99):
        expected = sched.lr_at(t) if sched.closed_form else 0.2 * min(1.0, t / 10)
        assert sched.nominal_lr_at(t) == pytest.approx(expected)


@pytest.mark.e2e
def test_sweeps_schedules_plot_draws_a_configs_samples(tmp_path: Path) -> None:
    result = sweeps(
        "schedules",
        "plot",
        str(config(tmp_path)),
        "--out",
        "p/cfg.png",
        "--samples",
        "3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert png_size((tmp_path / "p" / "cfg.png").read_bytes()) == (1500, 340)


def test_plot_families_and_a_user_objectives_config(tmp_path: Path, cli: InProcess) -> None:
    result = cli("schedules", "plot", "all", "--out", "all.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert png_size((tmp_path / "all.png").read_bytes()) == (1500, 4 * 340)
    result = cli("schedules", "plot", "cosine,wsd", "--out", "two.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert png_size((tmp_path / "two.png").read_bytes()) == (1000, 340)
    # A user objective's steps per epoch are unknown: the run length must be given.
    sine, out = str(REPO / "examples" / "sine.yaml"), str(tmp_path / "s.png")
    result = cli("schedules", "plot", sine, "--out", out, "--total-steps", "400", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert min(png_size((tmp_path / "s.png").read_bytes())) > 0


BAD_INPUT = [
    (["nope", "--out", "x.png"], "error: CONFIG_OR_FAMILY: 'nope' is neither a config"),
    (["cosine", "--out", "x.jpg"], "error: --out: must name a .png file, got 'x.jpg'"),
    (["cosine", "--out", "x.png", "--samples", "0"], "error: --samples: must be an"),
    (["cosine", "--out", "x.png", "--lr", "-1"], "error: cosine --lr:"),
    (["cosine", "--out", "x.png", "--total-steps", "1"], "error: --total-steps: must be"),
    (["examples/sine.yaml", "--out", "x.png"], "error: --total-steps: required for objective"),
    (["cosine", "--out", "README.md/x.png"], "error: --out: cannot write README.md/x.png"),
]


def assert_refused(result: Any, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr and not (REPO / "x.png").exists()


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_plot_refuses_bad_input(cli: InProcess, args: list[str], message: str) -> None:
    assert_refused(cli("schedules", "plot", *args, cwd=REPO), message)


@pytest.mark.e2e
def test_sweeps_schedules_plot_refuses_bad_input() -> None:
    args, message = BAD_INPUT[0]
    assert_refused(sweeps("schedules", "plot", *args, cwd=REPO), message)
