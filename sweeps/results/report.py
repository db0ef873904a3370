"""`sweeps report`: one self-contained HTML page (interactive plotly) and PNGs (matplotlib)
answering what a study found: history, family leaderboard, the top trials' learning-rate and
validation curves, parameter importances, schedule parameters, and what pruning saved."""

from __future__ import annotations

import html
import time
import warnings
from pathlib import Path

import optuna

from storage import first_line
from sweeps.branches import tree_line, trunk_line
from sweeps.results import charts, figures
from sweeps.results.report_png import write_pngs
from sweeps.results.study_data import StudyData
from sweeps.summary import LEADERBOARD, NUMERIC, describe, leaderboard, states_line

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}
td.n{text-align:right}code{font-size:90%}"""


def write_report(data: StudyData, out: Path, *, top: int = 8) -> list[Path]:
    """Write ``report.html`` and the PNGs into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    best = data.complete()[:top]
    scores, why_no_scores = importances(data.handle.study)
    pictures = {  # PNG name -> chart, in the page's order
        "history.png": charts.history(data),
        "leaderboard.png": charts.best_by_family(data),
        "lr_curves.png": charts.lr_curves(data, best),
        "validation_curves.png": charts.validation_curves(data, best),
        **({"importances.png": charts.importances(scores)} if scores else {}),
        "pruning.png": charts.pruning(data),
    }
    pngs = write_pngs(pictures, out)
    graphs = [figures.plotly_figure(chart) for chart in pictures.values()]
    graphs.insert(-1, figures.value_vs_params(data))  # plotly's alone: a menu picks the axis
    parts = [_header(data), _leaderboard(data), _branches(data), _pruning(data)]
    if why_no_scores:
        parts.append(f"<p>No parameter importances: {html.escape(why_no_scores)}</p>")
    parts += [
        g.to_html(full_html=False, include_plotlyjs=i == 0, default_height="480px")
        for i, g in enumerate(graphs)
    ]
    page = out / "report.html"
    page.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(data.handle.config.study)}: lr-sweeps report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>",
        encoding="utf-8",
    )
    return [page, *pngs]


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of the parameters every COMPLETE trial has, or why there are none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study), ""
    except (ValueError, RuntimeError) as e:
        return None, first_line(e)


def _header(data: StudyData) -> str:
    s, config = data.summary, data.handle.config
    best = s["best"]
    best_html = (
        f"<p>Best: trial <b>{best['number']}</b>, value <b>{best['value']:.4f}</b>: "
        f"<code>{html.escape(describe(best['params']))}</code></p>"
        if best
        else "<p>No trial completed yet.</p>"
    )
    return (
        f"<h1>{html.escape(config.study)}</h1>"
        f"<p><b>{html.escape(config.objective_name)}</b>, {config.direction}; budget "
        f"{config.budget.trials} trials of up to {config.budget.epochs} epochs; sampler "
        f"{config.sampler.name}, pruner {config.pruner.name}. Finished {s['finished']} of "
        f"{s['budget']} ({states_line(s)}). Storage {html.escape(s['storage'])}. "
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.</p>{best_html}"
    )


def _leaderboard(data: StudyData) -> str:
    head = "".join(f"<th>{c}</th>" for c in LEADERBOARD)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td class=n>{row[c]}</td>"
            if c in NUMERIC
            else f"<td>{_code(row[c]) if c == 'settings' else html.escape(row[c])}</td>"
            for c in LEADERBOARD
        )
        + "</tr>"
        for row in leaderboard(data.summary)
    )
    return f"<h2>Leaderboard by schedule family</h2><table><tr>{head}</tr>{rows}</table>"


def _branches(data: StudyData) -> str:
    branches = data.summary["branches"]
    if branches is None:
        return ""
    items = "".join(f"<li>{html.escape(trunk_line(t))}</li>" for t in branches["trunks"])
    return (
        f"<h2>Trunks and branches</h2><p>{html.escape(tree_line(branches))}:</p><ul>{items}</ul>"
    )


def _code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>" if text else ""


def _pruning(data: StudyData) -> str:
    p = data.pruning()
    return (
        f"<h2>Pruning</h2><p>The finished trials trained {p['epochs_trained']} epochs; "
        f"without pruning they would have trained {p['epochs_without_pruning']}: "
        f"<b>{p['fraction_saved']:.0%} saved</b>.</p>"
    )
