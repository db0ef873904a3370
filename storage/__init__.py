"""Where studies live: storage URLs, the backends that hold a study (`storage.base` is their
contract), and trial checkpoints.

    url = storage.resolve_url(args.storage)     # --storage, else $SWEEPS_STORAGE, else SQLite
    print(storage.mask_url(url))                # passwords never reach any output
    db = storage.open_database(url)             # the backend for the URL's scheme:
    # SQL (storage.database), redis:// (storage.redis_journal), grpc:// a storage proxy
    # (storage.remote, for workers)
"""

import functools
from collections.abc import Callable

from storage._engine import create_engine
from storage._url import (
    DEFAULT_URL,
    ENV_VAR,
    PROXY_SCHEME,
    PROXY_TOKEN_ENV,
    StorageURLError,
    is_redis,
    mask_url,
    resolve_url,
)
from storage.base import (
    BaseDatabase,
    CredentialsRefused,
    NoStudyDatabaseYet,
    StorageError,
    StorageRefused,
    TrialReport,
)
from storage.checkpoints import CheckpointStore
from storage.database import Database, first_line, one_line


def open_database(
    url: str, *, wait: bool = False, create: bool = True, token: str | None = None
) -> BaseDatabase:
    """The backend for ``url``: a storage proxy's client for ``grpc://`` (sending ``token``
    with every call), Redis for ``redis://``, else SQL (`Database`). With ``wait`` (a worker,
    which may start before its database or proxy), an unreachable one is waited for as every
    call is retried (`storage.resilience`), and a proxy that refuses the token raises
    `CredentialsRefused`; without it, an unreachable database or Redis raises `StorageError`
    at once (a proxy's client connects on its first call, which retries). Without
    ``create``, an SQL ``url`` must already be a study database: a server database without
    Optuna's tables (`NoStudyDatabaseYet`) is waited for, as the launcher that creates them
    may start after the workers, else refused. What no wait can fix (`StorageRefused`: not
    a study database, authentication refused, ...) is raised at once either way."""
    from storage.resilience import is_transient, retry_seconds, retrying

    if url.startswith(PROXY_SCHEME):
        from storage.remote import RemoteDatabase  # grpc is imported only for a proxy

        remote = RemoteDatabase(url, token=token)
        if wait:
            try:
                remote.wait_ready(retry_seconds())
            except StorageError:
                remote.close()
                raise
        return remote
    backend: Callable[[str], BaseDatabase] = functools.partial(Database, create=create)
    if is_redis(url):
        from storage.redis_journal import RedisDatabase  # redis is imported only for Redis

        backend = RedisDatabase
    if wait:
        return retrying(
            lambda: backend(url),
            what="open the database",
            retry_if=lambda e: is_transient(e) or isinstance(e, NoStudyDatabaseYet),
        )
    return backend(url)


__all__ = [
    "BaseDatabase",
    "DEFAULT_URL",
    "ENV_VAR",
    "PROXY_SCHEME",
    "PROXY_TOKEN_ENV",
    "CheckpointStore",
    "CredentialsRefused",
    "NoStudyDatabaseYet",
    "Database",
    "StorageError",
    "StorageRefused",
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
