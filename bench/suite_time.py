"""How long the test suite takes, and where: the wall time of one pytest run, then the
tests' own seconds split by speed marker (``slow``, ``e2e``, neither: what `make check`
runs), and the slowest tests.

    .venv/bin/python bench/suite_time.py [--slowest 10] [-- PYTEST ARGS]

It runs ``pytest -n 2`` (as `make test`) with any PYTEST ARGS after ``--``, e.g.
``-- -m "not slow and not e2e"`` for the inner loop alone. A test's seconds are its setup,
call and teardown as pytest measured them; on two processes their sum is about twice the
wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slowest", type=int, default=10, help="how many tests to list")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.json"
        command = [sys.executable, "-m", "pytest", "-n", "2", "-q", "--times-json", str(times)]
        start = time.perf_counter()
        code = subprocess.run([*command, *args.pytest_args], cwd=ROOT).returncode
        wall = time.perf_counter() - start
        tests: dict[str, tuple[float, list[str]]] = json.loads(times.read_text())
    print(f"pytest exit code: {code}")
    print(f"wall seconds: {wall:.0f} for {len(tests)} tests")
    groups: dict[str, list[float]] = collections.defaultdict(list)
    for seconds, markers in tests.values():
        groups[" + ".join(markers) or "unmarked (make check)"].append(seconds)
    total = sum(map(sum, groups.values())) or 1.0
    print("test seconds by marker:")
    for name, seconds in sorted(groups.items(), key=lambda item: -sum(item[1])):
        share = sum(seconds) / total
        print(f"  {name:<24} {len(seconds):>5} tests {sum(seconds):>7.0f} s  {share:>4.0%}")
    print(f"slowest {args.slowest}:")
    slowest = sorted(tests.items(), key=lambda item: -item[1][0])[: args.slowest]
    for nodeid, (seconds, markers) in slowest:
        print(f"  {seconds:>6.1f} s  {nodeid}  {' '.join(markers)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
