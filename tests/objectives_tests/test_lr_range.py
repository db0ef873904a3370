"""The lr range test: its reading of a loss curve (steepest descent, lowest point) is not
fooled by a single spike or dip, and `sweeps lr-range` prints a range, plots it and writes
a config with it; its errors are one line and exit 2."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from objectives.lr_range import analyse
from sweeps.cli import main
from sweeps_helpers import config, sweeps

REPO = Path(__file__).resolve().parents[2]


def curve(steps: int = 300) -> tuple[list[float], list[float]]:
    """A loss that falls fastest at lr 1e-2 (per log lr), bottoms out and then explodes."""
    lrs = [1e-5 * (1e6) ** (i / (steps - 1)) for i in range(steps)]
    losses = [2.0 - math.tanh(2 * (math.log10(lr) + 2)) + (10 * lr) ** 2 for lr in lrs]
    return lrs, losses


def test_the_steepest_descent_and_lowest_point_of_a_known_curve() -> None:
    lrs, losses = curve()
    test = analyse("sgd", lrs, losses)
    assert test.steepest == pytest.approx(1e-2, rel=0.1)
    bottom = lrs[losses.index(min(losses))]  # of the noiseless curve itself
    assert test.lowest == pytest.approx(bottom, rel=0.1)
    assert test.suggested == (test.steepest / 10, test.lowest)


@pytest.mark.parametrize("jump", [5.0, -1.5], ids=["spike", "dip"])
def test_a_single_spike_or_dip_does_not_move_the_suggestion(jump: float) -> None:
    lrs, losses = curve()
    clean = analyse("sgd", lrs, losses)
    for at in (40, 150, 200):  # early, in the descent, near the bottom
        noisy = list(losses)
        noisy[at] += jump
        test = analyse("sgd", lrs, noisy)
        # The median filter drops the outlier; its window then shifts by one sample, so
        # the readings may move by a step or two (about 5% each), never by decades.
        assert test.steepest == pytest.approx(clean.steepest, rel=0.15), at
        assert test.lowest == pytest.approx(clean.lowest, rel=0.15), at


@pytest.mark.e2e
def test_lr_range_prints_plots_and_writes_a_config(tmp_path: Path) -> None:
    """The one run of `sweeps lr-range` in a process of its own, on the README's example;
    the tests below call the command in this process."""
    shutil.copy(REPO / "examples" / "digits.yaml", tmp_path / "digits.yaml")
    result = sweeps("lr-range", "digits.yaml", "--steps", "150", "--write", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"suggested space.lr: \{low: (\S+), high: (\S+), log: true\}", result.stdout)
    assert found, result.stdout
    low, high = float(found[1]), float(found[2])
    assert 1e-5 < low < high < 10
    for optimizer in ("sgd", "adamw"):  # the space's optimizers, each tested
        assert re.search(rf"^{optimizer}: loss falls fastest at lr ", result.stdout, re.M)
    assert (tmp_path / "digits.lr-range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = tmp_path / "digits.lr-range.yaml"
    assert yaml.safe_load(copy.read_text())["space"]["lr"] == {
        "low": low,
        "high": high,
        "log": True,
    }
    assert main(["validate", str(copy)]) == 0


def lr_range(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    **cfg: Any,
) -> tuple[int, str]:
    """``sweeps lr-range`` on a config of ``cfg`` in this process, from ``tmp_path``: its
    exit code and what it wrote to stderr (nothing to stdout)."""
    path = config(tmp_path, **cfg)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # undoes what importing the objective adds
    code = main(["lr-range", str(path), *args])
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "10"], "error: --steps: must be an integer >= 50, got 10"),
        (["--min-lr", "1", "--max-lr", "0.1"], "error: --min-lr, --max-lr: must satisfy"),
        (["--out", "plot.svg"], "error: --out: must name a .png file, got 'plot.svg'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, err = lr_range(tmp_path, monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not list(tmp_path.glob("*.png"))


def test_a_function_with_its_own_loop_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lr_range_own_loop.py").write_text("def objective(run):\n    return 0.0\n")
    code, err = lr_range(tmp_path, monkeypatch, capsys, objective="lr_range_own_loop:objective")
    assert code == 2
    assert err.startswith("error: objective: lr-range trains a task")


def test_a_loss_that_diverges_at_once_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {"lr": 0.1, "optimizer": "adamw", "batch_size": 32, "schedule": {"constant": {}}}
    code, err = lr_range(
        tmp_path,
        monkeypatch,
        capsys,
        *["--min-lr", "5", "--max-lr", "100", "--steps", "60"],
        space=space,
    )
    assert code == 2
    assert err == "error: --min-lr: adamw: the loss diverged at once; lower --min-lr\n"
