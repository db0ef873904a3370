"""The lr range test's picture: loss against lr (log axis) for each optimizer, raw and
smoothed, with the steepest descent, the lowest loss and the suggested range marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from objectives.lr_range import RangeTest


def plot(tests: Sequence[RangeTest], out: Path, title: str) -> None:
    fig = Figure(figsize=(5.5 * len(tests), 3.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(tests), squeeze=False).flatten()
    for ax, test in zip(axes, tests, strict=True):
        ax.plot(test.lrs, test.losses, color="0.75", linewidth=0.8, label="loss")
        ax.plot(test.lrs, test.smoothed, color="C0", label="smoothed")
        low, high = test.suggested
        ax.axvspan(low, high, color="C2", alpha=0.12, label=f"suggested {low:.2g}–{high:.2g}")
        ax.axvline(
            test.steepest, color="C1", linestyle="--", label=f"steepest {test.steepest:.2g}"
        )
        ax.axvline(test.lowest, color="C3", linestyle=":", label=f"lowest {test.lowest:.2g}")
        # From the lowest loss to the starting one: divergence runs off the top.
        ax.set_ylim(0.9 * min(test.smoothed), 1.15 * test.smoothed[0])
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=test.optimizer)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
