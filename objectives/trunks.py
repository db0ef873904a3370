"""Trunks and branches: trials that differ only in their cooldown train its stable phase once.

A schedule with a cooldown (`schedules.Schedule.COOLDOWN`, e.g. ``wsd``) holds its lr until
`stable_steps`. A *trunk* run keeps its checkpoints from that stable phase. A *branch* run
has the trunk's parameters except the cooldown's, and the trunk's seed: it starts from the
trunk's last kept checkpoint before its own cooldown begins, with the trunk's reports and
curves up to there, and trains only the rest. Every step before that checkpoint is the
step the branch would have trained itself (same init, data order, dropout masks,
optimizer and lr), so its curve equals the same schedule trained from scratch.

The worker decides which trials are trunks and branches and where checkpoints live
(`sweeps.branches`); the trainer (`objectives.train`) calls these hooks through `Run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trunk:
    """A trunk run's hooks: ``keep(epoch)`` is called once the run's checkpoint of that
    epoch is saved, for each epoch of the stable phase (keep a copy of it); ``done()`` with
    the last one (the next epoch reaches the cooldown) and with every checkpoint after it,
    so a trunk resumed past its stable phase still says it is over."""

    keep: Callable[[int], None]
    done: Callable[[], None]


@dataclass(frozen=True)
class Branch:
    """Where a branch run may start: the epochs its trunk kept, and ``load(epoch)``."""

    epochs: Sequence[int]
    load: Callable[[int], dict[str, Any] | None]

    def start(self, stable_epochs: int) -> int | None:
        """The latest kept epoch within the branch's own stable phase (``stable_epochs``
        whole epochs), or None: then the branch trains from scratch."""
        usable = [e for e in self.epochs if e <= stable_epochs]
        return max(usable) if usable else None
