"""`sweeps storage-proxy`: serve a study database to workers at ``grpc://HOST:PORT``."""

from __future__ import annotations

import argparse

from sweeps.commands.common import add_storage_arguments

GRACE_SECONDS = 10  # within Kubernetes' default 30 s between SIGTERM and SIGKILL
HELP = (
    "serve the database to workers (--storage grpc://HOST:PORT): Optuna's gRPC storage "
    "proxy plus lr-sweeps' own calls, so workers hold no database connection"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_storage_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for other machines; the "
        "channel is not encrypted: keep it inside the cluster's network)",
    )
    parser.add_argument("--port", type=int, default=13000, help="port (default: 13000)")
    parser.add_argument(
        "--threads", type=int, default=32, help="calls served at once (default: 32)"
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from sweeps.errors import UsageError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port: must be an integer in [1, 65535], got {args.port}")
    if args.threads < 1:
        raise UsageError(f"--threads: must be an integer >= 1, got {args.threads}")

    import os

    # gRPC's own log would add a second line to a bind error; GRPC_VERBOSITY overrides.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

    from storage import mask_url
    from storage.remote import serve
    from sweeps.commands.common import open_database

    db = open_database(args, wait=True)
    try:
        server = serve(db, args.host, args.port, threads=args.threads)
    except RuntimeError:  # grpc cannot bind: the port is taken, or the host is not ours
        raise UsageError(
            f"--host/--port: cannot listen on {args.host}:{args.port} (port in use, or not "
            "an address of this machine)"
        ) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"serving {mask_url(db.url)} to workers at grpc://{args.host}:{args.port} "
        "(SIGTERM or Ctrl-C stops)",
        flush=True,
    )
    stop.wait()
    # Calls in flight may finish; the workers retry those it cancels after the grace period.
    server.stop(grace=GRACE_SECONDS).wait()
    print("storage proxy stopped", flush=True)
    return 0
