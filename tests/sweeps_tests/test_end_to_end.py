"""The sweep engine end to end through the CLI, on SQLite and on the throwaway PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_results import start_dashboard

from objectives import Outcome, Run
from storage import Database, open_database
from storage.optuna_internals import trial_id_of
from sweeps.config import load_yaml, parse_config
from sweeps.study import launch
from sweeps.worker import Worker
from sweeps_helpers import assert_epoch_curves_stored, config, optuna_storage, sweeps

pytestmark = pytest.mark.slow


def trials(url: str, study: str = "t") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials()


def states(url: str, study: str = "t") -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials(url, study):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def test_run_with_three_workers_finishes_exactly_the_budget(
    tmp_path: Path, storage_url: str
) -> None:
    cfg = config(
        tmp_path,
        budget={"trials": 10, "epochs": 3},
        pruner={"name": "median", "n_startup_trials": 2},
    )
    result = sweeps("run", str(cfg), "--workers", "3", "--storage", storage_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    counts = states(storage_url)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 10
    assert set(counts) <= {"COMPLETE", "PRUNED"}
    assert "finished 10 of 10 trials" in result.stdout
    assert "sweeps dashboard" in result.stdout

    # Plain Optuna reads the study.
    listed = sweeps_optuna_cli(
        "trials", "--study-name", "t", "--storage", storage_url, "-f", "json", cwd=tmp_path
    )
    assert len(json.loads(listed)) == 10

    # optuna-dashboard's server answers for it.
    storage = optuna.storages.RDBStorage(storage_url)
    app = optuna_dashboard.wsgi(storage)
    studies = wsgi_get(app, "/api/studies")
    assert [s["study_name"] for s in studies["study_summaries"]] == ["t"]
    study_id = studies["study_summaries"][0]["study_id"]
    detail = wsgi_get(app, f"/api/studies/{study_id}")
    assert len(detail["trials"]) == 10


def test_a_study_in_redis_runs_end_to_end(tmp_path: Path, redis_url: str) -> None:
    """``--storage redis://``: stacked workers finish exactly the budget, every curve is
    stored, the commands read it back, and Optuna and optuna-dashboard read the journal."""
    cfg = config(tmp_path, budget={"trials": 8, "epochs": 3}, stack=2)
    result = sweeps("run", str(cfg), "--workers", "2", "--storage", redis_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "finished 8 of 8 trials" in result.stdout
    assert "curves in keys sweeps:trial:<id>:steps" in result.stdout

    journal = optuna_storage(redis_url)
    trials = optuna.load_study(study_name="t", storage=journal).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    db = open_database(redis_url)
    for t in trials:
        assert [p.epoch for p in db.epoch_curve(trial_id_of(t))] == [1, 2, 3]
        assert db.step_curve(trial_id_of(t))

    exported = sweeps(
        "export", "--study", "t", "--out", "t.csv", "--storage", redis_url, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == 8 and all(row["lr_curve"] for row in rows)
    status = sweeps("status", "--study", "t", "--storage", redis_url, cwd=tmp_path)
    assert status.returncode == 0 and "finished 8 of 8 trials" in status.stdout

    app = optuna_dashboard.wsgi(journal)
    studies = wsgi_get(app, "/api/studies")
    assert [s["study_name"] for s in studies["study_summaries"]] == ["t"]
    detail = wsgi_get(app, f"/api/studies/{studies['study_summaries'][0]['study_id']}")
    assert len(detail["trials"]) == 8


def test_curves_are_stored_per_trial_and_bounded(tmp_path: Path, storage_url: str) -> None:
    cfg = config(
        tmp_path,
        budget={"trials": 2, "epochs": 4},
        objective_args={"hidden": 16},
        space={**json.loads(json.dumps(BASE_SPACE)), "batch_size": 8},
    )
    assert sweeps("run", str(cfg), "--storage", storage_url, cwd=tmp_path).returncode == 0
    engine = sqlalchemy.create_engine(storage_url)
    with engine.connect() as conn:
        for t in trials(storage_url):
            steps = conn.execute(
                sqlalchemy.text(
                    "SELECT step, lr, train_loss, grad_norm FROM sweeps_curve_steps "
                    "WHERE trial_id = :t ORDER BY step"
                ),
                {"t": trial_id_of(t)},
            ).all()
            epochs = conn.execute(
                sqlalchemy.text(
                    "SELECT epoch, value FROM sweeps_curve_epochs WHERE trial_id = :t "
                    "ORDER BY epoch"
                ),
                {"t": trial_id_of(t)},
            ).all()
            # 1437 examples / 8 per batch = 180 steps per epoch, 720 in all: thinned to <= 500.
            assert 300 <= len(steps) <= 500
            assert steps[0].step == 0 and all(s.lr > 0 and s.grad_norm > 0 for s in steps)
            assert [(e.epoch, e.value) for e in epochs] == sorted(t.intermediate_values.items())
    engine.dispose()


BASE_SPACE: dict[str, Any] = {
    "lr": 0.05,
    "optimizer": "sgd",
    "batch_size": 128,
    "schedule": {"cosine": {}},
}


def test_same_seed_and_params_give_the_same_curve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    for study in ("a", "b"):
        cfg = config(tmp_path, study=study, budget={"trials": 1, "epochs": 3}, space=BASE_SPACE)
        assert sweeps("run", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    a, b = trials(url, "a")[0], trials(url, "b")[0]
    assert a.intermediate_values == b.intermediate_values
    assert len(a.intermediate_values) == 3


def test_a_finished_run_leaves_an_sqlite_file_complete_by_itself(tmp_path: Path) -> None:
    """Processes end without the interpreter's teardown (`sweeps.cli.console`), but close
    their databases first: SQLite folds its write-ahead log back into the file, so the file
    alone (copied, mailed) holds every trial."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(tmp_path, budget={"trials": 4, "epochs": 2})
    assert (
        sweeps("run", str(cfg), "--workers", "2", "--storage", url, cwd=tmp_path).returncode == 0
    )
    assert not (tmp_path / "s.db-wal").exists()
    alone = tmp_path / "copy"
    alone.mkdir()
    (alone / "s.db").write_bytes((tmp_path / "s.db").read_bytes())
    assert states(f"sqlite:///{alone / 's.db'}") == {"COMPLETE": 4}


