"""`sweeps dashboard`: optuna-dashboard on the study storage, with our artifact store, so each
trial's page shows its learning-rate and loss curves."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from sweeps.commands.common import add_storage_arguments, is_loopback
from sweeps.errors import UsageError

HELP = "serve optuna-dashboard on the study storage, with each trial's curve artifacts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_storage_arguments(parser, artifacts=True)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")


def run(args: argparse.Namespace) -> int:
    from optuna_dashboard import wsgi

    from storage import mask_url
    from sweeps.commands.common import artifacts_root, dashboard_store, open_database
    from sweeps.results.artifact_store import store_location

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port: must be an integer in [1, 65535], got {args.port}")
    root = artifacts_root(args)  # checked before anything is opened or written
    db = open_database(args)
    store = dashboard_store(args)
    if not is_loopback(args.host):
        print(
            f"warning: optuna-dashboard has no authentication: anyone who can reach "
            f"{args.host}:{args.port} can read, change and delete studies. Prefer the default "
            "127.0.0.1 and an SSH tunnel (ssh -L 8080:127.0.0.1:8080 HOST), or put it behind "
            "a reverse proxy that authenticates (nginx auth_basic, oauth2-proxy).",
            file=sys.stderr,
        )
    server = listen(args.host, args.port)  # before saying where it listens
    server.set_app(wsgi(db.optuna, artifact_store=store))
    print(
        f"optuna-dashboard for {mask_url(db.url)} on http://{args.host}:{args.port}/ "
        f"(artifacts in {store_location(root, args.artifact_store)}); "
        "Ctrl-C stops it",
        flush=True,
    )
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def listen(host: str, port: int) -> WSGIServer:
    """A WSGI server bound to ``host:port`` (an IPv6 address too), each request logged on
    stderr as optuna-dashboard's own server does.

    Raises:
        UsageError: the address cannot be listened on (taken, or not this machine's).
    """
    ipv6 = ":" in host
    server_class = _WSGIServer6 if ipv6 else WSGIServer
    try:
        return server_class((host, port), WSGIRequestHandler)
    except OSError as e:
        raise UsageError(
            f"--host/--port: cannot listen on {host}:{port}: {e.strerror or e}"
        ) from None


class _WSGIServer6(WSGIServer):
    address_family = socket.AF_INET6
