"""Commands that check a config or read a study never import torch: a mistake in a config is
answered before the seconds a torch import takes, and `status` or `enqueue` stay quick on a
login node. Checked as a property (which modules the command imported), not as a timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sweeps_helpers import config, sweeps

# Runs `sweeps ARGS` as the CLI does, then prints its exit code and whether torch was loaded.
SCRIPT = """
import sys
from sweeps.cli import main
code = main(sys.argv[1:])
print(code, "torch" in sys.modules)
"""

ENQUEUE = ["enqueue", "--study", "t", "--storage", "URL", "--params"]
COMMANDS = [  # the command, and the exit code it must give
    pytest.param(["validate", "sweep.yaml"], 0, id="validate"),
    pytest.param(["validate", "bad.yaml"], 2, id="validate a bad config"),
    pytest.param(["launch", "other.yaml", "--storage", "URL"], 0, id="launch"),
    pytest.param(["status", "--study", "t", "--storage", "URL"], 0, id="status"),
    pytest.param(["export", "--study", "t", "--storage", "URL", "--out", "t.csv"], 0, id="export"),
    pytest.param([*ENQUEUE, '{"lr": 0.1, "schedule": "cosine"}'], 0, id="enqueue"),
    pytest.param([*ENQUEUE, '{"lr": 5}'], 2, id="enqueue bad params"),
    pytest.param(["worker", "--study", "nope", "--storage", "URL"], 2, id="worker of no study"),
]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A launched study (nothing trained), with a valid and an invalid config beside it."""
    tmp = tmp_path_factory.mktemp("startup")
    url = f"sqlite:///{tmp / 'sweeps.db'}"
    config(tmp)
    config(tmp, "other.yaml", study="other")
    config(tmp, "bad.yaml", budget={"trials": 0, "epochs": 3})
    launched = sweeps("launch", "sweep.yaml", "--storage", url, cwd=tmp)
    assert launched.returncode == 0, launched.stderr
    return tmp, url


@pytest.mark.parametrize(("args", "expected"), COMMANDS)
def test_commands_that_check_or_read_start_without_torch(
    study: tuple[Path, str], args: list[str], expected: int
) -> None:
    cwd, url = study
    argv = [url if a == "URL" else a for a in args]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], cwd=cwd, capture_output=True, text=True
    )
    code, torch_loaded = result.stdout.split()[-2:]
    assert code == str(expected), result.stderr
    assert torch_loaded == "False", f"sweeps {' '.join(args)} imported torch"