def test_diverging_trials_are_pruned_with_the_reason_and_the_sweep_goes_on(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(
        tmp_path,
        budget={"trials": 3, "epochs": 2},
        space={**BASE_SPACE, "lr": 1.0e3, "weight_decay": 1.0},
    )
    result = sweeps("run", str(cfg), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    done = trials(url)
    assert [t.state for t in done] == [TrialState.PRUNED] * 3
    assert all(t.user_attrs["sweeps:reason"].startswith("diverged: ") for t in done)


FLAKY = '''
import json, os, pathlib
from objectives.builtin import digits_mlp

def objective(run):
    """Fails for the 'step' family always; for 'cosine' only on a first attempt, mid-run."""
    family = run.params["schedule"]
    if family == "step":
        raise RuntimeError("step is broken here")
    if family == "cosine" and run.trial.user_attrs.get("sweeps:attempt", 1) == 1:
        # The built-in trainer reports a stack at once (objectives.report_all); it saves
        # each trial's checkpoint after its report, so preempt right after that save.
        inner = run.save_checkpoint
        def save_checkpoint(state, **flags):
            inner(state, **flags)
            if state["epoch"] == 2:
                raise RuntimeError("preempted after epoch 2")
        run.save_checkpoint = save_checkpoint
    return digits_mlp(run)
'''


def test_failing_trials_are_retried_and_do_not_count(tmp_path: Path, storage_url: str) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    cfg = config(
        tmp_path,
        objective="flaky:objective",
        budget={"trials": 6, "epochs": 3, "retries": 1, "max_failures": 100},
        space={
            **BASE_SPACE,
            "schedule": {"step": {"decay_steps": 10}, "cosine": {}, "constant": {}},
        },
    )
    result = sweeps("run", str(cfg), "--workers", "2", "--storage", storage_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    done = trials(storage_url)
    finished = [t for t in done if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    failed = [t for t in done if t.state == TrialState.FAIL]
    assert failed, "the random sampler should have picked 'step' or 'cosine' at least once"
    for t in failed:
        reason = t.user_attrs["sweeps:reason"]
        assert reason in (
            "RuntimeError: step is broken here",
            "RuntimeError: preempted after epoch 2",
        )
    # Each step-trial ran twice (first attempt + 1 retry) before its slot was given back.
    step_failures = [t for t in failed if t.params["schedule"] == "step"]
    assert len(step_failures) % 2 == 0
    # A cosine retry resumed from the checkpoint of epoch 2 and equals an uninterrupted run.
    retries = [
        t
        for t in finished
        if t.user_attrs.get("sweeps:attempt") == 2 and t.params["schedule"] == "cosine"
    ]
    for retry in retries:
        first = next(t for t in done if t.number == retry.user_attrs["sweeps:retry_of"])
        assert first.intermediate_values == {k: retry.intermediate_values[k] for k in (1, 2)}
        assert len(retry.intermediate_values) == 3


def test_an_always_failing_objective_stops_the_sweep_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def objective(run):\n    raise ValueError('bug')\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(
        tmp_path,
        objective="broken:objective",
        budget={"trials": 5, "epochs": 2, "retries": 0, "max_failures": 3},
    )
    result = sweeps("run", str(cfg), "--storage", url, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert states(url) == {"FAIL": 3}
    assert all(t.user_attrs["sweeps:reason"] == "ValueError: bug" for t in trials(url))


def test_existing_study_is_refused_unless_resumed(tmp_path: Path, storage_url: str) -> None:
    cfg = config(tmp_path, budget={"trials": 2, "epochs": 2})
    assert sweeps("run", str(cfg), "--storage", storage_url, cwd=tmp_path).returncode == 0
    again = sweeps("launch", str(cfg), "--storage", storage_url, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.startswith("error: study: 't' already exists in ")
    assert "--resume" in again.stderr
    more = config(tmp_path, budget={"trials": 5, "epochs": 2})
    resumed = sweeps("run", str(more), "--resume", "--storage", storage_url, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    counts = states(storage_url)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 5


def test_worker_runs_a_launched_study_from_its_name_alone(
    tmp_path: Path, storage_url: str
) -> None:
    cfg = config(tmp_path, budget={"trials": 3, "epochs": 2})
    assert sweeps("launch", str(cfg), "--storage", storage_url, cwd=tmp_path).returncode == 0
    cfg.unlink()  # the worker needs only the study name and the storage
    enqueue = sweeps(
        "enqueue",
        "--study",
        "t",
        "--params",
        '{"schedule": "step", "lr": 0.123}',
        "--storage",
        storage_url,
        cwd=tmp_path,
    )
    assert enqueue.returncode == 0, enqueue.stderr
    worker = sweeps("worker", "--study", "t", "--storage", storage_url, cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    done = trials(storage_url)
    assert len(done) == 3
    assert done[0].params["schedule"] == "step" and done[0].params["lr"] == 0.123

    status = sweeps(
        "status", "--study", "t", "--format", "json", "--storage", storage_url, cwd=tmp_path
    )
    summary = json.loads(status.stdout)
    assert summary["finished"] == 3 and summary["budget"] == 3
    assert summary["best"]["value"] == max(t.value for t in done if t.value is not None)
    assert {f["family"] for f in summary["families"]} == {"constant", "cosine", "step"}

    out = tmp_path / "trials.csv"
    export = sweeps(
        "export", "--study", "t", "--out", str(out), "--storage", storage_url, cwd=tmp_path
    )
    assert export.returncode == 0, export.stderr
    rows = list(csv.DictReader(out.open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert rows[0]["param:schedule"] == "step" and float(rows[0]["param:lr"]) == 0.123
    assert len(rows[0]["val_curve"].split()) == 2


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{"schedule": "linear"}', "error: schedule: must be one of"),
        ('{"lr": 5}', "error: lr: must be in [0.01, 0.5], got 5.0"),
        ('{"cosine.min_lr": 0.001}', "error: cosine.min_lr: only for schedule 'cosine'"),
        ('{"momentum": 0.5}', "error: momentum: fixed at 0.9 by the config"),
        (
            '{"schedule": "step", "step.decay_steps": 7}',
            "error: step.decay_steps: fixed at 20 by the config",
        ),
        ("[1, 2]", "error: --params: must be a JSON object"),
        ("{nope", "error: --params: not valid JSON"),
    ],
)
def test_enqueue_refuses_bad_params(tmp_path: Path, params: str, message: str) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert sweeps("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path).returncode == 0
    result = sweeps("enqueue", "--study", "t", "--params", params, "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert not [t for t in trials(url) if t.state == TrialState.WAITING]


def test_unknown_study_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert sweeps("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path).returncode == 0
    result = sweeps("status", "--study", "nope", "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --study: no study named 'nope' in sqlite:///")


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--study", "t"],
        ["worker", "--study", "t"],
        ["enqueue", "--study", "t", "--params", "{}"],
    ],
)
def test_commands_that_read_a_study_never_create_a_database(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "missing.db"
    result = sweeps(*command, "--storage", f"sqlite:///{missing}", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr == f"error: --storage: no database at {missing}; create one with "
        "'sweeps launch'\n"
    )
    assert not missing.exists()


def sweeps_optuna_cli(*args: str, cwd: Path) -> str:
    import subprocess

    optuna_cli = Path(sys.executable).with_name("optuna")
    result = subprocess.run(
        [str(optuna_cli), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def wsgi_get(app: Any, path: str) -> Any:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), (status, body[:500])
    return json.loads(io.BytesIO(body).read())


QUICK = """
def objective(run):
    run.report(run.params["lr"], 1)
    return run.params["lr"]
"""


def test_racing_workers_never_overshoot_the_budget(tmp_path: Path, storage_url: str) -> None:
    """Six workers on trials that take milliseconds: the budget is the contested resource."""
    import subprocess

    (tmp_path / "quick.py").write_text(QUICK)
    cfg = config(tmp_path, objective="quick:objective", budget={"trials": 40, "epochs": 1})
    assert sweeps("launch", str(cfg), "--storage", storage_url, cwd=tmp_path).returncode == 0
    cmd = [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--storage", storage_url]
    workers = [
        subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    assert states(storage_url) == {"COMPLETE": 40}


def test_passwords_never_appear_in_any_output(tmp_path: Path, postgres: Any) -> None:
    url = postgres.create_database("masking").replace("postgres@", "postgres:s3cr3t@")
    cfg = config(tmp_path, budget={"trials": 1, "epochs": 1})
    outputs = [
        sweeps("run", str(cfg), "--storage", url, cwd=tmp_path),
        sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path),  # exists: an error
        sweeps("status", "--study", "t", "--storage", url, cwd=tmp_path),
        sweeps("status", "--study", "t", "--format", "json", "--storage", url, cwd=tmp_path),
        sweeps("status", "--study", "nope", "--storage", url, cwd=tmp_path),
        sweeps("status", "--study", "t", cwd=tmp_path, env={"SWEEPS_STORAGE": url}),
        sweeps(
            "status",
            "--study",
            "t",
            "--storage",
            url.replace(str(postgres.port), "1"),
            cwd=tmp_path,
        ),  # unreachable
    ]
    secret = tmp_path / "storage-url"
    secret.write_text(url + "\n")  # as a mounted Kubernetes Secret: a file, maybe a newline
    outputs += [
        sweeps("status", "--study", "t", "--storage-file", str(secret), cwd=tmp_path),
        sweeps(
            "report", "--study", "t", "--out", "rep", "--storage-file", str(secret), cwd=tmp_path
        ),
    ]
    dashboard, _ = start_dashboard(tmp_path, url)
    dashboard.terminate()
    out, err = dashboard.communicate(timeout=30)
    outputs.append(subprocess.CompletedProcess([], 0, out, err))
    assert [r.returncode for r in outputs] == [0, 2, 0, 0, 2, 0, 1, 0, 0, 0]
    for result in outputs:
        assert "s3cr3t" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    assert "postgres:***@" in outputs[2].stdout and "postgres:***@" in outputs[7].stdout
    assert "optuna-dashboard for postgresql+psycopg://postgres:***@" in outputs[9].stdout
    assert "s3cr3t" not in (tmp_path / "rep" / "report.html").read_text()
    logs = list((tmp_path / "sweeps-artifacts").rglob("*.log"))
    assert logs and all("s3cr3t" not in log.read_text() for log in logs)


def test_stacked_workers_finish_exactly_the_budget(tmp_path: Path, storage_url: str) -> None:
    cfg = config(
        tmp_path,
        budget={"trials": 12, "epochs": 3},
        pruner={"name": "median", "n_startup_trials": 2},
        space={
            **BASE_SPACE,
            "lr": {"low": 0.01, "high": 0.5, "log": True},
            "optimizer": ["sgd", "adamw"],
            "schedule": {"cosine": {}, "grad_norm": {"window": 5}, "plateau": {"patience": 0}},
        },
    )
    result = sweeps(
        "run", str(cfg), "--workers", "2", "--stack", "4", "--storage", storage_url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr + result.stdout
    done = trials(storage_url)
    assert len(done) == 12
    assert {t.state for t in done} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert_epoch_curves_stored(storage_url, done)


def test_a_stacked_worker_refills_the_slots_that_ended_trials_free(
    tmp_path: Path, storage_url: str
) -> None:
    """One worker, ``--stack 4``: never more than 4 trials in training, and a trial that ends
    (pruned, say) makes room for a new one while its stack mates still train. Observed at
    the worker's pool itself, in order, without a clock."""
    cfg = config(
        tmp_path,
        budget={"trials": 16, "epochs": 4},
        pruner={"name": "median", "n_startup_trials": 2},
        space={**BASE_SPACE, "lr": {"low": 0.001, "high": 0.5, "log": True}},
    )
    db = Database(storage_url)
    launch(db, parse_config(load_yaml(cfg)))
    worker = Worker(db, "t", artifacts=tmp_path / "artifacts", stack=4, log=lambda _: None)
    assert worker.pool is not None
    pool = worker.pool
    events: list[tuple[str, set[int]]] = []  # ("joined" | "ended", trial numbers)
    join, train_epoch = pool.join, pool.train_epoch

    def joined(runs: list[Run]) -> list[tuple[Run, Exception]]:
        events.append(("joined", {run.trial.number for run in runs}))
        failed = join(runs)
        assert len(pool) <= 4
        return failed

    def trained() -> list[tuple[Run, Outcome]]:
        ended = train_epoch()
        events.append(("ended", {run.trial.number for run, _ in ended}))
        return ended

    pool.join, pool.train_epoch = joined, trained  # type: ignore[method-assign]
    assert worker.run() == 0
    db.close()
    done = trials(storage_url)
    assert len(done) == 16 and {t.state for t in done} <= {TrialState.COMPLETE, TrialState.PRUNED}
    # Refilled: trials joined after others had ended, beside a trial that was training before
    # those ended and still was (a worker that waited for its whole stack never does this).
    training: set[int] = set()
    freed = refills = 0
    for kind, numbers in events:
        if kind == "ended":
            training -= numbers
            freed += len(numbers)
        elif numbers:
            refills += bool(freed and training)
            training |= numbers
            freed = 0
    assert refills > 0, events
    assert sum(len(numbers) for kind, numbers in events if kind == "joined") == 16


def test_a_user_objective_is_not_stacked_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "quick.py").write_text(QUICK)
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(tmp_path, objective="quick:objective", budget={"trials": 3, "epochs": 1})
    assert sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    result = sweeps("worker", "--study", "t", "--stack", "8", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "objective quick:objective cannot be stacked" in result.stdout
    assert states(url) == {"COMPLETE": 3}
