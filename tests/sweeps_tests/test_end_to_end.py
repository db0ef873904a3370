"""The sweep engine end to end through the CLI, on SQLite and on the throwaway PostgreSQL.

The tests that only read a finished sweep share one (`ran`: `sweeps run` with two workers,
run once per session). Both backends run where the backend is what is tested (workers racing
for the budget); the storage contract suite (`tests/storage_tests/test_backends.py`) covers
the rest. What a command decides without its process mattering (a refused enqueue, an error
line, how a worker trains) runs in this process (`cli_in_process`, `sweeps.worker.Worker`).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import wsgiref.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard
import pytest
import sqlalchemy
from cli_in_process import InProcess
from optuna.trial import TrialState
from test_results import start_dashboard

from objectives import Outcome, Run
from storage import Database, open_database
from storage.optuna_internals import trial_id_of
from sweeps.config import load_yaml, parse_config
from sweeps.study import launch
from sweeps.worker import Worker
from sweeps_helpers import assert_epoch_curves_stored, config, optuna_storage, sweeps

# Only the racing-workers tests keep both SQL backends.
POSTGRESQL_ONLY = pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)


def trials(url: str, study: str = "t") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials()


def states(url: str, study: str = "t") -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials(url, study):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def work(url: str, artifacts: Path, study: str = "t", **options: Any) -> int:
    """One worker in this process (what `sweeps worker` runs) until the budget is met."""
    db = Database(url)
    try:
        return Worker(db, study, artifacts=artifacts, log=lambda _: None, **options).run()
    finally:
        db.close()


BASE_SPACE: dict[str, Any] = {
    "lr": 0.05,
    "optimizer": "sgd",
    "batch_size": 128,
    "schedule": {"cosine": {}},
}


# --- one finished `sweeps run`, read by several tests -----------------------------------------

RAN_TRIALS = 6


@dataclass(frozen=True)
class Ran:
    config: Path
    url: str
    stdout: str
    wal_left: bool  # the SQLite file had a write-ahead log beside it once the run ended
    alone: Path  # a copy of the SQLite file alone, taken then


def run_once(directory: Path) -> dict[str, Any]:
    cfg = config(
        directory,
        budget={"trials": RAN_TRIALS, "epochs": 2},
        objective_args={"hidden": 8},
        pruner={"name": "median", "n_startup_trials": 2},
    )
    url = f"sqlite:///{directory / 's.db'}"
    result = sweeps("run", str(cfg), "--workers", "2", "--storage", url, cwd=directory)
    assert result.returncode == 0, result.stderr + result.stdout
    # Before anything else opens the file (a reader makes a write-ahead log of its own).
    wal_left = (directory / "s.db-wal").exists()
    (directory / "alone").mkdir()
    shutil.copyfile(directory / "s.db", directory / "alone" / "s.db")
    return {"config": str(cfg), "url": url, "stdout": result.stdout, "wal_left": wal_left}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """`sweeps run --workers 2` to the end of a small study on SQLite, for tests that only
    read it. Run once per session: under pytest-xdist the session's processes share a
    directory, and the first to need the study runs it while another waits on the lock."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    directory = shared / "end-to-end-ran"
    with (shared / "end-to-end-ran.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = directory / "ran.json"
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)  # a run that failed half-way
            directory.mkdir()
            done.write_text(json.dumps(run_once(directory)))
        fcntl.flock(lock, fcntl.LOCK_UN)
    found = json.loads(done.read_text())
    return Ran(
        Path(found["config"]),
        found["url"],
        found["stdout"],
        found["wal_left"],
        directory / "alone" / "s.db",
    )


@pytest.mark.e2e
def test_sweeps_run_with_two_workers_finishes_exactly_the_budget(ran: Ran) -> None:
    counts = states(ran.url)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == RAN_TRIALS
    assert set(counts) <= {"COMPLETE", "PRUNED"}
    assert f"finished {RAN_TRIALS} of {RAN_TRIALS} trials" in ran.stdout
    assert "sweeps dashboard" in ran.stdout


