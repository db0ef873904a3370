"""A trial's learning rate, training loss and validation curves as one PNG (matplotlib)."""

from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sweeps.results.curves import Curves  # noqa: E402

PANELS = (  # (table, column, title, x label)
    ("steps", "lr", "learning rate", "step"),
    ("steps", "train_loss", "training loss", "step"),
    ("epochs", "val_loss", "validation loss", "epoch"),
    ("epochs", "value", "validation metric (reported)", "epoch"),
)


class TrialPlot:
    """Renders trials one after another on one figure whose lines are only re-filled:
    building a figure costs more than drawing it, and a worker renders every trial."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(9, 5.6), dpi=80)
        self.axes = self.figure.subplots(2, 2).flatten()
        self.figure.subplots_adjust(
            left=0.08, right=0.98, bottom=0.09, top=0.86, wspace=0.22, hspace=0.45
        )
        self.lines = []
        for ax, (table, _, title, xlabel) in zip(self.axes, PANELS, strict=True):
            (line,) = ax.plot([], [], marker="o" if table == "epochs" else None, markersize=3)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(xlabel, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if table == "epochs":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            self.lines.append(line)
        self.title = self.figure.suptitle("", fontsize=10)

    def png(self, curves: Curves, title: str) -> bytes:
        for ax, line, (table, column, _, _) in zip(self.axes, self.lines, PANELS, strict=True):
            line.set_data(*curves.series(table, column))
            ax.relim()
            ax.autoscale_view()
        self.title.set_text(textwrap.fill(title, 110))
        out = io.BytesIO()
        self.figure.savefig(out, format="png")
        return out.getvalue()
