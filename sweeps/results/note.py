"""The study's note in optuna-dashboard (Markdown): config, budget, leaderboard by family."""

from __future__ import annotations

import time

import yaml

from sweeps.results.study_data import StudyData
from sweeps.summary import describe


def study_note(data: StudyData) -> str:
    s, config = data.summary, data.handle.config
    states = ", ".join(f"{n.lower()} {c}" for n, c in s["states"].items() if c) or "none yet"
    lines = [
        f"# {config.study}",
        "",
        f"**{config.objective}**, {config.direction} the reported value; budget "
        f"**{config.budget.trials} trials** of up to **{config.budget.epochs} epochs**; "
        f"sampler `{config.sampler.name}`, pruner `{config.pruner.name}`.",
        "",
        f"Finished **{s['finished']} of {s['budget']}** ({states}). "
        f"Updated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by lr-sweeps.",
        "",
    ]
    if s["best"]:
        best = s["best"]
        lines += [
            f"Best: trial **{best['number']}**, value **{best['value']:.4f}**: "
            f"`{describe(best['params'])}`",
            "",
        ]
    lines += [
        "## Leaderboard by schedule family",
        "",
        "| family | best | trial | finished | pruned | settings |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for f in s["families"]:
        b = f["best"]
        best_cells = f"{b['value']:.4f} | {b['number']} " if b else "— | — "
        settings = f"`{describe(b['params'], family=False)}`" if b else ""
        lines.append(
            f"| {f['family']} | {best_cells}| {f['finished']} | {f['pruned']} | {settings} |"
        )
    pruning = data.pruning()
    lines += [
        "",
        f"Pruning saved {pruning['fraction_saved']:.0%} of the epochs "
        f"({pruning['epochs_trained']} trained of {pruning['epochs_without_pruning']}).",
        "",
        "Each trial's page holds its learning-rate and loss curves (SVG and CSV artifacts).",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"