@pytest.mark.e2e
def test_plain_optuna_and_optuna_dashboard_read_a_finished_study(ran: Ran, tmp_path: Path) -> None:
    listed = sweeps_optuna_cli(
        "trials", "--study-name", "t", "--storage", ran.url, "-f", "json", cwd=tmp_path
    )
    assert len(json.loads(listed)) == RAN_TRIALS

    storage = optuna.storages.RDBStorage(ran.url)
    app = optuna_dashboard.wsgi(storage)
    studies = wsgi_get(app, "/api/studies")
    assert [s["study_name"] for s in studies["study_summaries"]] == ["t"]
    study_id = studies["study_summaries"][0]["study_id"]
    detail = wsgi_get(app, f"/api/studies/{study_id}")
    assert len(detail["trials"]) == RAN_TRIALS
    storage.engine.dispose()


@pytest.mark.e2e
def test_a_finished_run_leaves_an_sqlite_file_complete_by_itself(ran: Ran) -> None:
    """Processes end without the interpreter's teardown (`sweeps.cli.console`), but close
    their databases first: SQLite folds its write-ahead log back into the file, so the file
    alone (copied, mailed) holds every trial."""
    assert not ran.wal_left
    counts = states(f"sqlite:///{ran.alone}")
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == RAN_TRIALS


@pytest.mark.e2e
def test_a_runs_curves_are_stored_per_trial(ran: Ran) -> None:
    done = trials(ran.url)
    assert_epoch_curves_stored(ran.url, done)
    engine = sqlalchemy.create_engine(ran.url)
    with engine.connect() as conn:
        for t in done:
            steps = conn.execute(
                sqlalchemy.text(
                    "SELECT step, lr, grad_norm FROM sweeps_curve_steps WHERE trial_id = :t "
                    "ORDER BY step"
                ),
                {"t": trial_id_of(t)},
            ).all()
            assert steps and steps[0].step == 0
            assert all(s.lr > 0 and s.grad_norm > 0 for s in steps)
    engine.dispose()


