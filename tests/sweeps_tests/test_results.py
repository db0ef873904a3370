"""Results a person sees: each trial's curve artifacts, the study's note and graphs in
optuna-dashboard, `sweeps report`, `sweeps dashboard`'s arguments; through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import math
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import optuna
import pytest
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna_dashboard import get_note
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from storage import Database
from storage.optuna_internals import storage_of, study_id_of, trial_id_of
from sweeps.results.trial_svg import ticks
from sweeps_helpers import config, free_port, sweeps

pytestmark = pytest.mark.slow

GRAPHS = {"sweeps-lr-schedules", "sweeps-best-by-family", "sweeps-value-vs-params"}


def svg_polylines(text: str) -> tuple[tuple[str, str], list[int]]:
    """(width, height) of an SVG image and the number of points of each of its polylines."""
    root = ElementTree.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    lines = root.iter("{http://www.w3.org/2000/svg}polyline")
    return (root.get("width"), root.get("height")), [
        len(line.get("points", "").split()) for line in lines
    ]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def run_study(tmp_path: Path, url: str, workers: int = 2) -> None:
    cfg = config(
        tmp_path,
        budget={"trials": 8, "epochs": 3},
        pruner={"name": "median", "n_startup_trials": 2},
    )
    result = sweeps("run", str(cfg), "--workers", str(workers), "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout


def test_every_finished_trial_carries_its_curves_and_the_study_its_pages(
    tmp_path: Path, storage_url: str
) -> None:
    run_study(tmp_path, storage_url)
    study = optuna.load_study(study_name="t", storage=storage_url)
    store = FileSystemArtifactStore(str(tmp_path / "sweeps-artifacts" / "dashboard"))
    if storage_url.startswith("sqlite"):
        store = FileSystemArtifactStore(str(tmp_path / "sweeps.db.artifacts" / "dashboard"))
    engine = sqlalchemy.create_engine(storage_url)
    for trial in study.trials:
        metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=storage_of(study))}
        n = trial.number
        assert set(metas) == {
            f"trial-{n}-curves.svg",
            f"trial-{n}-steps.csv",
            f"trial-{n}-epochs.csv",
        }
        got = tmp_path / f"trial-{n}"
        got.mkdir()
        image = got / "curves.svg"
        download_artifact(
            artifact_store=store,
            file_path=str(image),
            artifact_id=metas[f"trial-{n}-curves.svg"].artifact_id,
        )
        # The CSVs hold exactly the curves stored in the database.
        for table, name, key in (
            ("steps", "sweeps_curve_steps", "step"),
            ("epochs", "sweeps_curve_epochs", "epoch"),
        ):
            path = got / f"{table}.csv"
            download_artifact(
                artifact_store=store,
                file_path=str(path),
                artifact_id=metas[f"trial-{n}-{table}.csv"].artifact_id,
            )
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
            with engine.connect() as conn:
                stored = (
                    conn.execute(
                        sqlalchemy.text(
                            f"SELECT {key} FROM {name} WHERE trial_id = :t ORDER BY {key}"
                        ),
                        {"t": trial_id_of(trial)},
                    )
                    .scalars()
                    .all()
                )
            assert [int(r[key]) for r in rows] == list(stored)
            assert rows
        steps, epochs = (
            list(csv.DictReader(io.StringIO((got / f"{t}.csv").read_text())))
            for t in ("steps", "epochs")
        )
        assert len(epochs) == len(trial.intermediate_values)
        # The image draws every point: lr and train loss per step, val loss and value per epoch.
        size, points = svg_polylines(image.read_text())
        assert size == ("720", "448")
        assert points == [len(steps), len(steps), len(epochs), len(epochs)]

    # The study's note and graphs reflect the finished study (the last worker refreshed them).
    note = get_note(study)
    assert "Finished **8 of 8**" in note
    assert "## Leaderboard by schedule family" in note
    assert f"{study.best_value:.4f}" in note
    assert "## Config" in note and "objective: digits_mlp" in note
    graphs = get_plotly_graph_objects(storage_of(study).get_study_system_attrs(study_id_of(study)))
    assert set(graphs) == GRAPHS
    for graph_id, text in graphs.items():
        assert json.loads(text)["data"], graph_id  # whole JSON: no interleaved chunks


def test_publication_is_leased_to_one_process_and_throttled(storage_url: str) -> None:
    db = Database(storage_url)
    study = optuna.create_study(storage=db.optuna, study_name="p")
    sid = study_id_of(study)
    assert db.claim_publication(sid, now=100.0, every=10, lease=60)
    assert not db.claim_publication(sid, now=101.0, every=0, lease=60)  # held
    assert db.claim_publication(sid, now=161.0, every=0, lease=60)  # lease ran out
    db.end_publication(sid, now=162.0)
    assert not db.claim_publication(sid, now=165.0, every=10, lease=60)  # refreshed lately
    assert db.claim_publication(sid, now=165.0, every=0, lease=60)  # a final refresh may
    db.end_publication(sid, now=166.0)
    assert db.claim_publication(sid, now=176.0, every=10, lease=60)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One finished study on SQLite for the tests that only read it."""
    tmp = tmp_path_factory.mktemp("finished")
    url = f"sqlite:///{tmp / 'sweeps.db'}"
    run_study(tmp, url)
    return tmp, url


