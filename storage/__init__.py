"""Where studies live: storage URLs, engines, Optuna's storage plus our own tables
(budget, curves), and trial checkpoints.

    url = storage.resolve_url(args.storage)     # --storage, else $SWEEPS_STORAGE, else SQLite
    print(storage.mask_url(url))                # passwords never reach any output
    db = storage.Database(url)                  # Optuna's RDBStorage + lr-sweeps' tables
    db = storage.open_database(url)             # the same on Redis (storage.redis_journal)
    # workers may instead reach a `sweeps storage-proxy` at grpc://HOST:PORT (storage.remote)
"""

from storage._engine import create_engine
from storage._url import (
    DEFAULT_URL,
    ENV_VAR,
    PROXY_SCHEME,
    StorageURLError,
    is_redis,
    mask_url,
    resolve_url,
)
from storage.checkpoints import CheckpointStore
from storage.database import Database, StorageError, TrialReport, first_line, one_line


def open_database(url: str) -> Database:
    """The `Database` for ``url``: on Redis for ``redis://``, else on SQL."""
    if is_redis(url):
        from storage.redis_journal import RedisDatabase  # redis is imported only for Redis

        return RedisDatabase(url)
    return Database(url)


__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "PROXY_SCHEME",
    "CheckpointStore",
    "Database",
    "StorageError",
    "StorageURLError",
    "TrialReport",
    "create_engine",
    "first_line",
    "is_redis",
    "mask_url",
    "one_line",
    "open_database",
    "resolve_url",
]
