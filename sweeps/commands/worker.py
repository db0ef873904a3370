"""`sweeps worker --study NAME`: run trials until the study's budget is met."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sweeps.commands.common import add_storage_arguments, add_training_arguments

if TYPE_CHECKING:
    from sweeps.worker import Worker

HELP = "run trials of a launched study until its budget is met, then exit 0"
# Set by `sweeps run` so its workers get distinct, reproducible sampler seeds.
INDEX_ENV = "SWEEPS_WORKER_INDEX"
# Set by `sweeps run`: a pipe's read end, whose end says `sweeps run` is gone.
LIFELINE_ENV = "SWEEPS_LIFELINE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study's name")
    add_storage_arguments(parser, artifacts=True, proxy=True)
    add_training_arguments(parser)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for this worker (default: torch's own choice)",
    )


def run(args: argparse.Namespace) -> int:
    import objectives
    from sweeps.errors import UsageError

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads: must be an integer >= 1, got {args.threads}")
    from sweeps.commands.common import (
        artifacts_root,
        check_stack,
        dashboard_store,
        open_database,
    )
    from sweeps.device import parse_gpus

    check_stack(args)
    from sweeps.results.progress import Progress
    from sweeps.summary import summarize
    from sweeps.worker import Worker

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    index = os.environ.get(INDEX_ENV)
    progress: Progress | None = None

    def log(line: str) -> None:  # under the live bar when there is one
        try:
            if progress:
                progress.log(line)
            else:
                print(line, flush=True)
        except OSError:  # its log's disk is full: a line lost, not the worker and its trials
            pass

    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    log_storage_retries(log)  # from the first call: a worker may start before its database
    artifacts = artifacts_root(args, writable=True)
    db = open_database(args, wait=True)
    try:
        worker = Worker(
            db,
            args.study,
            artifacts=artifacts,
            store=dashboard_store(args),
            worker=int(index) if index else _distinct_number(),
            stack=args.stack,
            device=args.device,
            gpus=gpus,
            log=log,
        )
    except objectives.ObjectiveNotFound as e:  # the study's, stored at launch: gone since
        raise UsageError(f"{e} (stored with study {args.study!r})") from None
    if sys.stdout.isatty():  # a person watches: a live bar under the trial lines
        progress = Progress(lambda: summarize(db, worker.handle))
    say = functools.partial(print, file=sys.stderr, flush=True)
    stop_on_signals(worker, log=say)
    stop_with_parent(worker, log=say)
    try:
        code = worker.run()
    finally:
        if progress:
            progress.close()
    ended = "stopped" if code or worker.stopping else "budget met"
    print(f"worker done: {ended}", file=sys.stderr)
    return code


def log_storage_retries(log: Callable[[str], None]) -> None:
    """Storage retries (`storage.resilience`, through an outage) go to the worker's log, in
    order with its trial lines, instead of Python's last-resort stderr handler."""
    import logging

    class ToLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log(f"storage: {record.getMessage()}")

    logger = logging.getLogger("sweeps.storage")
    logger.addHandler(ToLog())
    logger.propagate = False


def stop_on_signals(worker: Worker, *, log: Callable[[str], None]) -> None:
    """SIGTERM or SIGINT (pod eviction, SLURM preemption, Ctrl-C): save the epoch in
    progress, hand the trials back, exit 0. A second signal stops at once (the trials resume
    from their previous checkpoint)."""

    def handle(signum: int, _frame: object) -> None:
        if worker.stopping:
            raise KeyboardInterrupt
        log(
            f"{signal.Signals(signum).name}: handing trials back after the epoch in "
            "progress (send again to stop at once)"
        )
        worker.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)


def stop_with_parent(worker: Worker, *, log: Callable[[str], None]) -> None:
    """A worker of `sweeps run` stops as on SIGTERM when `sweeps run` is gone, however it
    ended (killed, or its output piped into ``head``): its lifeline pipe closes."""
    fd = os.environ.pop(LIFELINE_ENV, None)  # nothing this worker starts inherits it
    if not fd:
        return

    def watch() -> None:
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        log("sweeps run is gone: handing trials back after the epoch in progress")
        worker.stop()

    import threading

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _distinct_number() -> int:
    """A worker number for sampler seeds when no index is given: distinct across machines and
    containers (where every replica's process id may be 1)."""
    import socket
    import zlib

    return zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 2**30  # a valid seed
