"""A trial's curves as plain rows: per (downsampled) step and per epoch, with CSV text."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage import BaseDatabase

if TYPE_CHECKING:
    from objectives import Run

STEP_COLUMNS = ("step", "lr", "train_loss", "grad_norm")
EPOCH_COLUMNS = ("epoch", "value", "val_loss")


@dataclass(frozen=True)
class Curves:
    steps: list[dict[str, Any]]  # STEP_COLUMNS each
    epochs: list[dict[str, Any]]  # EPOCH_COLUMNS each

    @classmethod
    def of_run(cls, run: Run) -> Curves:
        """What the run logged and reported (held in memory: no database read)."""
        return cls(run.logged_steps, run.reported)

    @classmethod
    def of_trial(cls, db: BaseDatabase, trial_id: int) -> Curves:
        steps = [{c: getattr(p, c) for c in STEP_COLUMNS} for p in db.step_curve(trial_id)]
        epochs = [{c: getattr(p, c) for c in EPOCH_COLUMNS} for p in db.epoch_curve(trial_id)]
        return cls(steps, epochs)

    def __bool__(self) -> bool:
        return bool(self.steps or self.epochs)

    def series(self, table: str, column: str) -> tuple[list[float], list[float]]:
        """(x, y) of one column of ``steps`` or ``epochs``, missing values left out."""
        rows = self.steps if table == "steps" else self.epochs
        x_name = "step" if table == "steps" else "epoch"
        points = [(r[x_name], r[column]) for r in rows if r.get(column) is not None]
        return [float(x) for x, _ in points], [float(y) for _, y in points]

    def steps_csv(self) -> str:
        return _csv(STEP_COLUMNS, self.steps)

    def epochs_csv(self) -> str:
        return _csv(EPOCH_COLUMNS, self.epochs)


def _csv(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
