"""Interactive plotly figures of a study, for optuna-dashboard's study page and the HTML report:
any `charts.Chart`, and the one chart only plotly draws (a menu picks its parameter).
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative

from sweeps.results.charts import Chart
from sweeps.results.study_data import StudyData, family, label
from sweeps.trial_attrs import params_of

PALETTE = qualitative.Plotly  # one colour per family, the same in every panel
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 60, "b": 50}}


def plotly_figure(chart: Chart) -> go.Figure:
    """``chart`` drawn with plotly."""
    fig = go.Figure()
    for s in chart.series:
        if s.style in ("bars", "hbars"):
            text = [t.replace("\n", " ") for t in s.labels] if s.labels else None
            fig.add_trace(
                go.Bar(
                    x=s.x,
                    y=s.y,
                    name=s.name,
                    text=text,
                    hovertext=s.hover,
                    orientation="h" if s.style == "hbars" else "v",
                )
            )
        else:
            fig.add_trace(go.Scatter(x=s.x, y=s.y, mode=s.style, name=s.name, hovertext=s.hover))
    fig.update_layout(
        title=chart.title,
        xaxis_title=chart.x_label,
        yaxis_title=chart.y_label,
        barmode="group",
        **LAYOUT,
    )
    if chart.log_y:
        fig.update_yaxes(type="log", exponentformat="power")
    if chart.y_range:
        fig.update_yaxes(range=list(chart.y_range))
    return fig


def value_vs_params(data: StudyData) -> go.Figure:
    """Each COMPLETE trial's value against a schedule parameter, coloured by family; a menu
    picks the parameter (one panel: the dashboard gives every graph the same height)."""
    names = data.key_params() or ["lr"]
    families = list(data.handle.config.space["schedule"])
    complete = data.complete()
    fig = go.Figure()
    shown_by: list[str] = []  # the parameter each trace belongs to
    for name in names:
        for fam in families:
            mine = [t for t in complete if family(t) == fam and name in t.params]
            if mine:
                fig.add_trace(
                    go.Scatter(
                        x=[params_of(t)[name] for t in mine],
                        y=[t.value for t in mine],
                        mode="markers",
                        name=fam,
                        visible=name == names[0],
                        marker={"color": PALETTE[families.index(fam) % len(PALETTE)]},
                        hovertext=[label(t) for t in mine],
                    )
                )
                shown_by.append(name)
    buttons = [
        {
            "label": name,
            "method": "update",
            "args": [
                {"visible": [owner == name for owner in shown_by]},
                {"xaxis.title.text": name, "xaxis.type": _axis_type(data, name)},
            ],
        }
        for name in names
    ]
    fig.update_layout(
        title="Value against a schedule parameter (COMPLETE trials)",
        xaxis_title=names[0],
        xaxis_type=_axis_type(data, names[0]),
        yaxis_title="value",
        updatemenus=[{"buttons": buttons, "x": 1.02, "xanchor": "left", "y": 1.0}],
        legend={"y": 0.85},
        **LAYOUT,
    )
    return fig


def _axis_type(data: StudyData, name: str) -> str:
    return "log" if name == "lr" or _is_log(data, name) else "linear"


def _is_log(data: StudyData, name: str) -> bool:
    for t in data.finished:
        dist = t.distributions.get(name)
        if dist is not None:
            return bool(getattr(dist, "log", False))
    return False
