"""A branch trial started from its trunk's stable-phase checkpoint trains the curve of the
same schedule trained from scratch (`objectives.trunks`), by the portable method: float64,
to `equivalence.REL`, on the README's CNN with BatchNorm and dropout."""

from __future__ import annotations

from typing import Any

import pytest
from test_task import DROPOUT, SGD, TASK

from equivalence import Recorder, alone, assert_same_curves
from objectives.trunks import Branch, Trunk

EPOCHS = 4  # of 6 steps (96 images, batch 16): 24 steps, 21 after the warmup
WSD = {**SGD, "batch_size": 16, "schedule": "wsd", "wsd.warmup_steps": 3, "wsd.min_lr": 0.0}
# The trunk decays over the last half of its 21 steps: its lr holds for 3 + 10.5 steps, so
# its checkpoints after epochs 1 and 2 (6 and 12 steps) are stable.
TRUNK = {**WSD, "wsd.decay_fraction": 0.5, "wsd.decay_shape": "linear"}
# A branch holds its lr for 3 + 15.75 steps (3 whole epochs): it starts from epoch 2.
BRANCH = {**WSD, "wsd.decay_fraction": 0.25, "wsd.decay_shape": "cosine"}


class KeptCheckpoints:
    """A trunk's kept checkpoints, in memory."""

    def __init__(self, seed: int) -> None:
        self.saved: dict[int, dict[str, Any]] = {}
        self.done_after: list[int] = []  # the epochs kept when `done` was called
        self.trunk = Recorder(TRUNK, seed, EPOCHS, args=DROPOUT, trunk=Trunk(self.keep, self.done))

    def keep(self, epoch: int) -> None:
        assert self.trunk.saved is not None
        self.saved[epoch] = self.trunk.saved  # its checkpoint of that epoch, just saved

    def done(self) -> None:
        self.done_after.append(max(self.saved))


def trunk_checkpoints(seed: int) -> KeptCheckpoints:
    kept = KeptCheckpoints(seed)
    TASK(kept.trunk.run)
    return kept


@pytest.mark.usefixtures("float64")
def test_a_branch_from_its_trunks_checkpoint_equals_the_schedule_trained_from_scratch() -> None:
    kept = trunk_checkpoints(seed=7)
    # Done with epoch 2's checkpoint, and again with epoch 3's (the last is not saved).
    assert sorted(kept.saved) == [1, 2] and kept.done_after == [2, 2]
    branch = Recorder(
        BRANCH, 7, EPOCHS, args=DROPOUT, branch=Branch(sorted(kept.saved), kept.saved.get)
    )
    TASK(branch.run)
    branch.run.flush()
    assert branch.run.branched_at == 2
    assert_same_curves(branch, alone(TASK, BRANCH, 7, EPOCHS, args=DROPOUT))


@pytest.mark.usefixtures("float64")
def test_the_check_fails_a_branch_that_started_from_another_seeds_trunk() -> None:
    kept = trunk_checkpoints(seed=8)
    branch = Recorder(
        BRANCH, 7, EPOCHS, args=DROPOUT, branch=Branch(sorted(kept.saved), kept.saved.get)
    )
    TASK(branch.run)
    branch.run.flush()
    with pytest.raises(AssertionError):
        assert_same_curves(branch, alone(TASK, BRANCH, 7, EPOCHS, args=DROPOUT))


def test_a_branch_whose_cooldown_starts_before_every_kept_epoch_trains_from_scratch() -> None:
    assert Branch([2, 3], lambda e: None).start(stable_epochs=1) is None
    assert Branch([2, 3], lambda e: None).start(stable_epochs=5) == 3
