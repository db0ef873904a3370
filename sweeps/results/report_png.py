"""The report's still images (matplotlib): one PNG per question, 1000 x 560 pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

from sweeps.results.study_data import StudyData, family, zoomed_range  # noqa: E402

SIZE, DPI = (10, 5.6), 100  # inches at DPI: 1000 x 560 pixels


def write_pngs(
    data: StudyData, top: list[FrozenTrial], scores: dict[str, float] | None, out: Path
) -> list[Path]:
    """Every image of the report, written to ``out``; returns their paths."""
    drawers: dict[str, Callable[[Axes], None]] = {
        "history.png": lambda ax: _history(ax, data),
        "leaderboard.png": lambda ax: _leaderboard(ax, data),
        "lr_curves.png": lambda ax: _curves(ax, data, top, "steps", "lr"),
        "validation_curves.png": lambda ax: _curves(ax, data, top, "epochs", "value"),
        "pruning.png": lambda ax: _pruning(ax, data),
    }
    if scores:
        drawers["importances.png"] = lambda ax: _importances(ax, scores)
    paths = []
    for name, draw in drawers.items():
        fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.grid(alpha=0.3)
        draw(ax)
        paths.append(out / name)
        fig.savefig(paths[-1])
    return paths


def _history(ax: Axes, data: StudyData) -> None:
    ax.plot(*data.values_in_order(), "o", markersize=4, alpha=0.6, label="trial value")
    ax.plot(*data.best_so_far(), "-", label="best so far")
    ax.set(title="Optimization history", xlabel="trial", ylabel="value")
    ax.legend()


def _leaderboard(ax: Axes, data: StudyData) -> None:
    rows = [f for f in data.summary["families"] if f["best"]]
    values = [f["best"]["value"] for f in rows]
    bars = ax.bar([f["family"] for f in rows], values)
    ax.bar_label(
        bars,
        labels=[f"{v:.4f}\n#{f['best']['number']}" for v, f in zip(values, rows, strict=True)],
        fontsize=8,
    )
    if values:
        ax.set_ylim(*zoomed_range(values))
    ax.set(
        title=f"Best value by schedule family ({data.handle.config.direction})",
        ylabel="best value",
    )


def _curves(ax: Axes, data: StudyData, top: list[FrozenTrial], table: str, column: str) -> None:
    for trial in top:
        ax.plot(
            *data.curves(trial).series(table, column),
            label=f"#{trial.number} {family(trial)} {trial.value:.4g}",
            marker="o" if table == "epochs" else None,
            markersize=3,
        )
    if column == "lr":
        ax.set(
            title="Learning rate of the top trials",
            xlabel="optimizer step",
            ylabel="learning rate",
            yscale="log",
        )
    else:
        ax.set(
            title="Validation value per epoch of the top trials",
            xlabel="epoch",
            ylabel="reported value",
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if top:
        ax.legend(fontsize=8)


def _importances(ax: Axes, scores: dict[str, float]) -> None:
    names = list(scores)[::-1]
    ax.barh(names, [scores[n] for n in names])
    ax.set(title="Parameter importances (fANOVA)", xlabel="importance")


def _pruning(ax: Axes, data: StudyData) -> None:
    rows = data.pruning()["families"]
    x = range(len(rows))
    ax.bar(
        [i - 0.2 for i in x],
        [r["epochs_without_pruning"] for r in rows],
        0.4,
        label="without pruning",
    )
    ax.bar([i + 0.2 for i in x], [r["epochs_trained"] for r in rows], 0.4, label="trained")
    ax.set_xticks(list(x), [r["family"] for r in rows])
    ax.set(
        title="Epochs trained, against training every finished trial to the end", ylabel="epochs"
    )
    ax.legend()
