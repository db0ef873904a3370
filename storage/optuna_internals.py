"""Every use of Optuna's private API, in one place.

Optuna has no public call for what the exact budget needs: a trial created, failed or re-queued
in the same transaction as lr-sweeps' own budget row (`storage.trial_slots`), a stack's
reports written in one commit (`Database.add_reports`), a study's storage and ids, the Redis
journal's client and keys, and the servicer behind Optuna's gRPC storage proxy. Each private
name lr-sweeps relies on is reached through this module and nowhere else (a test checks the
code for others), so that an Optuna release that changes one fails `check` with a message
naming it, rather than quietly miscounting a budget. ``pyproject.toml`` allows only the
Optuna versions this was tested with (`SUPPORTED`).

One dependency is on data, not names: `storage.redis_journal` appends journal entries itself
(fenced by the study's lock) in the key layout Optuna's Redis backend reads
(``PREFIX:log_number``, ``PREFIX:log:N``). `check` cannot see that layout without a Redis
server; ``test_redis_journal.py`` checks it, plain Optuna reading a study lr-sweeps wrote.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

SUPPORTED = ">=5.0,<5.2"  # as in pyproject.toml


class OptunaInternalsChanged(RuntimeError):
    """An Optuna internal lr-sweeps relies on is missing or behaves differently."""


def _changed(what: str, error: BaseException | str) -> OptunaInternalsChanged:
    return OptunaInternalsChanged(
        f"optuna {optuna.__version__}: {what} changed ({error}); lr-sweeps is tested with "
        f"optuna{SUPPORTED}: install a version in that range"
    )


try:
    from optuna.storages import _CachedStorage  # the cache `optuna.Study` puts before an RDB
    from optuna.storages._rdb import models  # Optuna's tables: trials change state with ours
except ImportError as e:  # pragma: no cover - only with an Optuna outside SUPPORTED
    raise _changed("a private module", e) from e

if TYPE_CHECKING:
    import grpc
    import redis
    from optuna.storages.journal import JournalRedisBackend
    from sqlalchemy.orm import Session

__all__ = ["models"]


# Ids and storages of studies and trials ---------------------------------------------------


def trial_id_of(trial: FrozenTrial | optuna.Trial) -> int:
    """A trial's id in its storage (Optuna's `number` counts within the study)."""
    return int(trial._trial_id)


def study_id_of(study: optuna.Study) -> int:
    return int(study._study_id)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (its public API re-reads the trials per call)."""
    return study._storage


# RDBStorage writes inside our own transaction ---------------------------------------------


def add_trial(
    rdb: optuna.storages.RDBStorage, s: Session, study_id: int, template: FrozenTrial | None
) -> models.TrialModel:
    """A new trial of the study in session ``s``, as ``create_new_trial`` makes it (numbered,
    RUNNING, or a copy of ``template``), without committing."""
    return rdb._get_prepared_new_trial(study_id, template, s)


def set_user_attr(
    rdb: optuna.storages.RDBStorage, s: Session, trial_id: int, key: str, value: Any
) -> None:
    """``set_trial_user_attr`` in session ``s``, without committing (the trial must be
    unfinished)."""
    rdb._set_trial_attr_without_commit(s, models.TrialUserAttributeModel, trial_id, key, value)


def set_intermediate_value(
    rdb: optuna.storages.RDBStorage, s: Session, trial_id: int, step: int, value: float
) -> None:
    """The write of ``trial.report`` in session ``s``, without committing. Raises Optuna's
    ``UpdateFinishedTrialError`` for a finished trial."""
    rdb._set_trial_intermediate_value_without_commit(s, trial_id, step, value)


def frozen_trial(rdb: optuna.storages.RDBStorage, row: models.TrialModel) -> FrozenTrial:
    """A trial row as Optuna's `FrozenTrial`."""
    return rdb._build_frozen_trial_from_trial_model(row)


class ClaimAwareCache(_CachedStorage):
    """Optuna's cache in front of an `RDBStorage`, which also learns of a trial created
    outside Optuna's calls (a claim, `storage.trial_slots`) when a parameter is first
    written to it: Optuna's cache writes a parameter only to a trial it has read (a storage
    proxy restarted between a claim and the sampling has read none)."""

    _backend: optuna.storages.RDBStorage

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        if trial_id not in self._trial_id_to_study_id_and_number:
            with self._backend.engine.connect() as conn:
                study_id = conn.scalar(
                    select(models.TrialModel.study_id).where(
                        models.TrialModel.trial_id == trial_id
                    )
                )
            if study_id is None:
                raise KeyError(f"no trial with id {trial_id}")
            self.get_all_trials(study_id, deepcopy=False)
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)


# The Redis journal's client and keys ------------------------------------------------------


def redis_client(backend: JournalRedisBackend) -> redis.Redis:
    return backend._redis


def journal_prefix(backend: JournalRedisBackend) -> str:
    """The prefix of the backend's keys: ``PREFIX:log_number`` and ``PREFIX:log:N``."""
    return str(backend._prefix)


# Optuna's gRPC storage proxy -----------------------------------------------------------


