"""What lr-sweeps' worker loop costs over bare Optuna, and how it scales with workers.

    .venv/bin/python bench/storage_backends.py [--trials 200] [--workers 1,2,4,8,16,32]
        [--proxy-workers 4,16] [--parts overhead,scaling,proxy]
        [--backends sqlite,postgresql,redis]

Each backend is a fresh SQLite file, a database on a throwaway PostgreSQL cluster
(tests/pg_cluster.py) or a logical database of a throwaway Redis server
(tests/redis_server.py), both started from the installed binaries. Printed, `name: value`:

- overhead_vs_bare_optuna_<backend>: seconds per trial of our worker loop (trial claim with
  heartbeat, sampling, objective, reports, tell, publication lease) over `study.optimize`
  with the same trivial objective and random sampler, both in this process, side by side.
- scaling_efficiency_<n>_workers_<backend>: n `sweeps worker` processes on one study of 8n
  trials whose objective sleeps 0.5 s: the trials' summed duration over n times the span from
  the first trial's start to the last one's end (1.0 = no worker ever waits on storage;
  process start-up is outside the span).
- statements_per_trial_<ours|bare_optuna>_<backend>: SQL statements sent per trial in the
  two loops above (steadier than seconds on a shared machine; SQL backends only).
- connections_per_worker_<n>_workers_postgresql: the most connections the study's database
  had open while n workers ran, over n (pg_stat_activity, polled every 0.1 s).

- grpc_proxy_vs_rdb_<n>_workers: n `sweeps worker` processes with a trivial objective on a
  study of 25n trials on PostgreSQL, through a `sweeps storage-proxy` (``grpc://``) and
  straight to the database, one after the other: finished trials per second through the
  proxy over straight (above 1: the proxy is faster). Beside it, throughput_<rdb|grpc>_...
  and connections_<rdb|grpc>_<n>_workers: the most connections the database had open (for
  the proxy, all of them are the proxy's).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the throwaway PostgreSQL cluster

from pg_cluster import PostgresCluster, find_bindir  # noqa: E402
from redis_server import RedisServer, find_redis_server  # noqa: E402
from storage import open_database  # noqa: E402
from sweeps.config import parse_config  # noqa: E402
from sweeps.study import launch  # noqa: E402
from sweeps.worker import Worker  # noqa: E402
from sweeps_helpers import optuna_storage  # noqa: E402


def config(name: str, objective: str, trials: int) -> dict[str, object]:
    return {
        "study": name,
        "objective": f"storage_objectives:{objective}",
        "budget": {"trials": trials, "epochs": 1},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"lr": {"low": 1e-3, "high": 1.0, "log": True}, "schedule": {"constant": {}}},
    }


# SQL statements sent by every engine in this process since the last timed loop started.
STATEMENTS = {"sent": 0}


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
def count_statements(*_: object) -> None:
    STATEMENTS["sent"] += 1


def seconds_per_trial_ours(url: str, trials: int, artifacts: Path) -> float:
    db = open_database(url)
    launch(db, parse_config(config("ours", "trivial", trials)))
    worker = Worker(db, "ours", artifacts=artifacts, log=lambda line: None)
    start, STATEMENTS["sent"] = time.perf_counter(), 0
    assert worker.run() == 0
    return (time.perf_counter() - start) / trials


def seconds_per_trial_bare(url: str, trials: int) -> float:
    study = optuna.create_study(
        storage=optuna_storage(url),
        study_name="bare",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    start, STATEMENTS["sent"] = time.perf_counter(), 0
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1.0, log=True), n_trials=trials)
    return (time.perf_counter() - start) / trials


def scaling_efficiency(
    url: str, workers: int, workdir: Path, connections: Callable[[], int] | None = None
) -> tuple[float, int]:
    """(efficiency, the most connections ``connections()`` counted while workers ran)."""
    name = launch_study(f"scale{workers}", "sleepy", 8 * workers, workdir, url)
    peak = run_workers(name, workers, workdir, url, connections or (lambda: 0))
    done = optuna.load_study(study_name=name, storage=optuna_storage(url)).trials
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return busy / (workers * span(done)), peak


def throughput(
    url: str, workers: int, workdir: Path, connections: Callable[[], int], *, proxy: bool
) -> tuple[float, int]:
    """(finished trials per second, the most connections counted) for ``workers`` processes
    with a trivial objective, straight on ``url`` or through a storage proxy in front of it."""
    name = launch_study(
        f"{'grpc' if proxy else 'rdb'}{workers}", "trivial", 25 * workers, workdir, url
    )
    server = None
    worker_url = url
    if proxy:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sweeps",
                "storage-proxy",
                "--storage",
                url,
                "--port",
                str(port),
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        worker_url = f"grpc://127.0.0.1:{port}"
    peak = run_workers(name, workers, workdir, worker_url, connections)
    if server is not None:
        server.terminate()
        server.wait()
    done = optuna.load_study(study_name=name, storage=url).trials
    return len(done) / span(done), peak


def launch_study(name: str, objective: str, trials: int, workdir: Path, url: str) -> str:
    """Launch study ``name`` of ``trials`` trials of a `storage_objectives` objective."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config(name, objective, trials)))
    launched = subprocess.run(
        [sys.executable, "-m", "sweeps", "launch", str(path), "--storage", url],
        cwd=workdir,
        capture_output=True,
    )
    assert launched.returncode == 0, launched.stderr
    return name


