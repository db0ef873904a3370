"""A study's finished trials, grouped the ways our pages and reports show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from storage import BaseDatabase
from storage.optuna_internals import trial_id_of
from sweeps.results.curves import Curves
from sweeps.study import StudyHandle
from sweeps.summary import describe, summarize
from sweeps.trial_attrs import params_of


@dataclass
class StudyData:
    db: BaseDatabase
    handle: StudyHandle
    summary: dict[str, Any] = field(init=False)
    finished: list[FrozenTrial] = field(init=False)  # COMPLETE and PRUNED
    _curves: dict[int, Curves] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.db, self.handle)
        self.finished = [
            t
            for t in self.handle.study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]

    @property
    def maximize(self) -> bool:
        return self.handle.config.direction == "maximize"

    def complete(self) -> list[FrozenTrial]:
        """COMPLETE trials, best first."""
        done = [t for t in self.finished if t.state == TrialState.COMPLETE and t.value is not None]
        return sorted(done, key=lambda t: float(t.values[0]), reverse=self.maximize)

    def best_per_family(self) -> list[FrozenTrial]:
        """The best COMPLETE trial of each family, best family first."""
        seen: dict[str, FrozenTrial] = {}
        for t in self.complete():
            seen.setdefault(family(t), t)
        return list(seen.values())

    def values_in_order(self) -> tuple[list[int], list[float]]:
        """(trial number, value) of the COMPLETE trials, in the order they were numbered."""
        done = sorted(self.complete(), key=lambda t: t.number)
        return [t.number for t in done], [float(t.values[0]) for t in done]

    def best_so_far(self) -> tuple[list[int], list[float]]:
        numbers, values = self.values_in_order()
        pick = max if self.maximize else min
        best: list[float] = []
        for v in values:
            best.append(pick(best[-1], v) if best else v)
        return numbers, best

    def curves(self, trial: FrozenTrial) -> Curves:
        trial_id = trial_id_of(trial)
        if trial_id not in self._curves:
            self._curves[trial_id] = Curves.of_trial(self.db, trial_id)
        return self._curves[trial_id]

    def key_params(self) -> list[str]:
        """Numeric parameters that shape the schedule: ``lr`` and the families' own."""
        names = {
            name
            for t in self.finished
            for name, dist in t.distributions.items()
            if isinstance(dist, FloatDistribution | IntDistribution)
            and (name == "lr" or "." in name)
        }
        return sorted(names, key=lambda n: (n != "lr", n))

    def pruning(self) -> dict[str, Any]:
        """Epochs the finished trials trained, against training every one to the end."""
        epochs = self.handle.config.budget.epochs
        rows = []
        for name in self.handle.config.space["schedule"]:
            mine = [t for t in self.finished if family(t) == name]
            trained = sum(len(t.intermediate_values) for t in mine)
            rows.append(
                {
                    "family": name,
                    "finished": len(mine),
                    "pruned": sum(t.state == TrialState.PRUNED for t in mine),
                    "epochs_trained": trained,
                    "epochs_without_pruning": len(mine) * epochs,
                }
            )
        trained = sum(r["epochs_trained"] for r in rows)
        full = sum(r["epochs_without_pruning"] for r in rows)
        return {
            "families": rows,
            "epochs_trained": trained,
            "epochs_without_pruning": full,
            "fraction_saved": 1 - trained / full if full else 0.0,
        }


def zoomed_range(values: list[float]) -> tuple[float, float]:
    """An axis range around ``values`` that shows their differences (bars from zero hide
    them)."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.5 or abs(high) * 0.01 or 0.01
    return low - pad, high + pad


def family(trial: FrozenTrial) -> str:
    name: str = params_of(trial).get("schedule", "?")
    return name


def label(trial: FrozenTrial) -> str:
    """``#12 cosine warmup_steps=50 lr=0.12 ...`` for legends and titles."""
    return f"#{trial.number} {describe(params_of(trial))}"
