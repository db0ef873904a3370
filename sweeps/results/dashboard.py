"""Keeping a study's optuna-dashboard pages current while workers run.

- When a trial ends, its curves go to the artifact store as an SVG and two CSVs; the
  dashboard's trial page shows them. Optuna refuses to attach artifacts to a finished
  trial, and a trial whose worker was lost is failed by another worker: so a trial is given
  its three artifacts when it starts, drawn with no curves yet, and whoever ends it
  rewrites their contents (the trial's worker from memory; the worker that failed it as
  stale from the database).
- As trials finish, the study's note (`note.study_note`) and its graphs (`charts`, drawn by
  `figures`) are rewritten, by one worker at a time and at most every `EVERY` seconds (a lease in
  `storage.base.BaseDatabase.claim_publication`), so racing workers never interleave them.

Nothing here may end a trial or a worker: a failure to publish is logged and training goes on.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.artifacts import get_all_artifact_meta, upload_artifact
from optuna_dashboard import save_note, save_plotly_graph_object

from storage import BaseDatabase, one_line
from storage.optuna_internals import trial_id_of
from sweeps.results import charts, figures
from sweeps.results.artifact_store import ArtifactStore
from sweeps.results.curves import Curves
from sweeps.results.note import study_note
from sweeps.results.study_data import StudyData
from sweeps.results.trial_svg import trial_svg
from sweeps.study import StudyHandle
from sweeps.summary import describe
from sweeps.trial_attrs import params_of

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
        self._artifacts: dict[int, dict[str, str]] = {}  # trial id -> file name -> artifact id

    def trial_started(self, trial: optuna.Trial, title: str) -> None:
        """Give the trial its curve artifacts, with no curves drawn yet (a trial handed
        back keeps those it has)."""
        try:
            had = _artifact_ids(trial, trial.storage)
            for name, content in _files(trial.number, Curves([], []), title).items():
                if name not in had:
                    had[name] = self._upload(trial, name, content)
            self._artifacts[trial_id_of(trial)] = had
        except Exception as e:  # the trial's result matters more than its pictures
            self.log(f"trial {trial.number}: could not store its curves: {one_line(e)}")

    def trial_ended(self, trial: optuna.Trial, curves: Curves, title: str) -> None:
        """Draw the trial's curves into its artifacts; call before the trial is told."""
        try:
            ids = self._artifacts.pop(trial_id_of(trial), {})
            unattached = self._rewrite(ids, _files(trial.number, curves, title))
            for name, content in unattached.items():  # it could not be given them at start
                self._upload(trial, name, content)
        except Exception as e:
            self.log(f"trial {trial.number}: could not store its curves: {one_line(e)}")

    def failed_as_stale(self, number: int) -> None:
        """Draw the curves the database holds of trial ``number``, which this worker
        failed as stale, into the artifacts its lost worker gave it when it started."""
        storage = self.db.optuna
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                self.handle.study_id, number
            )
            trial = storage.get_trial(trial_id)
            ids = _artifact_ids(trial, storage)
            title = f"trial {number} FAIL (its worker was lost) · {describe(params_of(trial))}"
            self._rewrite(ids, _files(number, Curves.of_trial(self.db, trial_id), title))
        except Exception as e:
            self.log(f"trial {number}: could not store its curves: {one_line(e)}")

    def _rewrite(self, ids: dict[str, str], files: dict[str, bytes]) -> dict[str, bytes]:
        """Write each of ``files`` into its artifact (``ids``: name -> artifact id); those
        without one, returned."""
        unattached = {}
        for name, content in files.items():
            if name in ids:
                self.store.write(ids[name], io.BytesIO(content))
            else:
                unattached[name] = content
        return unattached

    def _upload(self, trial: optuna.Trial, name: str, content: bytes) -> str:
        """Attach a new artifact to the (running) trial; its id."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(content)
            return upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial
            )

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


def _files(number: int, curves: Curves, title: str) -> dict[str, bytes]:
    """A trial's curve artifacts by file name: the image, and the curves as CSV."""
    return {
        f"trial-{number}-curves.svg": trial_svg(curves, title).encode(),
        f"trial-{number}-steps.csv": curves.steps_csv().encode(),
        f"trial-{number}-epochs.csv": curves.epochs_csv().encode(),
    }


def _artifact_ids(
    trial: optuna.Trial | optuna.trial.FrozenTrial, storage: optuna.storages.BaseStorage
) -> dict[str, str]:
    """The trial's artifacts: file name -> artifact id."""
    return {m.filename: m.artifact_id for m in get_all_artifact_meta(trial, storage=storage)}


def publish_study(db: BaseDatabase, handle: StudyHandle) -> None:
    """Write the study's note and graphs (callers make sure no one else writes them now)."""
    data = StudyData(db, handle)
    save_note(handle.study, study_note(data))
    for graph_id, figure in GRAPHS.items():
        save_plotly_graph_object(handle.study, figure(data), graph_object_id=graph_id)
