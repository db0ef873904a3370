"""Commands that check a config or read a study never import torch: a mistake in a config is
answered before the seconds a torch import takes, and `status` or `enqueue` stay quick on a
login node. Checked as a property (which modules the command imported), not as a timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from storage import Database
from sweeps.config import load_yaml, parse_config
from sweeps.study import launch
from sweeps_helpers import config

pytestmark = pytest.mark.e2e

# Runs each `sweeps ARGS` (a JSON list of argument lists) in turn as the CLI does, in one
# fresh process, and prints for each its exit code and whether it was the one that loaded
# torch (None: torch was loaded before it, so it cannot tell).
SCRIPT = """
import json, sys
from sweeps.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    before = "torch" in sys.modules
    code = main(argv)
    results.append([code, None if before else "torch" in sys.modules])
print(json.dumps(results))
"""

ENQUEUE = ["enqueue", "--study", "t", "--storage", "URL", "--params"]
COMMANDS = [  # its test id, the command, and the exit code it must give
    ("validate", ["validate", "sweep.yaml"], 0),
    ("validate a bad config", ["validate", "bad.yaml"], 2),
    ("launch", ["launch", "other.yaml", "--storage", "URL"], 0),
    ("status", ["status", "--study", "t", "--storage", "URL"], 0),
    ("export", ["export", "--study", "t", "--storage", "URL", "--out", "t.csv"], 0),
    ("enqueue", [*ENQUEUE, '{"lr": 0.1, "schedule": "cosine"}'], 0),
    ("enqueue bad params", [*ENQUEUE, '{"lr": 5}'], 2),
    ("worker of no study", ["worker", "--study", "nope", "--storage", "URL"], 2),
]


@pytest.fixture(scope="module")
def started(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[int, bool | None]]:
    """A launched study (nothing trained), with a valid and an invalid config beside it;
    then every command of COMMANDS run in one fresh process, in order: for each (by its
    id), its exit code and whether it imported torch."""
    tmp = tmp_path_factory.mktemp("startup")
    url = f"sqlite:///{tmp / 'sweeps.db'}"
    config(tmp)
    config(tmp, "other.yaml", study="other")
    config(tmp, "bad.yaml", budget={"trials": 0, "epochs": 3})
    db = Database(url)
    launch(db, parse_config(load_yaml(tmp / "sweep.yaml")))
    db.close()
    argvs = [[url if a == "URL" else a for a in args] for _, args, _ in COMMANDS]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(argvs)], cwd=tmp, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout.splitlines()[-1])
    names = [name for name, _, _ in COMMANDS]
    return {name: (code, torch) for name, (code, torch) in zip(names, outcomes, strict=True)}


@pytest.mark.parametrize(("name", "args", "expected"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_commands_that_check_or_read_start_without_torch(
    started: dict[str, tuple[int, bool | None]], name: str, args: list[str], expected: int
) -> None:
    code, loaded_torch = started[name]
    assert code == expected
    assert loaded_torch is not None, "an earlier command imported torch: this one is untested"
    assert not loaded_torch, f"sweeps {' '.join(args)} imported torch"
