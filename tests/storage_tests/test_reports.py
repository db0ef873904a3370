"""A stack's reports in one transaction (`Database.add_reports`, `objectives.report_all`), on
SQLite and PostgreSQL, read back by plain Optuna and from our curve tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna

from objectives import Diverged, Lost, Run, report_all
from storage import Database, TrialReport
from storage.optuna_internals import trial_id_of


def study_with_trials(db: Database, n: int) -> tuple[optuna.Study, list[optuna.Trial]]:
    study = optuna.create_study(storage=db.optuna, study_name="t", direction="maximize")
    return study, [study.ask() for _ in range(n)]


def steps(*numbers: int) -> list[dict[str, float | int | None]]:
    return [
        {"step": s, "lr": 0.1, "train_loss": 1.0 / (s + 1), "grad_norm": None} for s in numbers
    ]


def test_add_reports_stores_values_optuna_reads_and_curves(storage_url: str) -> None:
    db = Database(storage_url)
    _, trials = study_with_trials(db, 2)
    a, b = (trial_id_of(t) for t in trials)
    db.add_reports(
        [TrialReport(a, 1, 0.5, 2.0, steps(0, 10)), TrialReport(b, 1, 0.25, None, steps(0))]
    )
    db.add_reports([TrialReport(a, 2, 0.75, 1.5, steps(20)), TrialReport(b, 2, 0.5, 1.0, [])])

    stored = optuna.load_study(study_name="t", storage=storage_url).trials
    assert [t.intermediate_values for t in stored] == [{1: 0.5, 2: 0.75}, {1: 0.25, 2: 0.5}]
    assert [p.step for p in db.step_curve(a)] == [0, 10, 20]
    assert [p.step for p in db.step_curve(b)] == [0]
    assert [(p.epoch, p.value, p.val_loss) for p in db.epoch_curve(a)] == [
        (1, 0.5, 2.0),
        (2, 0.75, 1.5),
    ]
    assert [p.val_loss for p in db.epoch_curve(b)] == [None, 1.0]


def test_add_reports_skips_and_names_finished_trials(storage_url: str) -> None:
    db = Database(storage_url)
    study, (running, finished) = study_with_trials(db, 2)
    study.tell(finished, 0.9)  # as if another worker had failed it as stale
    skipped = db.add_reports(
        [
            TrialReport(trial_id_of(running), 1, 0.5, None, steps(0, 1)),
            TrialReport(trial_id_of(finished), 1, 0.5, None, steps(0, 1)),
        ]
    )
    assert skipped == {trial_id_of(finished)}
    assert [t.intermediate_values for t in study.trials] == [{1: 0.5}, {}]
    assert len(db.step_curve(trial_id_of(running))) == 2
    assert db.step_curve(trial_id_of(finished)) == db.epoch_curve(trial_id_of(finished)) == []


def test_report_all_writes_a_stack_once_and_leaves_out_diverged_runs(storage_url: str) -> None:
    db = Database(storage_url)
    _, trials = study_with_trials(db, 3)
    writes: list[int] = []

    def sink(reports: Sequence[TrialReport]) -> set[int]:
        writes.append(len(reports))
        return db.add_reports(reports)

    runs = [Run(t, {}, seed=0, epochs=2, reports=sink) for t in trials]
    for run in runs:
        run.log_step(0, lr=0.1, loss=2.0)

    diverged = report_all(runs, [0.5, math.nan, 0.7], [1, 1, 1], val_losses=[1.0, None, 0.9])

    assert writes == [2]
    assert list(diverged) == [1] and isinstance(diverged[1], Diverged)
    stored = optuna.load_study(study_name="t", storage=storage_url).trials
    assert [t.intermediate_values for t in stored] == [{1: 0.5}, {}, {1: 0.7}]
    assert [len(db.step_curve(trial_id_of(t))) for t in trials] == [1, 0, 1]
    assert [r["epoch"] for r in runs[0].reported] == [1]


def test_report_all_ends_runs_whose_trial_another_worker_finished(storage_url: str) -> None:
    db = Database(storage_url)
    study, trials = study_with_trials(db, 2)
    study.tell(trials[1], state=optuna.trial.TrialState.FAIL)  # failed as stale elsewhere
    runs = [Run(t, {}, seed=0, epochs=2, reports=db.add_reports) for t in trials]

    ended = report_all(runs, [0.5, 0.6], [1, 1], val_losses=[None, None])

    assert list(ended) == [1] and isinstance(ended[1], Lost)
    assert [t.intermediate_values for t in study.trials] == [{1: 0.5}, {}]
