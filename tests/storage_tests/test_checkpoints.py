"""Checkpoint files on real disks: a full disk, a read-only folder, damaged files."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from disk_faults import DAMAGE, tmpfs
from storage.checkpoints import CheckpointStore, DiskFull, unwritable


def state(floats: int, fill: float = 1.0) -> dict[str, torch.Tensor]:
    return {"w": torch.full((floats,), fill)}


def test_save_on_a_full_disk_raises_disk_full_and_keeps_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "small", size="2m") as root:
        store = CheckpointStore(root, "s")
        store.save(1, state(100_000))  # 400 kB: fits
        store.save(2, state(100_000, 2.0))
        with pytest.raises(DiskFull) as raised:
            store.save(2, state(500_000))  # 2 MB: cannot fit beside the others
        message = str(raised.value)
        assert str(store.dir) in message and "free" in message and "\n" not in message
        assert sorted(p.name for p in store.dir.iterdir()) == ["trial-1.pt", "trial-2.pt"]
        assert torch.equal(store.load(2)["w"], state(100_000, 2.0)["w"])  # its last one
        assert torch.equal(store.load(1)["w"], state(100_000)["w"])


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_set_aside_with_one_warning_line(
    tmp_path: Path, damage: str
) -> None:
    warnings: list[str] = []
    store = CheckpointStore(tmp_path, "s", warn=warnings.append)
    store.save(3, state(1000))
    path = store.path(3)
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    damaged = path.read_bytes()

    assert store.load(3) is None  # the trial starts again from step 0
    assert not path.exists()
    assert (store.dir / "trial-3.pt.damaged").read_bytes() == damaged  # kept, not deleted
    assert len(warnings) == 2 and all("\n" not in line for line in warnings)
    assert "trial-3.pt cannot be read" in warnings[0] and "trial-3.pt.damaged" in warnings[0]
    assert "starts again from step 0" in warnings[1]
    store.save(3, state(1000, 5.0))  # the retry's checkpoints are written as before
    assert torch.equal(store.load(3)["w"], state(1000, 5.0)["w"])


def test_a_flipped_byte_torch_cannot_read_past_is_set_aside_never_raised(
    tmp_path: Path,
) -> None:
    """Judged by the archive's checksums, whatever torch's reader raised of the byte."""
    store = CheckpointStore(tmp_path, "s", warn=lambda line: None)
    store.save(1, state(1000))
    good = store.path(1).read_bytes()
    set_aside = 0
    for at in range(0, 1200, 3):
        store.path(1).write_bytes(good[:at] + bytes([good[at] ^ 0x5A]) + good[at + 1 :])
        if store.load(1) is None:  # else the flip fell where nothing reads it
            set_aside += 1
            assert not store.path(1).exists()
    assert set_aside > 0
    assert len(list(store.dir.glob("trial-1.pt.damaged*"))) == set_aside


def test_each_damaged_copy_is_kept_under_a_name_of_its_own(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = CheckpointStore(tmp_path, "s", warn=warnings.append)
    for attempt in (b"first", b"second", b"third"):
        store.save(3, state(10))
        store.path(3).write_bytes(attempt)
        assert store.load(3) is None
    names = ["trial-3.pt.damaged", "trial-3.pt.damaged-2", "trial-3.pt.damaged-3"]
    assert sorted(p.name for p in store.dir.iterdir()) == names
    assert [(store.dir / n).read_bytes() for n in names] == [b"first", b"second", b"third"]
    assert sum("set aside as" in line for line in warnings) == 3


def test_a_checkpoint_that_vanished_before_it_was_set_aside_is_one_line(
    tmp_path: Path,
) -> None:
    warnings: list[str] = []
    store = CheckpointStore(tmp_path, "s", warn=warnings.append)
    store.set_aside(store.path(4), EOFError("Ran out of input"))  # another worker's meanwhile
    assert warnings == [
        f"checkpoint {store.path(4)} cannot be read (EOFError: Ran out of input) and is gone"
    ]


def test_a_checkpoint_the_weights_only_loader_refuses_is_raised_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    """A whole checkpoint holding an object outside plain data (a user's state with a
    Path): no damage, so not set aside; the load says what it refused."""
    warnings: list[str] = []
    store = CheckpointStore(tmp_path, "s", warn=warnings.append)
    store.save(5, {"user": {"data": tmp_path / "train.csv"}})
    saved = store.path(5).read_bytes()
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL pathlib"):
        store.load(5)
    assert [p.name for p in store.dir.iterdir()] == ["trial-5.pt"]
    assert store.path(5).read_bytes() == saved and warnings == []


def test_a_checkpoint_that_cannot_be_opened_is_raised_and_left_as_it_is(tmp_path: Path) -> None:
    """An I/O error is no damage: the file may read next time."""
    warnings: list[str] = []
    store = CheckpointStore(tmp_path, "s", warn=warnings.append)
    store.path(6).mkdir(parents=True)  # opening it fails as an unreadable file would
    with pytest.raises(IsADirectoryError):
        store.load(6)
    assert store.path(6).is_dir() and warnings == []


def test_a_checkpoint_loads_on_the_cpu(tmp_path: Path) -> None:
    """`load` maps every tensor to the CPU, so one saved on a GPU a worker lacks loads."""
    store = CheckpointStore(tmp_path, "s")
    store.save(1, state(10))
    assert store.load(1)["w"].device == torch.device("cpu")


def test_a_damaged_checkpoint_falls_back_to_the_newest_kept_one_that_reads(
    tmp_path: Path,
) -> None:
    warnings: list[str] = []
    store = CheckpointStore(tmp_path, "s", warn=warnings.append)
    for epoch in (1, 2, 3):
        store.save(7, state(10, float(epoch)))
        store.keep_stable(7, epoch)
    store.save(7, state(10, 4.0))
    store.path(7).write_bytes(b"")
    store.stable_path(7, 3).unlink()  # a hard link: damaging one damages both, so drop it
    store.stable_path(7, 2).write_bytes(b"junk")

    loaded = store.load(7)
    assert loaded is not None and torch.equal(loaded["w"], state(10, 1.0)["w"])
    assert store.stable_path(7, 2).read_bytes() == b"junk"  # a branch's to judge: left as is
    assert warnings[-1] == "trial 7 resumes from its kept checkpoint of epoch 1"


def test_an_interrupted_write_leaves_no_temporary_file_and_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path, "s")
    store.save(1, state(10))
    with pytest.raises(TypeError):  # a lock cannot be pickled: the write stops half done
        store.save(1, {"w": state(10)["w"], "lock": threading.Lock()})
    assert [p.name for p in store.dir.iterdir()] == ["trial-1.pt"]
    assert torch.equal(store.load(1)["w"], state(10)["w"])


def test_an_unsynced_save_writes_the_same_checkpoint_without_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command trial's replay checkpoint, saved on every report, skips the two syncs
    (a machine crash cannot be staged here: the syncs are counted)."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store = CheckpointStore(tmp_path, "s")
    store.save(1, state(10, 2.0), sync=False)
    assert synced == [] and torch.equal(store.load(1)["w"], state(10, 2.0)["w"])
    assert [p.name for p in store.dir.iterdir()] == ["trial-1.pt"]
    store.save(1, state(10, 3.0))
    assert len(synced) == 2  # the file, then its folder


def test_unwritable_names_a_read_only_file_system_and_writes_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as root:
        assert unwritable(root / "a" / "b") == "Read-only file system"
    writable = tmp_path / "new" / "artifacts"
    assert unwritable(writable) is None
    assert list(tmp_path.iterdir()) == [tmp_path / "ro"]  # nothing created by the probe
