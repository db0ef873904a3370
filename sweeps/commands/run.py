"""`sweeps run CONFIG --workers N`: launch the study, run N local workers, show progress,
end with a summary. The one-command demo."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sweeps.commands.common import add_storage_arguments, add_training_arguments

HELP = "launch a study and run N local worker processes until its budget is met"
POLL_SECONDS = 0.5

if TYPE_CHECKING:
    from sweeps.config import SweepConfig
    from sweeps.local_workers import LocalWorkers
    from sweeps.results.progress import Progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the sweep's YAML config")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    add_training_arguments(parser)
    add_storage_arguments(parser, artifacts=True)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing study of this name (its failures so far no longer count)",
    )
    parser.add_argument(
        "--restart-workers",
        type=int,
        default=0,
        metavar="N",
        help="start a worker that was killed or crashed again, up to N times in all (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    import objectives
    from sweeps.commands.common import (
        artifacts_root,
        check_artifact_store,
        check_stack,
        load_checked_config,
        open_database,
    )
    from sweeps.commands.worker import INDEX_ENV
    from sweeps.device import cuda_device_count, resolve_device, worker_devices
    from sweeps.errors import RunFailed, UsageError
    from sweeps.local_workers import LocalWorkers
    from sweeps.results.progress import Progress
    from sweeps.study import launch
    from sweeps.summary import summarize

    if args.workers < 1:
        raise UsageError(f"--workers: must be an integer >= 1, got {args.workers}")
    if args.restart_workers < 0:
        raise UsageError(f"--restart-workers: must be an integer >= 0, got {args.restart_workers}")
    check_stack(args)
    config = load_checked_config(args.config)
    device = resolve_device(config.device, args.device)  # as each worker will, up front
    devices = worker_devices(device, args.workers, cuda_device_count(device))
    shares = command_gpus(args, config, device)
    if shares is not None:
        devices = None  # command trials take GPUs by CUDA_VISIBLE_DEVICES, not --device
    unstacked = objectives.cannot_stack(config.objective_spec)
    if unstacked and (args.stack or config.stack) > 1:
        print(f"note: {unstacked}; each worker trains one trial at a time", file=sys.stderr)
    # Checked before anything is written.
    logs = artifacts_root(args, writable=True) / config.study / "logs"
    check_artifact_store(args)
    db = open_database(args, create=True)
    handle = launch(db, config, resume=args.resume)
    if handle.note:
        print(f"note: {handle.note}", file=sys.stderr)
    logs.mkdir(parents=True, exist_ok=True)
    # Split the cores between the workers: oversubscribed torch threads slow everyone down.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = {**os.environ, "SWEEPS_STORAGE": db.url}  # not on the command line: `ps` shows it
    progress = Progress(lambda: summarize(db, handle))
    workers = LocalWorkers(
        lambda i: worker_command(
            args,
            config.study,
            threads,
            devices[i] if devices else None,
            gpus=shares[i] if shares else None,
        ),
        lambda i: {**env, INDEX_ENV: str(i)},
        logs,
        args.workers,
        restarts=args.restart_workers,
        say=progress.log,
    )
    print(
        f"running {config.budget.trials} trials of {config.study!r} on {args.workers} "
        f"worker(s) x {threads} thread(s); worker logs in {logs}/",
        flush=True,
    )
    if devices:
        print(
            "one GPU per worker: " + ", ".join(f"worker {i} on {d}" for i, d in enumerate(devices))
        )
    if shares:
        print("GPUs: " + ", ".join(f"worker {i} on {','.join(g)}" for i, g in enumerate(shares)))
    if not supervise(workers, progress):
        print(
            f"running trials went back to the queue; continue with "
            f"sweeps run {args.config} --resume",
            file=sys.stderr,
        )
        return 130
    summary = summarize(db, handle)
    print_summary(summary, args)
    if workers.failed and summary["finished"] < summary["budget"]:  # else the others did it
        raise RunFailed(
            f"worker(s) {workers.failed} ended with an error (said above; logs in {logs}/); "
            f"once its cause is fixed, continue with: sweeps run {args.config} --resume"
        )
    return 0


def command_gpus(
    args: argparse.Namespace, config: SweepConfig, device: str
) -> list[list[str]] | None:
    """Each local worker's share of the GPUs, for a command objective given ``--gpus`` or
    run on CUDA; None otherwise.

    Raises:
        UsageError: ``--gpus`` for another objective, or fewer whole trials' worth of GPUs
            than workers.
    """
    from sweeps.config import CommandObjective
    from sweeps.device import NOT_A_COMMAND, parse_gpus, split_gpus, visible_gpus
    from sweeps.errors import UsageError

    if not isinstance(config.objective, CommandObjective):
        if args.gpus is not None:
            raise UsageError(NOT_A_COMMAND)
        return None
    gpus = parse_gpus(args.gpus) if args.gpus is not None else visible_gpus(device)
    if not gpus:
        return None
    return split_gpus(gpus, args.workers, config.objective.processes)


def worker_command(
    args: argparse.Namespace,
    study: str,
    threads: int,
    device: str | None = None,
    *,
    gpus: list[str] | None = None,
) -> list[str]:
    """The ``sweeps worker`` command line of each local worker (the storage goes in its
    environment: `ps` would show a password on the command line). ``device``: the
    worker's own, else ``--device`` if given."""
    import sys

    cmd = [sys.executable, "-m", "sweeps", "worker", "--study", study]
    cmd += ["--threads", str(threads)]
    if args.artifacts:
        cmd += ["--artifacts", args.artifacts]
    if args.artifact_store:
        cmd += ["--artifact-store", args.artifact_store]
    if args.stack is not None:
        cmd += ["--stack", str(args.stack)]
    if device or args.device:
        cmd += ["--device", device or args.device]
    if gpus:
        cmd += ["--gpus", ",".join(gpus)]
    return cmd


def supervise(workers: LocalWorkers, progress: Progress) -> bool:
    """Watch the workers until the last one ends, with a live progress bar. False when
    Ctrl-C stopped them: they handed their trials back (`sweeps worker`)."""
    import contextlib
    import subprocess
    import sys

    try:
        while True:
            workers.check()
            if not (running := workers.running):
                return True
            progress.update()
            with contextlib.suppress(subprocess.TimeoutExpired):
                running[0].wait(POLL_SECONDS)  # back as soon as the last worker ends
    except KeyboardInterrupt:
        progress.close()
        print(
            "interrupted: workers save the epoch in progress and hand their trials back "
            "(Ctrl-C again to stop them at once)",
            file=sys.stderr,
            flush=True,
        )
        workers.terminate()
        try:
            workers.wait()
        except KeyboardInterrupt:  # a second signal: the workers stop at once
            workers.terminate()
            workers.wait()
        return False
    finally:
        progress.close()


def print_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """The study's table, where its data lives, and the commands that show it."""
    from storage import is_redis
    from sweeps.summary import format_table

    print(f"\n{format_table(summary)}\n")
    curves = (
        "keys sweeps:trial:<id>:steps and :epochs"
        if is_redis(summary["storage"])
        else "tables sweeps_curve_steps, sweeps_curve_epochs"
    )
    print(f"data: {summary['storage']} (curves in {curves})")
    where = f" --artifacts {args.artifacts}" if args.artifacts else ""
    where += f" --artifact-store {args.artifact_store}" if args.artifact_store else ""
    study = summary["study"]
    print(f"browse: sweeps dashboard --storage {summary['storage']}{where}")
    print(f"report: sweeps report --study {study} --out {study}-report/")
    print(f"export: sweeps export --study {study} --out {study}.csv")
