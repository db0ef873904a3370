"""`sweeps storage-proxy`: serve a study database to workers at ``grpc://HOST:PORT``."""

from __future__ import annotations

import argparse
import sys

from sweeps.commands.common import add_proxy_token_argument, add_storage_arguments, is_loopback

GRACE_SECONDS = 10  # within Kubernetes' default 30 s between SIGTERM and SIGKILL
MIN_TOKEN_LENGTH = 16
HELP = (
    "serve the database to workers (--storage grpc://HOST:PORT): Optuna's gRPC storage "
    "proxy plus lr-sweeps' own calls, so workers hold no database connection"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_storage_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for other machines, which "
        "needs a token; the channel is not encrypted: keep it inside the cluster's network)",
    )
    add_proxy_token_argument(
        parser, f"the token every call must carry ({MIN_TOKEN_LENGTH} characters or more)"
    )
    parser.add_argument(
        "--trusted-network",
        action="store_true",
        help="listen on an address other machines reach without a token (anyone who reaches "
        "the port can then change any study and choose the code the workers run)",
    )
    parser.add_argument("--port", type=int, default=13000, help="port (default: 13000)")
    parser.add_argument(
        "--threads", type=int, default=32, help="calls served at once (default: 32)"
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from sweeps.commands.common import proxy_token
    from sweeps.errors import UsageError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port: must be an integer in [1, 65535], got {args.port}")
    if args.threads < 1:
        raise UsageError(f"--threads: must be an integer >= 1, got {args.threads}")
    token = proxy_token(args, min_length=MIN_TOKEN_LENGTH)
    if token is None and not is_loopback(args.host):
        if not args.trusted_network:
            raise UsageError(
                f"--host: {args.host} is reached from other machines: give a token "
                "(--proxy-token-file FILE or $SWEEPS_PROXY_TOKEN, the same for the workers), "
                "or --trusted-network if anyone who reaches the port may run code on the workers"
            )
        print(
            f"warning: --trusted-network: serving {args.host}:{args.port} without a token; "
            "anyone who reaches it can change any study and the code the workers run",
            file=sys.stderr,
            flush=True,
        )

    import os

    # gRPC's own log would add a second line to a bind error; GRPC_VERBOSITY overrides.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

    from storage import mask_url
    from storage.remote import serve
    from sweeps.commands.common import open_database, storage_url

    # On a cluster it may start before the launcher: in a server database without a study
    # yet it makes the schema the launcher then finds. An SQLite file must be one already.
    server_database = not storage_url(args).startswith("sqlite")
    db = open_database(args, create=server_database, wait=True)
    try:
        server = serve(db, args.host, args.port, threads=args.threads, token=token)
    except RuntimeError:  # grpc cannot bind: the port is taken, or the host is not ours
        raise UsageError(
            f"--host/--port: cannot listen on {args.host}:{args.port} (port in use, or not "
            "an address of this machine)"
        ) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"serving {mask_url(db.url)} to workers at grpc://{args.host}:{args.port}"
        f"{' with a token' if token else ''} (SIGTERM or Ctrl-C stops)",
        flush=True,
    )
    stop.wait()
    # Calls in flight may finish; the workers retry those it cancels after the grace period.
    server.stop(grace=GRACE_SECONDS).wait()
    print("storage proxy stopped", flush=True)
    return 0
