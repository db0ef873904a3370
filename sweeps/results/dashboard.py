"""Keeping a study's optuna-dashboard pages current while workers run.

- When a trial ends, its curves go to the artifact store as an SVG and two CSVs; the
  dashboard's trial page shows them. (Uploaded before Optuna is told the trial's state:
  Optuna refuses to change a finished trial.)
- As trials finish, the study's note (`note.study_note`) and its graphs (`charts`, drawn by
  `figures`) are rewritten, by one worker at a time and at most every `EVERY` seconds (a lease in
  `storage.base.BaseDatabase.claim_publication`), so racing workers never interleave them.

Nothing here may end a trial or a worker: a failure to publish is logged and training goes on.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.artifacts import upload_artifact
from optuna_dashboard import save_note, save_plotly_graph_object

from storage import BaseDatabase, one_line
from sweeps.results import charts, figures
from sweeps.results.artifact_store import ArtifactStore
from sweeps.results.curves import Curves
from sweeps.results.note import study_note
from sweeps.results.study_data import StudyData
from sweeps.results.trial_svg import trial_svg
from sweeps.study import StudyHandle

GRAPHS: dict[str, Callable[[StudyData], go.Figure]] = {  # graph id in the dashboard -> figure
    "sweeps-lr-schedules": lambda data: figures.plotly_figure(charts.lr_schedules(data)),
    "sweeps-best-by-family": lambda data: figures.plotly_figure(charts.best_by_family(data)),
    "sweeps-value-vs-params": figures.value_vs_params,
}
EVERY = 10.0  # seconds between refreshes of the study's pages
LEASE = 120.0  # seconds a refresh may take before another worker may take over
FINAL_WAIT = 60.0  # seconds a final refresh waits for another worker's refresh to end


class Publisher:
    def __init__(
        self,
        db: BaseDatabase,
        handle: StudyHandle,
        store: ArtifactStore,
        log: Callable[[str], None] = print,
    ) -> None:
        self.db, self.handle, self.log = db, handle, log
        self.store = store
        self._next_try = 0.0  # monotonic time before which asking the database is pointless

    def trial_ended(self, trial: optuna.Trial, curves: Curves, title: str) -> None:
        """Attach the trial's curves to it; call before the trial is told."""
        if not curves:
            return
        try:
            with tempfile.TemporaryDirectory() as tmp:
                files = {
                    f"trial-{trial.number}-curves.svg": trial_svg(curves, title).encode(),
                    f"trial-{trial.number}-steps.csv": curves.steps_csv().encode(),
                    f"trial-{trial.number}-epochs.csv": curves.epochs_csv().encode(),
                }
                for name, content in files.items():
                    path = Path(tmp) / name
                    path.write_bytes(content)
                    upload_artifact(
                        artifact_store=self.store, file_path=str(path), study_or_trial=trial
                    )
        except Exception as e:  # the trial's result matters more than its pictures
            self.log(f"trial {trial.number}: could not store its curves: {one_line(e)}")

    def refresh(self, *, final: bool = False) -> bool:
        """Rewrite the study's note and graphs unless another worker did so lately (or, with
        ``final``, wait for one in progress and refresh anyway). Returns whether it did."""
        if not final and time.monotonic() < self._next_try:
            return False
        self._next_try = time.monotonic() + EVERY
        study_id = self.handle.study_id
        deadline = time.monotonic() + (FINAL_WAIT if final else 0)
        while not self.db.claim_publication(
            study_id, now=time.time(), every=0 if final else EVERY, lease=LEASE
        ):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        try:
            publish_study(self.db, self.handle)
            return True
        except Exception as e:
            self.log(f"could not refresh the study's dashboard pages: {one_line(e)}")
            return False
        finally:
            self.db.end_publication(study_id, now=time.time())


def publish_study(db: BaseDatabase, handle: StudyHandle) -> None:
    """Write the study's note and graphs (callers make sure no one else writes them now)."""
    data = StudyData(db, handle)
    save_note(handle.study, study_note(data))
    for graph_id, figure in GRAPHS.items():
        save_plotly_graph_object(handle.study, figure(data), graph_object_id=graph_id)
