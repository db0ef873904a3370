"""Workers behind one proxy: `sweeps storage-proxy` serves, on one port, Optuna's gRPC storage
proxy and the calls of lr-sweeps' own that a worker makes (claims, heartbeats, failures,
reports, curves, the dashboard lease). Those are multi-row transactions on our tables, which
Optuna's proxy has no call for; the proxy runs them on its real backend (SQL or Redis), with
its retries. Thousands of workers then hold no database connection, only a channel to the proxy.

A worker given ``grpc://HOST:PORT`` opens a `RemoteDatabase`: Optuna's `GrpcStorageProxy`
as its Optuna storage, and each `BaseDatabase`/`BaseTrialSlots` method as one call whose
arguments and result travel as JSON. A call that cannot reach the proxy is retried as
database calls are (`storage.resilience`); a retried claim carries the same token, so a lost
acknowledgement never takes two trials.

Whoever reaches the proxy may change any study, its objective included, and so choose the
code the workers run: a proxy given a token (``$SWEEPS_PROXY_TOKEN``) refuses every call
that does not carry it (``authorization: Bearer TOKEN`` in the call's metadata) with
UNAUTHENTICATED, which is never retried.
"""

from __future__ import annotations

import hmac
import json
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import optuna
from optuna.trial import TrialState

from storage._url import proxy_address
from storage.base import (
    BaseDatabase,
    BaseTrialSlots,
    CredentialsRefused,
    Failure,
    StorageError,
    TrialReport,
)
from storage.database import one_line
from storage.optuna_internals import add_optuna_proxy, optuna_proxy_client
from storage.resilience import RetryingStorage, is_transient, retrying
from storage.tables import EpochPoint, StepPoint

SERVICE = "lr_sweeps.Storage"
CALL = f"/{SERVICE}/Call"
_STEP_COLUMNS = ("step", "lr", "train_loss", "grad_norm")
_EPOCH_COLUMNS = ("epoch", "value", "val_loss")
_TOKEN_KEY = "authorization"  # gRPC metadata keys are lower case


# The proxy's side ------------------------------------------------------------------------

# Each call: how the proxy runs it on the database, and how its result travels.
_Handler = Callable[[BaseDatabase, dict[str, Any]], Any]


def _slots(db: BaseDatabase, args: dict[str, Any]) -> BaseTrialSlots:
    return db.trial_slots(
        args.pop("study_id"), retries=args.pop("retries"), worker=args.pop("worker")
    )


def _failure(failure: Failure | None) -> list[int | None] | None:
    return None if failure is None else [failure.number, failure.retry]


HANDLERS: dict[str, _Handler] = {
    "budget": lambda db, a: list(db.budget(**a)),
    "claim_publication": lambda db, a: db.claim_publication(**a),
    "end_publication": lambda db, a: db.end_publication(**a),
    "add_curves": lambda db, a: db.add_curves(**a),
    "add_reports": lambda db, a: sorted(db.add_reports([TrialReport(*r) for r in a["reports"]])),
    "step_curve": lambda db, a: [
        [getattr(p, c) for c in _STEP_COLUMNS] for p in db.step_curve(**a)
    ],
    "epoch_curve": lambda db, a: [
        [getattr(p, c) for c in _EPOCH_COLUMNS] for p in db.epoch_curve(**a)
    ],
    "claim": lambda db, a: _slots(db, a).claim(**a),
    "hand_back": lambda db, a: _slots(db, a).hand_back(**a),
    "fail": lambda db, a: _failure(_slots(db, a).fail(**a)),
    "beat": lambda db, a: _slots(db, a).beat(**a),
    "reap_stale": lambda db, a: [_failure(f) for f in _slots(db, a).reap_stale(**a)],
    "counts": lambda db, a: {state.name: n for state, n in _slots(db, a).counts().items()},
    "hello": lambda db, a: None,  # a worker's first call: its token is checked before it starts
}