def test_report_writes_html_and_pngs_with_the_studys_numbers(
    finished: tuple[Path, str],
) -> None:
    tmp, url = finished
    out = tmp / "report"
    result = sweeps("report", "--study", "t", "--out", str(out), "--storage", url, cwd=tmp)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="t", storage=url)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("Plotly.newPlot") >= 6
    assert "<script src=" not in page  # self-contained: plotly.js is inline
    assert f"{study.best_value:.4f}" in page and f"trial <b>{study.best_trial.number}</b>" in page
    for family in ("constant", "cosine", "step"):
        assert f"<td>{family}</td>" in page
    pngs = {p.name for p in out.glob("*.png")}
    assert {
        "history.png",
        "leaderboard.png",
        "lr_curves.png",
        "validation_curves.png",
        "pruning.png",
    } <= pngs
    for name in pngs:
        assert png_size((out / name).read_bytes()) == (1000, 560), name
    listed = result.stdout.split()
    assert listed[0] == str(out / "report.html")
    assert {Path(p).name for p in listed[1:]} == pngs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "error: --port: must be an integer in [1, 65535], got 0"),
        (["--storage", "sqlite:///missing.db"], "error: --storage: no database at missing.db"),
        (["--artifacts", "sweeps.db"], "error: --artifacts: sweeps.db is not a directory"),
    ],
)
def test_dashboard_refuses_bad_arguments(
    finished: tuple[Path, str], args: list[str], message: str
) -> None:
    tmp, url = finished
    result = sweeps("dashboard", "--storage", url, *args, cwd=tmp, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_report_refuses_an_unwritable_out(finished: tuple[Path, str]) -> None:
    tmp, url = finished
    (tmp / "a-file").write_text("")
    result = sweeps("report", "--study", "t", "--out", "a-file/r", "--storage", url, cwd=tmp)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --out: cannot write a-file/r"), result.stderr
    assert "Traceback" not in result.stderr


def test_report_refuses_an_unknown_study(finished: tuple[Path, str]) -> None:
    tmp, url = finished
    result = sweeps("report", "--study", "nope", "--out", "r", "--storage", url, cwd=tmp)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --study: no study named 'nope'")
    assert not (tmp / "r").exists()


def start_dashboard(tmp: Path, url: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweeps",
            "dashboard",
            "--storage",
            url,
            "--port",
            str(port),
            *extra,
        ],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the dashboard did not start listening")


def test_dashboard_on_another_host_warns_that_it_has_no_authentication(
    finished: tuple[Path, str],
) -> None:
    tmp, url = finished
    proc, _ = start_dashboard(tmp, url, "--host", "0.0.0.0")
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert "warning: optuna-dashboard has no authentication" in err
    assert "reverse proxy that authenticates" in err

    proc, _ = start_dashboard(tmp, url)  # loopback: no warning
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert "warning" not in err


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.0, 674.0), (0.9, 0.986), (1e-6, 0.043), (-3.0, 2.5), (0.05, 0.05)]
)
def test_svg_ticks_are_round_and_cover_the_data(lo: float, hi: float) -> None:
    marks = ticks(lo, hi)
    assert marks[0] <= lo and marks[-1] >= hi and 2 <= len(marks) <= 12
    step = marks[1] - marks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5, 10))
