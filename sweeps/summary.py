"""What a study found: counts by state, the best trial, the best trial per schedule family,
the trials running now and why trials failed."""

from __future__ import annotations

from collections import Counter
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from storage import BaseDatabase, mask_url
from sweeps.branches import tree, tree_line
from sweeps.study import StudyHandle
from sweeps.trial_attrs import REASON, WORKER, params_of

TOP_FAILURES = 3  # failure reasons listed, most frequent first


def summarize(db: BaseDatabase, handle: StudyHandle) -> dict[str, Any]:
    """A JSON-ready summary of the study (`status --format json` prints exactly this)."""
    trials = handle.study.get_trials(deepcopy=False)
    maximize = handle.config.direction == "maximize"
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    complete.sort(key=lambda t: -float(t.values[0]) if maximize else float(t.values[0]))
    families = []
    for family in handle.config.space["schedule"]:
        mine = [t for t in trials if params_of(t).get("schedule") == family]
        best = next((t for t in complete if params_of(t).get("schedule") == family), None)
        families.append(
            {
                "family": family,
                "finished": sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in mine),
                "pruned": sum(t.state == TrialState.PRUNED for t in mine),
                "best": _trial(best) if best else None,
            }
        )
    families.sort(
        key=lambda f: (
            f["best"] is None,
            -(f["best"] or {}).get("value", 0) if maximize else (f["best"] or {}).get("value", 0),
        )
    )
    budget, held = db.budget(handle.study_id)
    return {
        "study": handle.config.study,
        "storage": mask_url(db.url),
        "objective": handle.config.objective_name,
        "direction": handle.config.direction,
        "budget": budget,
        "finished": counts["COMPLETE"] + counts["PRUNED"],
        "held": held,  # trials holding budget slots: running and finished
        "states": counts,
        "best": _trial(complete[0]) if complete else None,
        "families": families,
        "min_trials_per_family": handle.config.min_trials_per_family,
        "branches": tree(trials) if handle.config.branches is not None else None,
        "running": [_running(t) for t in trials if t.state == TrialState.RUNNING],
        "failures": [
            {"reason": reason, "count": count}
            for reason, count in Counter(
                t.user_attrs.get(REASON, "?") for t in trials if t.state == TrialState.FAIL
            ).most_common(TOP_FAILURES)
        ],
    }


def _running(t: FrozenTrial) -> dict[str, Any]:
    """A running trial: its last reported epoch (0: none yet) and value, and its worker."""
    epoch = max(t.intermediate_values, default=0)
    return {
        "number": t.number,
        "epoch": epoch,
        "value": t.intermediate_values.get(epoch),
        "worker": t.user_attrs.get(WORKER),
        "params": params_of(t),
    }


def _trial(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "value": t.value,
        "params": params_of(t),
        **({"reason": t.user_attrs[REASON]} if REASON in t.user_attrs else {}),
    }


# The family leaderboard's columns, in the order every rendering shows them.
LEADERBOARD = ("family", "best", "trial", "finished", "pruned", "settings")
NUMERIC = frozenset({"best", "trial", "finished", "pruned"})  # right-aligned


def leaderboard(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The family leaderboard, best family first, each cell as text: one row per family of
    the space (``—`` where a family has no COMPLETE trial)."""
    rows = []
    for f in summary["families"]:
        b = f["best"]
        rows.append(
            {
                "family": f["family"],
                "best": f"{b['value']:.4f}" if b else "—",
                "trial": str(b["number"]) if b else "—",
                "finished": str(f["finished"]),
                "pruned": str(f["pruned"]),
                "settings": describe(b["params"], family=False) if b else "",
            }
        )
    return rows


def states_line(summary: dict[str, Any]) -> str:
    """``complete 12, pruned 4, running 2``: the trials by state, those with any."""
    return ", ".join(f"{n.lower()} {c}" for n, c in summary["states"].items() if c) or "none yet"


def best_line(summary: dict[str, Any]) -> str | None:
    """``trial 7, value 0.9833: cosine lr=0.12 ...``, or None before a trial completes."""
    best = summary["best"]
    if not best:
        return None
    return f"trial {best['number']}, value {best['value']:.4f}: {describe(best['params'])}"


def format_table(summary: dict[str, Any]) -> str:
    """The summary as text for people."""
    lines = [
        f"study {summary['study']} ({summary['objective']}, {summary['direction']}) "
        f"in {summary['storage']}",
        f"finished {summary['finished']} of {summary['budget']} trials ({states_line(summary)})",
    ]
    if best := best_line(summary):
        lines.append(f"best: {best}")
    widths = {"family": 14, "best": 8, "trial": 5, "finished": 8, "pruned": 6, "settings": 0}

    def cells(row: dict[str, str]) -> str:
        return " ".join(
            f"{row[c]:>{widths[c]}}" if c in NUMERIC else f"{row[c]:{widths[c]}}"
            for c in LEADERBOARD
        ).rstrip()

    lines += ["", cells({c: c for c in LEADERBOARD})]
    lines += [cells(row) for row in leaderboard(summary)]
    if summary["branches"] is not None:
        lines += ["", f"branches: {tree_line(summary['branches'])}"]
    short = [f for f in summary["families"] if f["finished"] < summary["min_trials_per_family"]]
    if short and not summary["running"]:  # the study has ended (or paused) that way
        lines.append(
            f"note: fewer than min_trials_per_family={summary['min_trials_per_family']} "
            "finished trials in "
            + ", ".join(f"{f['family']} ({f['finished']})" for f in short)
            + " (failed trials do not count)"
        )
    if summary["running"]:
        lines += ["", f"running {'trial':>5} {'epoch':>5} {'last':>8}  worker  settings"]
        for r in summary["running"]:
            last = f"{r['value']:>8.4f}" if r["value"] is not None else f"{'—':>8}"
            lines.append(
                f"{'':7} {r['number']:>5} {r['epoch']:>5} {last}  {r['worker'] or '?'}  "
                f"{describe(r['params'])}"
            )
    if summary["failures"]:
        lines.append("")
        lines += [f"failed {f['count']}x: {f['reason']}" for f in summary["failures"]]
    return "\n".join(lines)


def describe(params: dict[str, Any], *, family: bool = True) -> str:
    """Compact settings: ``cosine warmup_steps=50 lr=0.12 optimizer=sgd ...``."""
    name = params.get("schedule", "?")
    shown = [name] if family else []
    shown += [
        f"{key.removeprefix(name + '.')}={_fmt(value)}"
        for key, value in params.items()
        if key != "schedule"
    ]
    return " ".join(shown)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
