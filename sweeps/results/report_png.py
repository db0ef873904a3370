"""The report's still images: `charts` drawn with matplotlib, one PNG each, 1000 x 560 pixels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sweeps.results.charts import Chart  # noqa: E402

SIZE, DPI = (10, 5.6), 100  # inches at DPI: 1000 x 560 pixels


def write_pngs(charts: dict[str, Chart], out: Path) -> list[Path]:
    """Each chart drawn into ``out`` under its file name; returns their paths."""
    paths = []
    for name, chart in charts.items():
        fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
        ax = fig.subplots()
        ax.grid(alpha=0.3)
        draw(ax, chart)
        paths.append(out / name)
        fig.savefig(paths[-1])
    return paths


def draw(ax: Axes, chart: Chart) -> None:
    """``chart`` drawn with matplotlib on ``ax``."""
    groups = sum(s.style == "bars" for s in chart.series)
    width = 0.8 / max(groups, 1)  # grouped bars side by side
    group = 0
    for s in chart.series:
        if s.style == "bars":
            offset = (group - (groups - 1) / 2) * width
            group += 1
            drawn = ax.bar([i + offset for i in range(len(s.x))], s.y, width, label=s.name)
            ax.set_xticks(range(len(s.x)), [str(x) for x in s.x])
            if s.labels:
                ax.bar_label(drawn, labels=s.labels, fontsize=8)
        elif s.style == "hbars":
            ax.barh([str(y) for y in s.y], s.x, label=s.name)
        else:
            marker = "o" if "markers" in s.style else None
            line = "" if s.style == "markers" else "-"
            ax.plot(s.x, s.y, marker=marker, linestyle=line, markersize=3, label=s.name)
    ax.set(title=chart.title, xlabel=chart.x_label, ylabel=chart.y_label)
    if chart.log_y:
        ax.set_yscale("log")
    if chart.y_range:
        ax.set_ylim(*chart.y_range)
    if chart.integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(chart.series) > 1 or any(s.style not in ("bars", "hbars") for s in chart.series):
        ax.legend(fontsize=8)  # (a lone bar series is named by its axis)
