"""Interactive plotly figures of a study: for optuna-dashboard's study page and the HTML report.

Each takes a `StudyData` and returns a ``plotly.graph_objects.Figure``; Optuna's own plots
(history, importances, intermediate values) are used as they are where they exist.
"""

from __future__ import annotations

import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.colors import qualitative

from sweeps.results.study_data import StudyData, family, label, zoomed_range
from sweeps.trial_attrs import params_of

PALETTE = qualitative.Plotly  # one colour per family, the same in every panel
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 60, "b": 50}}


def lr_schedules(data: StudyData) -> go.Figure:
    """The learning rate of each family's best trial, step by step, overlaid."""
    return lr_curves(data, data.best_per_family(), "Learning rate of the best trial per family")


def lr_curves(data: StudyData, trials: list[FrozenTrial], title: str) -> go.Figure:
    fig = go.Figure()
    for trial in trials:
        steps, lrs = data.curves(trial).series("steps", "lr")
        fig.add_trace(
            go.Scatter(x=steps, y=lrs, mode="lines", name=_name(trial), hovertext=label(trial))
        )
    fig.update_layout(
        title=title,
        xaxis_title="optimizer step",
        yaxis_title="learning rate",
        yaxis_type="log",
        yaxis_exponentformat="power",
        **LAYOUT,
    )
    return fig


def validation_curves(data: StudyData, trials: list[FrozenTrial]) -> go.Figure:
    """The value each trial reported per epoch."""
    fig = go.Figure()
    for trial in trials:
        epochs, values = data.curves(trial).series("epochs", "value")
        fig.add_trace(
            go.Scatter(
                x=epochs, y=values, mode="lines+markers", name=_name(trial), hovertext=label(trial)
            )
        )
    fig.update_layout(
        title="Validation value per epoch of the top trials",
        xaxis_title="epoch",
        yaxis_title="reported value",
        **LAYOUT,
    )
    return fig


def history(data: StudyData) -> go.Figure:
    """Every finished trial's value in order, and the best so far."""
    fig = go.Figure()
    for name, mode, (x, y) in (
        ("trial value", "markers", data.values_in_order()),
        ("best so far", "lines", data.best_so_far()),
    ):
        fig.add_trace(go.Scatter(x=x, y=y, mode=mode, name=name))
    fig.update_layout(
        title="Optimization history", xaxis_title="trial", yaxis_title="value", **LAYOUT
    )
    return fig


def importances(scores: dict[str, float]) -> go.Figure:
    names = list(scores)[::-1]
    fig = go.Figure(go.Bar(x=[scores[n] for n in names], y=names, orientation="h"))
    fig.update_layout(title="Parameter importances (fANOVA)", xaxis_title="importance", **LAYOUT)
    return fig


def pruning(data: StudyData) -> go.Figure:
    rows = data.pruning()["families"]
    fig = go.Figure()
    for key, name in (
        ("epochs_without_pruning", "without pruning"),
        ("epochs_trained", "trained"),
    ):
        fig.add_trace(go.Bar(x=[r["family"] for r in rows], y=[r[key] for r in rows], name=name))
    fig.update_layout(
        title="Epochs trained, against training every finished trial to the end",
        yaxis_title="epochs",
        barmode="group",
        **LAYOUT,
    )
    return fig


def _name(trial: FrozenTrial) -> str:
    value = f" {trial.value:.4g}" if trial.value is not None else ""
    return f"#{trial.number} {family(trial)}{value}"


def best_by_family(data: StudyData) -> go.Figure:
    """Best value per family, with how many trials each family finished and had pruned."""
    rows = [f for f in data.summary["families"] if f["best"]]
    fig = go.Figure(
        go.Bar(
            x=[f["family"] for f in rows],
            y=[f["best"]["value"] for f in rows],
            text=[f"{f['best']['value']:.4f}" for f in rows],
            customdata=[[f["best"]["number"], f["finished"], f["pruned"]] for f in rows],
            hovertemplate="%{x}: %{y:.4f} (trial %{customdata[0]})<br>"
            "finished %{customdata[1]}, pruned %{customdata[2]}<extra></extra>",
        )
    )
    values = [f["best"]["value"] for f in rows]
    if values:
        fig.update_yaxes(range=list(zoomed_range(values)))
    fig.update_layout(
        title=f"Best value by schedule family ({data.handle.config.direction})",
        yaxis_title="best value",
        **LAYOUT,
    )
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
