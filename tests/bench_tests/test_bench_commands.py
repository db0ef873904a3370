"""Every benchmark command that README.md and BENCHMARKS.md show starts as written.

Each script runs with ``--help`` the way the docs call it (``.venv/bin/python bench/X.py``,
so ``bench/`` comes first on ``sys.path``, as for a reader): its imports load, nothing in
``bench/`` shadows a package, and every option the docs give it exists. Running the
benchmarks themselves takes minutes to hours; their figures live in BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "BENCHMARKS.md")
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py"))
# A script's name and what follows it up to a comment, a code span's end or a table cell.
COMMAND = re.compile(r"\bbench/(\w+)\.py((?:[ \t]+[^\s#`|)]+)*)")
# Modules that others in bench/ import; they are not commands.
LIBRARIES = {"studies", "storage_objectives"}
COMMANDS = sorted(set(SCRIPTS) - LIBRARIES)


def documented() -> list[tuple[str, str, list[str]]]:
    """(doc, script, its options) for every mention of a bench script in the docs."""
    found = []
    for doc in DOCS:
        for match in COMMAND.finditer((ROOT / doc).read_text()):
            options = [t.split("=")[0] for t in match.group(2).split() if t.startswith("--")]
            found.append((doc, match.group(1), options))
    return found


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    """Each command script's ``--help`` output, all started at once (each imports torch)."""
    started = {
        script: subprocess.Popen(
            [sys.executable, f"bench/{script}.py", "--help"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in COMMANDS
    }
    texts = {}
    for script, process in started.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"bench/{script}.py --help: {err[-2000:]}"
        assert "usage:" in out
        texts[script] = out
    return texts


def test_the_docs_show_every_benchmark_and_only_existing_ones() -> None:
    shown = {script for _, script, _ in documented()}
    assert shown <= set(SCRIPTS), shown - set(SCRIPTS)
    assert set(COMMANDS) <= shown, set(COMMANDS) - shown


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_bench_script_shadows_an_importable_module(script: str) -> None:
    """``bench/storage.py`` once hid the ``storage`` package from every bench script."""
    assert importlib.util.find_spec(script) is None, f"bench/{script}.py shadows {script}"


@pytest.mark.parametrize("script", COMMANDS)
def test_each_bench_command_starts_with_the_options_the_docs_give_it(
    script: str, help_texts: dict[str, str]
) -> None:
    text = help_texts[script]
    for doc, name, options in documented():
        if name == script:
            for option in options:
                assert re.search(rf"{option}\b", text), f"{doc}: bench/{script}.py {option}"
