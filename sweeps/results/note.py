"""The study's note in optuna-dashboard (Markdown): config, budget, leaderboard by family."""

from __future__ import annotations

import time

import yaml

from sweeps.branches import tree_line, trunk_line
from sweeps.results.study_data import StudyData
from sweeps.summary import LEADERBOARD, NUMERIC, best_line, leaderboard, states_line


def study_note(data: StudyData) -> str:
    s, config = data.summary, data.handle.config
    lines = [
        f"# {config.study}",
        "",
        f"**{config.objective_name}**, {config.direction} the reported value; budget "
        f"**{config.budget.trials} trials** of up to **{config.budget.epochs} epochs**; "
        f"sampler `{config.sampler.name}`, pruner `{config.pruner.name}`.",
        "",
        f"Finished **{s['finished']} of {s['budget']}** ({states_line(s)}). "
        f"Updated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by lr-sweeps.",
        "",
    ]
    if best := best_line(s):
        lines += [f"Best: {best}", ""]
    lines += [
        "## Leaderboard by schedule family",
        "",
        "| " + " | ".join(LEADERBOARD) + " |",
        "|" + "|".join("---:" if c in NUMERIC else "---" for c in LEADERBOARD) + "|",
    ]
    for row in leaderboard(s):
        cells = [f"`{row[c]}`" if c == "settings" and row[c] else row[c] for c in LEADERBOARD]
        lines.append("| " + " | ".join(cells) + " |")
    pruning = data.pruning()
    lines += [
        "",
        f"Pruning saved {pruning['fraction_saved']:.0%} of the epochs "
        f"({pruning['epochs_trained']} trained of {pruning['epochs_without_pruning']}).",
        "",
        "Each trial's page holds its learning-rate and loss curves (SVG and CSV artifacts).",
        "",
    ]
    if s["branches"] is not None:
        lines += ["## Trunks and branches", "", tree_line(s["branches"]) + ":", ""]
        lines += [f"- {trunk_line(t)}" for t in s["branches"]["trunks"]] + [""]
    lines += [
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip(),
        "```",
    ]
    return "\n".join(lines) + "\n"
