"""The lr range test: its reading of a loss curve (steepest descent, lowest point) is not
fooled by a single spike or dip, and `sweeps lr-range` prints a range, plots it and writes
a config with it."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from objectives.lr_range import analyse
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


def test_lr_range_prints_plots_and_writes_a_config(tmp_path: Path) -> None:
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
    assert sweeps("validate", str(copy), cwd=tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "10"], "error: --steps: must be an integer >= 50, got 10"),
        (["--min-lr", "1", "--max-lr", "0.1"], "error: --min-lr, --max-lr: must satisfy"),
        (["--out", "plot.svg"], "error: --out: must name a .png file, got 'plot.svg'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    cfg = config(tmp_path)
    result = sweeps("lr-range", str(cfg), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("*.png"))


def test_a_function_with_its_own_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "own.py").write_text("def objective(run):\n    return 0.0\n")
    cfg = config(tmp_path, objective="own:objective")
    result = sweeps("lr-range", str(cfg), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: objective: lr-range trains a task")


def test_a_loss_that_diverges_at_once_is_a_one_line_error(tmp_path: Path) -> None:
    space = {"lr": 0.1, "optimizer": "adamw", "batch_size": 32, "schedule": {"constant": {}}}
    cfg = config(tmp_path, space=space)
    result = sweeps(
        "lr-range", str(cfg), "--min-lr", "5", "--max-lr", "100", "--steps", "60", cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == "error: --min-lr: adamw: the loss diverged at once; lower --min-lr\n"
