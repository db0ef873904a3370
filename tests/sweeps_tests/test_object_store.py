"""Dashboard artifacts in an object store (`--artifact-store s3://BUCKET`), against moto's S3
server: the one S3 endpoint that runs here without a cloud account."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from test_results import start_dashboard, svg_polylines

from storage.optuna_internals import storage_of, study_id_of, trial_id_of
from sweeps.cli import main
from sweeps_helpers import config, free_port


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 endpoint with an empty bucket; boto3 finds it through the usual environment."""
    server = shutil.which("moto_server")
    assert server, "moto_server is installed with the test dependencies"
    port = free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    boto3.client("s3").create_bucket(Bucket="curves")
    try:
        yield "curves"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.e2e
def test_workers_and_dashboard_share_an_s3_artifact_store(
    tmp_path: Path, s3: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker process writes a trial's files to the bucket; the dashboard's process
    serves them from there (`sweeps run` itself runs here)."""
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    cfg = config(tmp_path, budget={"trials": 2, "epochs": 1})
    store = f"s3://{s3}"
    code = main(["run", str(cfg), "--storage", url, "--artifact-store", store])
    assert code == 0, capsys.readouterr()
    objects = boto3.client("s3").list_objects_v2(Bucket=s3)["Contents"]
    assert len(objects) == 2 * 3  # an image and two CSVs per trial
    assert not (tmp_path / "sweeps.db.artifacts" / "dashboard").exists()

    study = optuna.load_study(study_name="t", storage=url)
    trial = study.trials[0]
    image = next(
        m
        for m in get_all_artifact_meta(trial, storage=storage_of(study))
        if m.filename.endswith(".svg")
    )
    os.environ["SWEEPS_ARTIFACT_STORE"] = f"s3://{s3}"  # the dashboard takes it from the env
    try:
        proc, port = start_dashboard(tmp_path, url)
    finally:
        del os.environ["SWEEPS_ARTIFACT_STORE"]
    try:
        address = (
            f"http://127.0.0.1:{port}/artifacts/{study_id_of(study)}/{trial_id_of(trial)}/"
            f"{image.artifact_id}"
        )
        with urllib.request.urlopen(address, timeout=30) as response:
            assert svg_polylines(response.read().decode())[0] == ("720", "448")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize("store", ["ftp://bucket", "s3://", "s3://bucket/prefix", "/some/dir"])
def test_other_store_urls_are_refused_before_anything_runs(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    assert main(["run", str(cfg), "--storage", url, "--artifact-store", store]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: --artifact-store: must be s3://BUCKET or gs://BUCKET, got {store!r}"
    ), err
    assert not (tmp_path / "sweeps.db").exists()
