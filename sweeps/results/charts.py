"""Every chart lr-sweeps draws, as data: titles, axis labels and series, defined once.

Renderers draw them: `figures` (plotly, for optuna-dashboard and the HTML report),
`report_png` (matplotlib, the report's PNGs) and `trial_svg` (each trial's curves, by hand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from optuna.trial import FrozenTrial

from sweeps.results.curves import Curves
from sweeps.results.study_data import StudyData, family, label, zoomed_range

Style = Literal["markers", "lines", "lines+markers", "bars", "hbars"]


@dataclass(frozen=True)
class Series:
    name: str
    x: Sequence[float] | Sequence[str]  # categories for bars
    y: Sequence[float] | Sequence[str]  # categories for horizontal bars
    style: Style
    hover: list[str] | str | None = None  # per point, or for the whole series
    labels: list[str] | None = None  # written on bars


@dataclass(frozen=True)
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = False
    y_range: tuple[float, float] | None = None  # None: fitted to the data
    integer_x: bool = False


def history(data: StudyData) -> Chart:
    """Every COMPLETE trial's value in order, and the best so far."""
    return Chart(
        "Optimization history",
        "trial",
        "value",
        [
            Series("trial value", *data.values_in_order(), style="markers"),
            Series("best so far", *data.best_so_far(), style="lines"),
        ],
    )


def best_by_family(data: StudyData) -> Chart:
    """Best value per family, with the trial that reached it and how many each finished."""
    rows = [f for f in data.summary["families"] if f["best"]]
    values = [float(f["best"]["value"]) for f in rows]
    bars = Series(
        "best value",
        [f["family"] for f in rows],
        values,
        style="bars",
        labels=[f"{v:.4f}\n#{f['best']['number']}" for v, f in zip(values, rows, strict=True)],
        hover=[
            f"trial {f['best']['number']}; finished {f['finished']}, pruned {f['pruned']}"
            for f in rows
        ],
    )
    return Chart(
        f"Best value by schedule family ({data.handle.config.direction})",
        "schedule family",
        "best value",
        [bars],
        y_range=zoomed_range(values) if values else None,
    )


def lr_curves(data: StudyData, trials: list[FrozenTrial], title: str = "") -> Chart:
    """Each trial's learning rate, step by step (by default titled as the top trials)."""
    return Chart(
        title or f"Learning rate of the top {len(trials)} trials",
        "optimizer step",
        "learning rate",
        [_trial_series(data, t, "steps", "lr") for t in trials],
        log_y=True,
    )


def lr_schedules(data: StudyData) -> Chart:
    """The learning rate of each family's best trial."""
    return lr_curves(data, data.best_per_family(), "Learning rate of the best trial per family")


def validation_curves(data: StudyData, trials: list[FrozenTrial]) -> Chart:
    """The value each trial reported per epoch."""
    return Chart(
        f"Validation value per epoch of the top {len(trials)} trials",
        "epoch",
        "reported value",
        [_trial_series(data, t, "epochs", "value") for t in trials],
        integer_x=True,
    )


def importances(scores: dict[str, float]) -> Chart:
    names = list(scores)[::-1]  # the most important on top
    bars = Series("importance", [scores[n] for n in names], names, style="hbars")
    return Chart("Parameter importances (fANOVA)", "importance", "", [bars])


def pruning(data: StudyData) -> Chart:
    rows = data.pruning()["families"]
    families = [r["family"] for r in rows]
    return Chart(
        "Epochs trained, against training every finished trial to the end",
        "schedule family",
        "epochs",
        [
            Series(name, families, [float(r[key]) for r in rows], style="bars")
            for key, name in (
                ("epochs_without_pruning", "without pruning"),
                ("epochs_trained", "trained"),
            )
        ],
    )


# One trial's curves: the panels of its dashboard image (`trial_svg`).
TRIAL_PANELS = (  # (table, column, title, x label)
    ("steps", "lr", "learning rate", "step"),
    ("steps", "train_loss", "training loss", "step"),
    ("epochs", "val_loss", "validation loss", "epoch"),
    ("epochs", "value", "validation metric (reported)", "epoch"),
)


def trial_panels(curves: Curves) -> list[Chart]:
    """A trial's learning rate, training loss, validation loss and reported metric."""
    charts = []
    for table, column, title, x_label in TRIAL_PANELS:
        x, y = curves.series(table, column)
        style: Style = "lines+markers" if table == "epochs" else "lines"
        series = [Series(title, x, y, style=style)] if x else []
        charts.append(Chart(title, x_label, "", series, integer_x=table == "epochs"))
    return charts


def _trial_series(data: StudyData, trial: FrozenTrial, table: str, column: str) -> Series:
    x, y = data.curves(trial).series(table, column)
    value = f" {trial.value:.4g}" if trial.value is not None else ""
    style: Style = "lines+markers" if table == "epochs" else "lines"
    return Series(f"#{trial.number} {family(trial)}{value}", x, y, style=style, hover=label(trial))