def span(trials: list[optuna.trial.FrozenTrial]) -> float:
    """Seconds from the first trial's start to the last one's end."""
    start = min(t.datetime_start for t in trials if t.datetime_start)
    end = max(t.datetime_complete for t in trials if t.datetime_complete)
    return (end - start).total_seconds()


def run_workers(
    study: str, workers: int, workdir: Path, url: str, connections: Callable[[], int]
) -> int:
    """Run ``workers`` `sweeps worker` processes on ``url`` to the end of ``study``; the
    most connections ``connections()`` counted meanwhile (polled every 0.1 s)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sweeps", "worker", "--study", study, "--threads", "1"],
            env={**os.environ, "SWEEPS_STORAGE": url, "SWEEPS_WORKER_INDEX": str(i)},
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    peak = 0
    while any(p.poll() is None for p in procs):
        peak = max(peak, connections())
        time.sleep(0.1)
    assert all(p.returncode == 0 for p in procs)
    return peak


def open_connections(cluster: PostgresCluster, database: str) -> int:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres"
    ) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4,8,16,32")
    parser.add_argument("--proxy-workers", default="4,16")
    parser.add_argument("--parts", default="overhead,scaling,proxy", help="what to measure")
    parser.add_argument("--backends", default="sqlite,postgresql,redis")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parts, names = args.parts.split(","), args.backends.split(",")
    bindir, redis_binary = find_bindir(), find_redis_server()
    assert bindir is not None, "PostgreSQL binaries (initdb, pg_ctl) not found"
    assert redis_binary is not None, "redis-server not found"
    cluster = PostgresCluster(bindir)  # both servers start whatever is measured: seconds
    cluster.start()
    redis = RedisServer(redis_binary)
    redis.start()
    redis_dbs: dict[str, int] = {}  # label -> logical database (16 by default)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            # Objectives are imported from the working directory, as a user's are.
            shutil.copy(HERE / "storage_objectives.py", work)
            os.chdir(work)
            every: dict[str, Callable[[str], str]] = {
                "sqlite": lambda label: f"sqlite:///{work / label}.db",
                "postgresql": lambda label: cluster.create_database(label),
                "redis": lambda label: redis.url(redis_dbs.setdefault(label, len(redis_dbs))),
            }
            backends = {name: every[name] for name in names}
            for backend, fresh in backends.items() if "overhead" in parts else ():
                ours = seconds_per_trial_ours(fresh("ours"), args.trials, work / "artifacts")
                ours_statements = STATEMENTS["sent"]
                bare = seconds_per_trial_bare(fresh("bare"), args.trials)
                print(f"seconds_per_trial_ours_{backend}: {ours:.4f}")
                print(f"seconds_per_trial_bare_optuna_{backend}: {bare:.4f}")
                print(f"overhead_vs_bare_optuna_{backend}: {ours / bare:.2f}")
                for loop, sent in (("ours", ours_statements), ("bare_optuna", STATEMENTS["sent"])):
                    if backend != "redis":
                        print(f"statements_per_trial_{loop}_{backend}: {sent / args.trials:.1f}")
            for backend, fresh in backends.items() if "scaling" in parts else ():
                for n in (int(w) for w in args.workers.split(",")):
                    label = f"scale{n}"
                    efficiency, peak = scaling_efficiency(
                        fresh(label),
                        n,
                        work,
                        functools.partial(open_connections, cluster, label)
                        if backend == "postgresql"
                        else None,
                    )
                    print(f"scaling_efficiency_{n}_workers_{backend}: {efficiency:.2f}")
                    if backend == "postgresql":
                        print(f"connections_per_worker_{n}_workers_postgresql: {peak / n:.1f}")
                    sys.stdout.flush()
            for n in (int(w) for w in args.proxy_workers.split(",")) if "proxy" in parts else ():
                measured = {}
                for proxy in (False, True):
                    label = f"{'grpc' if proxy else 'rdb'}{n}"
                    measured[proxy] = rate, peak = throughput(
                        cluster.create_database(label),
                        n,
                        work,
                        functools.partial(open_connections, cluster, label),
                        proxy=proxy,
                    )
                    kind = "grpc" if proxy else "rdb"
                    print(f"throughput_{kind}_{n}_workers_trials_per_s: {rate:.1f}")
                    print(f"connections_{kind}_{n}_workers: {peak}")
                print(
                    f"grpc_proxy_vs_rdb_{n}_workers: {measured[True][0] / measured[False][0]:.2f}"
                )
                sys.stdout.flush()
    finally:
        cluster.destroy()
        redis.destroy()


if __name__ == "__main__":
    main()
