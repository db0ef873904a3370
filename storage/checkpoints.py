"""Trial checkpoints as files: written atomically, loadable with plain data only."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy

ENV_VAR = "SWEEPS_ARTIFACTS"


def default_root(url: str) -> Path:
    """Beside an SQLite file (``sweeps.db`` -> ``sweeps.db.artifacts/``); else
    ``./sweeps-artifacts`` (on a cluster, point ``--artifacts`` at a shared volume)."""
    parsed = sqlalchemy.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(f"{parsed.database}.artifacts")
    return Path("sweeps-artifacts")


def resolve_root(given: str | None, url: str) -> Path:
    """``--artifacts``, else ``$SWEEPS_ARTIFACTS``, else `default_root`."""
    return Path(given or os.environ.get(ENV_VAR) or default_root(url))


class CheckpointStore:
    """Checkpoints of one study's trials under ``root/<study>/``.

    A checkpoint is keyed by the trial's *first* attempt, so a retry of the same parameters
    finds the state its predecessor saved.
    """

    def __init__(self, root: Path, study: str) -> None:
        self.dir = root / re.sub(r"[^A-Za-z0-9._-]", "_", study) / "checkpoints"

    def path(self, key: int) -> Path:
        return self.dir / f"trial-{key}.pt"

    def files(self, key: int) -> Path:
        """A folder for a framework's own checkpoint files (Lightning's, the HF Trainer's),
        which the checkpoint at `path` names; deleted with it."""
        return self.dir / f"trial-{key}.files"

    def save(self, key: int, state: dict[str, Any]) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
        import torch  # here, not above: only workers save or load; other commands skip torch

        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(key).with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path(key))

    def load(self, key: int) -> dict[str, Any] | None:
        return self._read(self.path(key))

    def _read(self, path: Path) -> dict[str, Any] | None:
        import torch

        if not path.exists():
            return None
        state: dict[str, Any] = torch.load(path, weights_only=True)
        return state

    # A trunk's stable-phase checkpoints (`sweeps.branches`), one file per kept epoch, kept
    # for its branches until the study ends.

    def stable_path(self, key: int, epoch: int) -> Path:
        return self.dir / f"trunk-{key}-epoch-{epoch}.pt"

    def keep_stable(self, key: int, epoch: int) -> None:
        """Keep trial ``key``'s checkpoint as it is now, as its copy of ``epoch``: a hard
        link (the next `save` replaces the trial's file, not this one), or a copy where the
        file system has none."""
        kept = self.stable_path(key, epoch)
        kept.unlink(missing_ok=True)  # a retry keeping the epoch again
        try:
            os.link(self.path(key), kept)
        except OSError:
            shutil.copyfile(self.path(key), kept)

    def load_stable(self, key: int, epoch: int) -> dict[str, Any] | None:
        return self._read(self.stable_path(key, epoch))

    def stable_epochs(self, key: int) -> list[int]:
        """The epochs of trunk ``key``'s kept checkpoints."""
        found = self.dir.glob(f"trunk-{key}-epoch-*.pt")
        return sorted(int(p.stem.rsplit("-", 1)[1]) for p in found)

    def delete_stable(self) -> None:
        """Every trunk's kept checkpoints (the study is over)."""
        for path in self.dir.glob("trunk-*-epoch-*.pt"):
            path.unlink(missing_ok=True)

    def delete(self, key: int) -> None:
        self.path(key).unlink(missing_ok=True)
        shutil.rmtree(self.files(key), ignore_errors=True)