class _TokenCheck(grpc.ServerInterceptor):
    """Refuses, before it runs, every call that does not carry the proxy's token."""

    def __init__(self, token: str) -> None:
        self._expected = _bearer(token).encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        given = dict(handler_call_details.invocation_metadata).get(_TOKEN_KEY)
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._expected):
            return continuation(handler_call_details)
        why = "no token given" if given is None else "wrong token"

        def refuse(request: bytes, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        return grpc.unary_unary_rpc_method_handler(refuse)  # every call served is unary


def _bearer(token: str) -> str:
    return f"Bearer {token}"


def serve(
    db: BaseDatabase, host: str, port: int, *, threads: int = 32, token: str | None = None
) -> grpc.Server:
    """A started server for ``db``: Optuna's storage proxy and our calls, on ``host:port``;
    with ``token``, only for calls that carry it."""

    def call(request: dict[str, Any], context: grpc.ServicerContext) -> Any:
        handler = HANDLERS.get(request.get("call", ""))
        if handler is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no call {request.get('call')!r}")
        try:
            return {"result": handler(db, dict(request["args"]))}  # a message, even for None
        except Exception as e:  # the database's own retries are spent: say why, in one line
            code = grpc.StatusCode.UNAVAILABLE if is_transient(e) else grpc.StatusCode.INTERNAL
            context.abort(code, one_line(e))

    # Optuna's `make_server`, but with the port ours alone: by default gRPC shares it, and a
    # second proxy started on the same port would silently take half the calls.
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads),
        interceptors=[_TokenCheck(token)] if token is not None else [],
        options=[("grpc.so_reuseport", 0)],
    )
    add_optuna_proxy(server, db.optuna)
    server.add_insecure_port(f"{host}:{port}")
    method = grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=json.loads, response_serializer=_dumps
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Call": method}),)
    )
    server.start()
    return server


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# The worker's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _TokenSender(grpc.UnaryUnaryClientInterceptor):
    """Adds the proxy's token to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._token = (_TOKEN_KEY, _bearer(token))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), self._token]
        return continuation(
            _CallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),
            request,
        )


class RemoteDatabase(BaseDatabase):
    """The backend (`storage.base`) whose calls the proxy at ``grpc://HOST:PORT`` runs on its
    database (for workers only: launching a study, migrations and reports need the database
    itself). ``token``: the proxy's, sent with every call."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        host, port = proxy_address(url)  # no engine here: the proxy holds the connections
        self.url = url
        senders = [_TokenSender(token)] if token is not None else []
        with warnings.catch_warnings():  # experimental in Optuna; our tests cover our use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._optuna_proxy = optuna_proxy_client(host, port, senders)
        self.optuna = RetryingStorage(self._optuna_proxy)
        self._channel = grpc.intercept_channel(grpc.insecure_channel(f"{host}:{port}"), *senders)
        self._call = self._channel.unary_unary(
            CALL, request_serializer=_dumps, response_deserializer=json.loads
        )

    def wait_ready(self, timeout: float) -> None:
        """Wait for the proxy to answer (a worker may start before it), and check that it
        takes this client's token.

        Raises:
            StorageError: no answer in ``timeout`` seconds.
            CredentialsRefused: the proxy refused the token.
        """
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise StorageError(f"storage {self.url}: no proxy answered in {timeout:g} s") from None
        self.call("hello")

    def close(self) -> None:
        """Close the channels to the proxy (ours and Optuna's); for the end of a process."""
        self._channel.close()
        self._optuna_proxy.close()

    def call(self, name: str, **args: Any) -> Any:
        """Run ``name`` on the proxy; retried while the proxy is unreachable."""

        def attempt() -> Any:
            try:
                return self._call({"call": name, "args": args})["result"]
            except grpc.RpcError as e:
                if is_transient(e):
                    raise
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise CredentialsRefused(self.url, e.details() or "no reason given") from e
                raise StorageError(f"storage {self.url}: {name}: {e.details()}") from e

        return retrying(attempt, what=name)

    def trial_slots(
        self, study_id: int, *, retries: int, worker: str | None = None
    ) -> RemoteTrialSlots:
        return RemoteTrialSlots(self, study_id, retries=retries, worker=worker)

    def set_budget(self, study_id: int, trials: int) -> None:
        raise StorageError(f"storage {self.url}: launch studies on the database, not a proxy")

    def budget(self, study_id: int) -> tuple[int, int]:
        trials, held = self.call("budget", study_id=study_id)
        return int(trials), int(held)

    def claim_publication(self, study_id: int, *, now: float, every: float, lease: float) -> bool:
        return bool(
            self.call("claim_publication", study_id=study_id, now=now, every=every, lease=lease)
        )

    def end_publication(self, study_id: int, *, now: float) -> None:
        self.call("end_publication", study_id=study_id, now=now)

    def add_curves(
        self, trial_id: int, steps: Sequence[dict[str, Any]], epochs: Sequence[dict[str, Any]]
    ) -> None:
        self.call("add_curves", trial_id=trial_id, steps=list(steps), epochs=list(epochs))

    def add_reports(self, reports: Sequence[TrialReport]) -> set[int]:
        return set(self.call("add_reports", reports=[list(r) for r in reports]))

    def step_curve(self, trial_id: int) -> list[StepPoint]:
        rows = self.call("step_curve", trial_id=trial_id)
        return [
            StepPoint(trial_id=trial_id, **dict(zip(_STEP_COLUMNS, r, strict=True))) for r in rows
        ]

    def epoch_curve(self, trial_id: int) -> list[EpochPoint]:
        rows = self.call("epoch_curve", trial_id=trial_id)
        return [
            EpochPoint(trial_id=trial_id, **dict(zip(_EPOCH_COLUMNS, r, strict=True)))
            for r in rows
        ]


class RemoteTrialSlots(BaseTrialSlots):
    """Trial slots the proxy runs; the trials are stored as taken by this process."""

    db: RemoteDatabase

    def _call(self, name: str, **args: Any) -> Any:
        ours = {"study_id": self.study_id, "retries": self.retries, "worker": self.worker}
        return self.db.call(name, **ours, **args)

    def claim(self, token: str | None = None, *, below: int | None = None) -> int | None:
        # One token for every retry: the proxy finds the trial a lost answer took.
        result = self._call("claim", token=token or uuid.uuid4().hex, below=below)
        return None if result is None else int(result)

    def hand_back(self, trial_id: int) -> bool:
        return bool(self._call("hand_back", trial_id=trial_id))

    def fail(self, trial_id: int, reason: str) -> Failure | None:
        result = self._call("fail", trial_id=trial_id, reason=reason)
        return None if result is None else Failure(*result)

    def beat(self, trial_ids: Iterable[int]) -> None:
        self._call("beat", trial_ids=list(trial_ids))

    def reap_stale(self, grace_period: float) -> list[Failure]:
        return [Failure(*f) for f in self._call("reap_stale", grace_period=grace_period)]

    def counts(self) -> dict[TrialState, int]:
        return {TrialState[name]: n for name, n in self._call("counts").items()}
