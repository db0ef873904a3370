"""The command trials one worker runs at once: one per slot (a share of its GPUs, or the
whole machine), each in a thread of its own that follows its command to the end.

It has the face of `objectives.Pool` (`join`, `train_epoch`), so the worker's loop is the same
for both: trials join free slots, and each round returns the trials that ended, freeing their
slots for the next claims.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from objectives.command.trial import Command
from objectives.run import Outcome, Run, outcome_of

ROUND_SECONDS = 1.0  # longest a round waits for a trial to end (the worker has other work)


class CommandPool:
    cannot_stack: str | None = None  # the same attribute as `objectives.Pool`'s

    def __init__(
        self,
        command: Command,
        *,
        logs: Path,
        slots: Sequence[Mapping[str, str]] = ({},),
        hidden: Collection[str] = (),
    ) -> None:
        """``slots``: the environment each concurrent trial adds (its
        ``CUDA_VISIBLE_DEVICES``); ``logs``: where each trial's output goes
        (``trial-<number>.log``); ``hidden``: what ``{args}`` leaves out."""
        self.command = command
        self.logs = logs
        self.hidden = hidden
        self.free = list(slots)
        self.size = len(slots)
        self._ended: queue.Queue[tuple[Run, Outcome, Mapping[str, str]]] = queue.Queue()

    def __len__(self) -> int:
        return self.size - len(self.free)

    def join(self, runs: Sequence[Run]) -> list[tuple[Run, Exception]]:
        """Start each of ``runs`` in a free slot (the worker claims no more than are free)."""
        for run in runs:
            slot = self.free.pop(0)
            threading.Thread(
                target=self._follow,
                args=(run, slot),
                name=f"trial-{run.trial.number}",
                daemon=True,
            ).start()
        return []

    def _follow(self, run: Run, slot: Mapping[str, str]) -> None:
        log = self.logs / f"trial-{run.trial.number}.log"
        try:
            ended = outcome_of(
                run, lambda r: self.command(r, log=log, env=slot, hidden=self.hidden)
            )
        except BaseException as e:  # never lose a slot: the worker learns how it ended
            ended = e
        self._ended.put((run, ended, slot))

    def train_epoch(self) -> list[tuple[Run, Outcome]]:
        """The trials that ended since the last call, waiting up to `ROUND_SECONDS` for one."""
        try:
            first = self._ended.get(timeout=ROUND_SECONDS)
        except queue.Empty:
            return []
        ended = [first]
        while not self._ended.empty():
            ended.append(self._ended.get_nowait())
        for _, _, slot in ended:
            self.free.append(slot)
        return [(run, outcome) for run, outcome, _ in ended]