@pytest.mark.e2e
def test_an_existing_study_is_refused_unless_resumed(ran: Ran, tmp_path: Path) -> None:
    again = sweeps("launch", str(ran.config), "--storage", ran.url, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.startswith("error: study: 't' already exists in ")
    assert "--resume" in again.stderr
    assert len(trials(ran.url)) == RAN_TRIALS  # nothing written


@pytest.mark.e2e
def test_unknown_study_is_a_usage_error(ran: Ran, tmp_path: Path) -> None:
    result = sweeps("status", "--study", "nope", "--storage", ran.url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --study: no study named 'nope' in sqlite:///")


@pytest.mark.usefixtures("one_torch_thread")
def test_a_resumed_launch_grows_the_budget_and_workers_fill_it(
    tmp_path: Path, cli: InProcess
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    small = {"objective_args": {"hidden": 8}}
    cfg = config(tmp_path, budget={"trials": 2, "epochs": 1}, **small)
    assert cli("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    assert work(url, tmp_path / "artifacts") == 0
    more = config(tmp_path, budget={"trials": 5, "epochs": 1}, **small)
    refused = cli("launch", str(more), "--storage", url, cwd=tmp_path)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = cli("launch", str(more), "--resume", "--storage", url, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("resumed study 't' in sqlite:///")
    assert work(url, tmp_path / "artifacts") == 0
    counts = states(url)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 5


# --- other backends ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_study_in_redis_runs_end_to_end(tmp_path: Path, redis_url: str, cli: InProcess) -> None:
    """``--storage redis://``: stacked workers finish exactly the budget, every curve is
    stored, the commands read it back, and Optuna and optuna-dashboard read the journal."""
    cfg = config(tmp_path, budget={"trials": 6, "epochs": 2}, objective_args={"hidden": 8})
    result = sweeps(
        "run", str(cfg), "--workers", "2", "--stack", "2", "--storage", redis_url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "finished 6 of 6 trials" in result.stdout
    assert "curves in keys sweeps:trial:<id>:steps" in result.stdout

    journal = optuna_storage(redis_url)
    trials = optuna.load_study(study_name="t", storage=journal).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    db = open_database(redis_url)
    for t in trials:
        assert [p.epoch for p in db.epoch_curve(trial_id_of(t))] == [1, 2]
        assert db.step_curve(trial_id_of(t))
    db.close()

    exported = cli(
        "export", "--study", "t", "--out", "t.csv", "--storage", redis_url, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == 6 and all(row["lr_curve"] for row in rows)
    status = cli("status", "--study", "t", "--storage", redis_url, cwd=tmp_path)
    assert status.returncode == 0 and "finished 6 of 6 trials" in status.stdout

    app = optuna_dashboard.wsgi(journal)
    studies = wsgi_get(app, "/api/studies")
    assert [s["study_name"] for s in studies["study_summaries"]] == ["t"]
    detail = wsgi_get(app, f"/api/studies/{studies['study_summaries'][0]['study_id']}")
    assert len(detail["trials"]) == 6


# --- how trials train and end --------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_step_curves_are_stored_thinned_to_at_most_500_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = parse_config(
        load_yaml(
            config(
                tmp_path,
                budget={"trials": 1, "epochs": 3},
                objective_args={"hidden": 8},
                space={**BASE_SPACE, "batch_size": 8},
            )
        )
    )
    db = Database(url)
    launch(db, cfg)
    db.close()
    assert work(url, tmp_path / "artifacts") == 0
    (t,) = trials(url)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        steps = conn.execute(
            sqlalchemy.text(
                "SELECT step, lr, train_loss, grad_norm FROM sweeps_curve_steps "
                "WHERE trial_id = :t ORDER BY step"
            ),
            {"t": trial_id_of(t)},
        ).all()
        epochs = conn.execute(
            sqlalchemy.text(
                "SELECT epoch, value FROM sweeps_curve_epochs WHERE trial_id = :t ORDER BY epoch"
            ),
            {"t": trial_id_of(t)},
        ).all()
    engine.dispose()
    # 1437 examples / 8 per batch = 180 steps per epoch, 540 in all: thinned to <= 500 by
    # keeping every second one.
    assert [s.step for s in steps] == list(range(0, 540, 2))
    assert all(s.lr > 0 and s.grad_norm > 0 for s in steps)
    assert [(e.epoch, e.value) for e in epochs] == sorted(t.intermediate_values.items())


@pytest.mark.e2e
def test_same_seed_and_params_give_the_same_curve(tmp_path: Path, cli: InProcess) -> None:
    """Two studies of one config, each trained by its own `sweeps worker` process."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    for study in ("a", "b"):
        cfg = config(
            tmp_path,
            study=study,
            budget={"trials": 1, "epochs": 2},
            objective_args={"hidden": 8},
            space=BASE_SPACE,
        )
        assert cli("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    for study in ("a", "b"):
        worker = sweeps("worker", "--study", study, "--storage", url, cwd=tmp_path)
        assert worker.returncode == 0, worker.stderr
    a, b = trials(url, "a")[0], trials(url, "b")[0]
    assert a.intermediate_values == b.intermediate_values
    assert len(a.intermediate_values) == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_diverging_trials_are_pruned_with_the_reason_and_the_sweep_goes_on(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(
        tmp_path,
        budget={"trials": 3, "epochs": 2},
        objective_args={"hidden": 8},
        space={**BASE_SPACE, "lr": 1.0e3, "weight_decay": 1.0},
    )
    db = Database(url)
    launch(db, parse_config(load_yaml(cfg)))
    db.close()
    assert work(url, tmp_path / "artifacts") == 0
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


@pytest.mark.e2e
@POSTGRESQL_ONLY
def test_failing_trials_are_retried_and_do_not_count(tmp_path: Path, storage_url: str) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    cfg = config(
        tmp_path,
        objective="flaky:objective",
        objective_args={"hidden": 8},
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


@pytest.mark.e2e
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


# --- the commands around a study ------------------------------------------------------------


@pytest.mark.e2e
def test_worker_runs_a_launched_study_from_its_name_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(tmp_path, budget={"trials": 3, "epochs": 2}, objective_args={"hidden": 8})
    assert sweeps("launch", str(cfg), "--storage", url, cwd=tmp_path).returncode == 0
    cfg.unlink()  # the worker needs only the study name and the storage
    enqueue = sweeps(
        "enqueue",
        "--study",
        "t",
        "--params",
        '{"schedule": "step", "lr": 0.123}',
        "--storage",
        url,
        cwd=tmp_path,
    )
    assert enqueue.returncode == 0, enqueue.stderr
    worker = sweeps("worker", "--study", "t", "--storage", url, cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    done = trials(url)
    assert len(done) == 3
    assert done[0].params["schedule"] == "step" and done[0].params["lr"] == 0.123

    status = sweeps("status", "--study", "t", "--format", "json", "--storage", url, cwd=tmp_path)
    summary = json.loads(status.stdout)
    assert summary["finished"] == 3 and summary["budget"] == 3
    assert summary["best"]["value"] == max(t.value for t in done if t.value is not None)
    assert {f["family"] for f in summary["families"]} == {"constant", "cosine", "step"}

    out = tmp_path / "trials.csv"
    export = sweeps("export", "--study", "t", "--out", str(out), "--storage", url, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    rows = list(csv.DictReader(out.open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert rows[0]["param:schedule"] == "step" and float(rows[0]["param:lr"]) == 0.123
    assert len(rows[0]["val_curve"].split()) == 2


BAD_PARAMS = [
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
]


def launched(tmp_path: Path, cli: InProcess) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("launch", str(config(tmp_path)), "--storage", url, cwd=tmp_path).returncode == 0
    return url


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_enqueue_refuses_bad_params(
    tmp_path: Path, cli: InProcess, params: str, message: str
) -> None:
    url = launched(tmp_path, cli)
    result = cli("enqueue", "--study", "t", "--params", params, "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert not [t for t in trials(url) if t.state == TrialState.WAITING]


@pytest.mark.e2e
def test_sweeps_enqueue_refuses_bad_params_with_exit_2(tmp_path: Path, cli: InProcess) -> None:
    url = launched(tmp_path, cli)
    params, message = BAD_PARAMS[1]
    result = sweeps("enqueue", "--study", "t", "--params", params, "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert not [t for t in trials(url) if t.state == TrialState.WAITING]


READING_COMMANDS = [
    ["status", "--study", "t"],
    ["worker", "--study", "t"],
    ["enqueue", "--study", "t", "--params", "{}"],
]


def assert_no_database_made(result: Any, missing: Path) -> None:
    assert result.returncode == 2
    assert (
        result.stderr == f"error: --storage: no database at {missing}; create one with "
        "'sweeps launch'\n"
    )
    assert not missing.exists()


@pytest.mark.parametrize("command", READING_COMMANDS, ids=lambda c: c[0])
def test_commands_that_read_a_study_never_create_a_database(
    tmp_path: Path, cli: InProcess, command: list[str]
) -> None:
    missing = tmp_path / "missing.db"
    result = cli(*command, "--storage", f"sqlite:///{missing}", cwd=tmp_path)
    assert_no_database_made(result, missing)


@pytest.mark.e2e
def test_sweeps_worker_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = sweeps(*READING_COMMANDS[1], "--storage", f"sqlite:///{missing}", cwd=tmp_path)
    assert_no_database_made(result, missing)


def sweeps_optuna_cli(*args: str, cwd: Path) -> str:
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


@pytest.mark.e2e
def test_racing_workers_never_overshoot_the_budget(tmp_path: Path, storage_url: str) -> None:
    """Four workers on trials that take milliseconds: the budget is the contested resource."""
    (tmp_path / "quick.py").write_text(QUICK)
    cfg = config(tmp_path, objective="quick:objective", budget={"trials": 30, "epochs": 1})
    assert sweeps("launch", str(cfg), "--storage", storage_url, cwd=tmp_path).returncode == 0
    cmd = [sys.executable, "-m", "sweeps", "worker", "--study", "t", "--storage", storage_url]
    workers = [
        subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    assert states(storage_url) == {"COMPLETE": 30}


@pytest.mark.e2e
def test_passwords_never_appear_in_any_output(
    tmp_path: Path, postgres: Any, cli: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """In the programs' output (a worker's log, a server's, a driver's connection error
    among them); what only the commands print is checked in this process."""
    url = postgres.create_database("masking").replace("postgres@", "postgres:s3cr3t@")
    cfg = config(tmp_path, budget={"trials": 1, "epochs": 1}, objective_args={"hidden": 8})
    secret = tmp_path / "storage-url"
    secret.write_text(url + "\n")  # as a mounted Kubernetes Secret: a file, maybe a newline
    outputs = [
        sweeps("run", str(cfg), "--storage", url, cwd=tmp_path),
        sweeps(
            "status",
            "--study",
            "t",
            "--storage",
            url.replace(str(postgres.port), "1"),
            cwd=tmp_path,
        ),  # unreachable
        sweeps("status", "--study", "t", "--storage-file", str(secret), cwd=tmp_path),
        sweeps(
            "report", "--study", "t", "--out", "rep", "--storage-file", str(secret), cwd=tmp_path
        ),
    ]
    dashboard, _ = start_dashboard(tmp_path, url)
    assert dashboard.stdout is not None
    # It listens, then says where: stopped only once it has said so.
    said = dashboard.stdout.readline()
    dashboard.terminate()
    out, err = dashboard.communicate(timeout=30)
    outputs.append(subprocess.CompletedProcess([], 0, said + out, err))
    assert [r.returncode for r in outputs] == [0, 1, 0, 0, 0]
    printed = [
        cli("launch", str(cfg), "--storage", url, cwd=tmp_path),  # exists: an error
        cli("status", "--study", "t", "--storage", url, cwd=tmp_path),
        cli("status", "--study", "t", "--format", "json", "--storage", url, cwd=tmp_path),
        cli("status", "--study", "nope", "--storage", url, cwd=tmp_path),
        cli("status", "--study", "t", cwd=tmp_path, env={"SWEEPS_STORAGE": url}),
    ]
    assert [r.returncode for r in printed] == [2, 0, 0, 2, 0]
    for result in [*outputs, *printed]:
        assert "s3cr3t" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    assert "s3cr3t" not in caplog.text
    assert "postgres:***@" in outputs[2].stdout and "postgres:***@" in printed[1].stdout
    assert "optuna-dashboard for postgresql+psycopg://postgres:***@" in outputs[4].stdout
    assert "s3cr3t" not in (tmp_path / "rep" / "report.html").read_text()
    logs = list((tmp_path / "sweeps-artifacts").rglob("*.log"))
    assert logs and all("s3cr3t" not in log.read_text() for log in logs)


# --- stacks ------------------------------------------------------------------------------------


@pytest.mark.e2e
@POSTGRESQL_ONLY
def test_stacked_workers_finish_exactly_the_budget(tmp_path: Path, storage_url: str) -> None:
    cfg = config(
        tmp_path,
        budget={"trials": 12, "epochs": 3},
        objective_args={"hidden": 8},
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


@pytest.mark.usefixtures("one_torch_thread")
def test_a_stacked_worker_refills_the_slots_that_ended_trials_free(
    tmp_path: Path, storage_url: str
) -> None:
    """One worker, ``--stack 4``: never more than 4 trials in training, and a trial that ends
    (pruned, say) makes room for a new one while its stack mates still train. Observed at
    the worker's pool itself, in order, without a clock."""
    cfg = config(
        tmp_path,
        budget={"trials": 16, "epochs": 4},
        objective_args={"hidden": 8},
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


UNSTACKABLE = """
def objective(run):
    run.report(run.params["lr"], 1)
    return run.params["lr"]
"""


@pytest.mark.usefixtures("one_torch_thread")
def test_a_user_objective_is_not_stacked_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `sweeps worker --stack 8` prints (`test_cli_messages` runs the program)."""
    (tmp_path / "e2e_unstackable.py").write_text(UNSTACKABLE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = config(
        tmp_path, objective="e2e_unstackable:objective", budget={"trials": 3, "epochs": 1}
    )
    db = Database(url)
    launch(db, parse_config(load_yaml(cfg)))
    lines: list[str] = []
    worker = Worker(db, "t", artifacts=tmp_path / "artifacts", stack=8, log=lines.append)
    assert worker.run() == 0
    db.close()
    assert any("objective e2e_unstackable:objective cannot be stacked" in line for line in lines)
    assert worker.stack == 1
    assert states(url) == {"COMPLETE": 3}