def add_optuna_proxy(server: grpc.Server, storage: optuna.storages.BaseStorage) -> None:
    """Serve Optuna's storage proxy for ``storage`` on ``server`` (what Optuna's public
    ``run_grpc_proxy_server`` does, on a server that also serves our own calls)."""
    from optuna.storages._grpc.auto_generated.api_pb2_grpc import (
        add_StorageServiceServicer_to_server,
    )
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)  # type: ignore[no-untyped-call]


def optuna_proxy_client(
    host: str, port: int, interceptors: Sequence[grpc.UnaryUnaryClientInterceptor]
) -> optuna.storages.GrpcStorageProxy:
    """Optuna's ``GrpcStorageProxy`` for ``host:port``, its calls made through
    ``interceptors`` (which add the proxy's token): it takes no channel of ours, so this
    replaces the one its ``_setup`` opens."""
    return _InterceptedProxy(host=host, port=port, interceptors=interceptors)


class _InterceptedProxy(optuna.storages.GrpcStorageProxy):
    def __init__(
        self, *, host: str, port: int, interceptors: Sequence[grpc.UnaryUnaryClientInterceptor]
    ) -> None:
        self._interceptors = list(interceptors)
        super().__init__(host=host, port=port)

    def _setup(self) -> None:  # also run when unpickled
        import grpc
        from optuna.storages._grpc.auto_generated.api_pb2_grpc import StorageServiceStub
        from optuna.storages._grpc.client import GrpcClientCache

        super()._setup()
        if self._interceptors:
            self._channel = grpc.intercept_channel(self._channel, *self._interceptors)
            self._stub = StorageServiceStub(self._channel)  # type: ignore[no-untyped-call]
            self._cache = GrpcClientCache(self._stub)


# The check --------------------------------------------------------------------------------


def check() -> None:
    """Use every internal above once, on a throwaway SQLite study and an unconnected Redis
    backend. Raises `OptunaInternalsChanged` naming the one that is missing or different."""
    with tempfile.TemporaryDirectory() as folder:
        rdb = optuna.storages.RDBStorage(f"sqlite:///{Path(folder) / 'check.db'}")
        try:
            _check_rdb(rdb)
        finally:
            rdb.engine.dispose()
    _check_redis()
    _check_grpc()


def _step(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:
        raise _changed(what, f"{type(e).__name__}: {e}") from e


def _check_rdb(rdb: optuna.storages.RDBStorage) -> None:
    from sqlalchemy.orm import Session

    cache = ClaimAwareCache(rdb)
    study = optuna.create_study(storage=cache, study_name="check")
    if _step("Study._storage", storage_of, study) is not cache:
        raise _changed("Study._storage", "it is not the storage the study was created with")
    sid = _step("Study._study_id", study_id_of, study)
    with Session(rdb.engine) as s:
        row = _step("RDBStorage._get_prepared_new_trial", add_trial, rdb, s, sid, None)
        s.flush()
        tid = int(row.trial_id)
        _step("RDBStorage._set_trial_attr_without_commit", set_user_attr, rdb, s, tid, "k", 1)
        _step(
            "RDBStorage._set_trial_intermediate_value_without_commit",
            set_intermediate_value,
            rdb,
            s,
            tid,
            3,
            0.5,
        )
        s.flush()
        s.refresh(row)
        trial = _step("RDBStorage._build_frozen_trial_from_trial_model", frozen_trial, rdb, row)
        s.commit()
    expected = (TrialState.RUNNING, {"k": 1}, {3: 0.5})
    if (trial.state, trial.user_attrs, trial.intermediate_values) != expected:
        raise _changed("RDBStorage's session writes", f"read back {trial}")
    if _step("FrozenTrial._trial_id", trial_id_of, trial) != tid:
        raise _changed("FrozenTrial._trial_id", "it is not the trial's id")
    # The cache learns of the trial created behind its back when a parameter is written.
    distribution = optuna.distributions.FloatDistribution(0.0, 1.0)
    _step("_CachedStorage", cache.set_trial_param, tid, "x", 0.25, distribution)
    if rdb.get_trial(tid).params != {"x": 0.25}:
        raise _changed("_CachedStorage.set_trial_param", "the parameter was not stored")
    live = optuna.Trial(study, tid)
    if _step("Trial._trial_id", trial_id_of, live) != tid:
        raise _changed("Trial._trial_id", "it is not the trial's id")


def _check_redis() -> None:
    import redis
    from optuna.storages.journal import JournalRedisBackend

    with warnings.catch_warnings():  # experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = JournalRedisBackend("redis://127.0.0.1:1", prefix="p")  # connects on use
    if not isinstance(_step("JournalRedisBackend._redis", redis_client, backend), redis.Redis):
        raise _changed("JournalRedisBackend._redis", "it is not a redis.Redis client")
    if _step("JournalRedisBackend._prefix", journal_prefix, backend) != "p":
        raise _changed("JournalRedisBackend._prefix", "it is not the backend's key prefix")


def _check_grpc() -> None:
    import grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    try:
        _step("optuna.storages._grpc", add_optuna_proxy, server, optuna.storages.InMemoryStorage())
    finally:
        server.stop(grace=None)

    class PassThrough(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(details, request)

    with warnings.catch_warnings():  # experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        client = _step(  # connects on use
            "GrpcStorageProxy._setup", optuna_proxy_client, "127.0.0.1", 1, [PassThrough()]
        )
    client.close()
