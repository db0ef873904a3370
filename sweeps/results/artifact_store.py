"""The artifact store every worker and the dashboard share: trial curves as files.

Kept apart from `dashboard` so the commands that only check or open a store (`sweeps run`
before its workers start) do not import optuna-dashboard.
"""

from __future__ import annotations

import os
from pathlib import Path

from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore, GCSArtifactStore

ARTIFACTS_DIR = "dashboard"  # under the artifacts root, unless an object store is named
STORE_ENV = "SWEEPS_ARTIFACT_STORE"
ArtifactStore = FileSystemArtifactStore | Boto3ArtifactStore | GCSArtifactStore


class StoreError(ValueError):
    """An artifact store URL that names no store we can open."""


def artifact_store(root: Path, url: str | None = None) -> ArtifactStore:
    """The store every worker and the dashboard share: ``url`` (``--artifact-store``, else
    ``$SWEEPS_ARTIFACT_STORE``) naming an object store Optuna supports, ``s3://BUCKET``
    (boto3; credentials and endpoint from its usual environment) or ``gs://BUCKET``
    (google-cloud-storage); else a directory under ``root``.

    Raises:
        StoreError: a URL of another kind, or its client library is not installed.
    """
    url = url or os.environ.get(STORE_ENV)
    if not url:
        path = root / ARTIFACTS_DIR
        path.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(path))
    scheme, bucket = object_store(url)
    try:
        store = Boto3ArtifactStore if scheme == "s3" else GCSArtifactStore
        return store(bucket)
    except ImportError as e:
        package = "boto3" if scheme == "s3" else "google-cloud-storage"
        raise StoreError(f"{scheme}:// needs {package} (pip install {package}): {e}") from None


def object_store(url: str) -> tuple[str, str]:
    """(scheme, bucket) of ``s3://BUCKET`` or ``gs://BUCKET``; `StoreError` otherwise."""
    scheme, _, bucket = url.partition("://")
    bucket = bucket.rstrip("/")
    if scheme not in ("s3", "gs") or not bucket or "/" in bucket:
        raise StoreError(f"must be s3://BUCKET or gs://BUCKET, got {url!r}")
    return scheme, bucket


def store_location(root: Path, url: str | None = None) -> str:
    """The object store URL given, else ``$SWEEPS_ARTIFACT_STORE``, else the directory."""
    return url or os.environ.get(STORE_ENV) or str(root / ARTIFACTS_DIR)
