"""Real disk faults for tests: a full or read-only disk (a tmpfs of a few MiB mounted on a
test's own folder; root only, and a test is skipped, saying why, where mounting is not
permitted), and the ways a checkpoint file is found damaged."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# A good checkpoint's bytes -> the same file found damaged.
DAMAGE = {
    "truncated": lambda good: good[: len(good) // 2],
    "garbage": lambda good: b"not a checkpoint\n" * 100,
    "empty": lambda good: b"",
    "zeroed": lambda good: bytes(4096) + good[4096:],  # its first page lost in a crash
}


@contextmanager
def tmpfs(path: Path, *, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` (``2m``) at ``path``, unmounted afterwards; ``read_only``: mounted
    ``ro``, which stops root too (a chmod does not)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mount(["-t", "tmpfs", "-o", options, "tmpfs", str(path)])
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def remount(path: Path, options: str) -> None:
    """Change a mounted tmpfs's options (``size=64m``, ``ro``)."""
    mount(["-o", f"remount,{options}", str(path)])


def mount(args: list[str]) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command here to make a small or read-only file system")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {done.stderr.strip()}")
