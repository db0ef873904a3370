"""Trial checkpoints as files: written atomically, loadable with plain data only.

A checkpoint is written to a temporary file, synced, renamed over the last one and the
folder synced, so a crash mid-write never leaves a damaged file where the last good one
was. A trial's checkpoint that is damaged all the same (by something else) is set aside as
``*.damaged`` (``*.damaged-2``, ... beside earlier ones), never deleted, and the trial
resumes from an earlier one, if kept. Any other failure to read it (an I/O error, no
memory, a weights-only refusal) is raised, the file left as it is.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy

from storage.database import one_line

ENV_VAR = "SWEEPS_ARTIFACTS"
# Below this much free space a failed write is taken for a full disk: torch's zip writer
# says only "unexpected pos" when a write comes up short.
FULL_BELOW = 1 << 20
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# How a message says so, where no errno comes with it (a command's error line).
NO_SPACE_WORDS = (*map(os.strerror, NO_SPACE), "ENOSPC", "EDQUOT")
DAMAGED = ".damaged"


class DiskFull(Exception):
    """A checkpoint (or ``what`` else) could not be written for want of space; the previous
    checkpoint stands."""

    def __init__(
        self, folder: Path, free: int, why: BaseException, *, what: str = "a checkpoint"
    ) -> None:
        self.folder, self.free = folder, free
        super().__init__(f"no room for {what} in {folder} ({_size(free)} free; {one_line(why)})")


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


def unwritable(root: Path) -> str | None:
    """Why nothing can be written under ``root`` (None if it can): a file is created in it,
    or in its nearest existing parent, and removed again, so nothing is left behind."""
    try:
        with tempfile.TemporaryFile(dir=_existing(root)):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


class CheckpointStore:
    """Checkpoints of one study's trials under ``root/<study>/``.

    A checkpoint is keyed by the trial's *first* attempt, so a retry of the same parameters
    finds the state its predecessor saved.
    """

    def __init__(
        self, root: Path, study: str, *, warn: Callable[[str], None] | None = None
    ) -> None:
        """``warn``: told, in one line, of a checkpoint set aside as damaged (default:
        stderr)."""
        self.dir = root / re.sub(r"[^A-Za-z0-9._-]", "_", study) / "checkpoints"
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))

    def path(self, key: int) -> Path:
        return self.dir / f"trial-{key}.pt"

    def files(self, key: int) -> Path:
        """A folder for a framework's own checkpoint files (Lightning's, the HF Trainer's),
        which the checkpoint at `path` names; deleted with it."""
        return self.dir / f"trial-{key}.files"

    def save(self, key: int, state: dict[str, Any], *, sync: bool = True) -> None:
        """Write atomically: a crash mid-write leaves the previous checkpoint intact.
        ``sync=False``: atomic for other processes, but not synced to disk (each sync
        costs milliseconds): a machine crash may leave the file lost or damaged (then set
        aside, see `load`).

        Raises:
            DiskFull: no room for it; no temporary file is left, the previous one stands.
            Exception: it could not be written for another reason (likewise).
        """
        import torch  # here, not above: only workers save or load; other commands skip torch

        path = self.path(key)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                torch.save(state, f)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())  # on disk before it replaces the last good one
            os.replace(tmp, path)
            if sync:
                _sync_folder(self.dir)  # the rename itself survives a crash
        except BaseException as e:
            # Measured before the temporary file frees its space.
            full = disk_full(self.dir, e) if isinstance(e, OSError | RuntimeError) else None
            tmp.unlink(missing_ok=True)
            if full is not None:
                raise full from e
            raise

    def load(self, key: int) -> dict[str, Any] | None:
        """The trial's checkpoint, its tensors on the CPU (``load_state_dict`` copies them to
        the run's device). A damaged one is set aside (`set_aside`); then the newest of the
        trial's kept ones (`keep_stable`) that reads stands in, else None (the trial starts
        from step 0).

        Raises:
            Exception: it could not be read for another reason than damage (an I/O error,
                no memory, an object a weights-only load refuses); it is left as it is.
        """
        path = self.path(key)
        try:
            return self._read(path)
        except Exception as e:
            if not damaged(e, path):
                raise
            self.set_aside(path, e)
        for epoch in reversed(self.stable_epochs(key)):
            kept = self.stable_path(key, epoch)
            try:
                state = self._read(kept)
            except Exception as e:  # left as it is: a branch may find it whole once synced
                if not damaged(e, kept):
                    raise
                continue
            if state is not None:
                self.warn(f"trial {key} resumes from its kept checkpoint of epoch {epoch}")
                return state
        self.warn(f"trial {key} has no earlier checkpoint: it starts again from step 0")
        return None

    def set_aside(self, path: Path, why: Exception) -> None:
        """Rename damaged ``path`` to the first free name of ``*.damaged``,
        ``*.damaged-2``, ... (kept for a look), saying so in one line."""
        for n in itertools.count(1):
            aside = path.with_name(path.name + DAMAGED + (f"-{n}" if n > 1 else ""))
            if not aside.exists():
                break
        try:
            os.replace(path, aside)
        except FileNotFoundError:  # another worker set it aside first, or the trial ended
            self.warn(f"checkpoint {path} cannot be read ({one_line(why)}) and is gone")
            return
        self.warn(f"checkpoint {path} cannot be read ({one_line(why)}): set aside as {aside}")

    def _read(self, path: Path) -> dict[str, Any] | None:
        import torch

        try:
            # On the CPU: one saved on a GPU this worker lacks (cuda:1) loads all the same.
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
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


def no_space(error: BaseException) -> bool:
    """Whether ``error``, or what it came of, says a disk or quota is full: by its errno,
    or in so many words."""
    causes = [c for c in (error, error.__cause__, error.__context__) if c is not None]
    return any(
        isinstance(c, OSError) and c.errno in NO_SPACE or any(w in str(c) for w in NO_SPACE_WORDS)
        for c in causes
    )


def disk_full(
    folder: Path, error: BaseException, *, what: str = "a checkpoint"
) -> DiskFull | None:
    """``error`` as a `DiskFull` if it came of a full disk (or quota): it says so
    (`no_space`), or ``folder``'s disk has all but no room left; else None."""
    free = free_space(folder)
    if no_space(error) or free < FULL_BELOW:
        return DiskFull(folder, free, error, what=what)
    return None


def damaged(error: Exception, path: Path) -> bool:
    """Whether ``torch.load(path)``'s ``error`` comes from a damaged file, judged by the file
    itself: `save` writes only zip archives whose every record carries a CRC-32, so a file
    that is no such archive, or whose records fail their checksums (empty, garbage, cut
    short, bytes flipped or zeroed by a crash), is damaged, whatever torch's reader said of
    it. An intact archive's error (an object the weights-only unpickler refuses), any other
    I/O error than a truncated file's EINVAL, or no memory is not damage."""
    if isinstance(error, MemoryError):
        return False
    if isinstance(error, OSError) and error.errno != errno.EINVAL:
        return False
    return not _intact_archive(path)


def _intact_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None  # reads every record, checking its CRC-32
    except (zipfile.BadZipFile, EOFError, ValueError, OverflowError):  # torn end records
        return False
    except OSError:  # the disk, not the file: nothing to judge it by, so it is not set aside
        return True


def free_space(folder: Path) -> int:
    """The bytes free on ``folder``'s disk (or its nearest parent's, if it is not made yet)."""
    return shutil.disk_usage(_existing(folder)).free


def _existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n //= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n} {unit}"
