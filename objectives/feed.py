"""A task's data as a stack sees it: per epoch, each step's batches for all rows at once
(``[K, B, ...]``), each row in its own trial's order; and the validation data.

Tensors (`Split`) are indexed directly, every row's batch in one gather: no DataLoader for
data in memory. A `BatchSource` is read one iterator per row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import torch

from objectives.data import Split
from objectives.task import Batch, BatchSource, Task

Data = Split | BatchSource


@functools.cache
def task_data(task: Task, device: torch.device, dtype: torch.dtype) -> Data:
    """``task.data(device)``, once per task, device and dtype: tensors with float inputs in
    ``dtype`` (torch's default, float64 in the equivalence tests)."""
    data = task.data(device)
    if isinstance(data, Split):
        return data.to(device, dtype)
    if not isinstance(data, BatchSource):
        raise TypeError(
            f"{task.name}.data(device) must return objectives.Split or a BatchSource, "
            f"got {type(data).__name__}"
        )
    return data


def steps_per_epoch(data: Data, batch_size: int) -> int:
    if isinstance(data, Split):
        return math.ceil(len(data.y_train) / batch_size)
    return int(data.steps_per_epoch(batch_size))


class EpochFeed:
    """One epoch's training batches for the rows of a stack."""

    def __init__(self, data: Data, batch_size: int, generators: Sequence[torch.Generator]) -> None:
        self.data, self.batch_size = data, batch_size
        if isinstance(data, Split):
            n = len(data.y_train)
            order = torch.stack([torch.randperm(n, generator=g) for g in generators])
            self.order: torch.Tensor | None = order.to(data.y_train.device)
        else:
            self.order = None
            self.iterators = [data.train_batches(batch_size, g) for g in generators]

    def batch(self, i: int) -> Batch:
        """Step ``i``'s batches, stacked by row."""
        if self.order is not None:
            assert isinstance(self.data, Split)
            idx = self.order[:, i * self.batch_size : (i + 1) * self.batch_size]
            return self.data.x_train[idx], self.data.y_train[idx]
        xs, ys = zip(*(next(it) for it in self.iterators), strict=True)
        return torch.stack(xs), torch.stack(ys)

    def select(self, kept: torch.Tensor) -> None:
        """Keep only the rows at ``kept`` (the others left the stack)."""
        if self.order is not None:
            self.order = self.order[kept]
        else:
            self.iterators = [self.iterators[i] for i in kept.tolist()]


def val_batches(data: Data, size: int) -> Iterator[Batch]:
    """The validation data in pieces of ``size`` examples."""
    if isinstance(data, Split):
        for start in range(0, len(data.y_val), size):
            yield data.x_val[start : start + size], data.y_val[start : start + size]
    else:
        yield from data.val_batches(size)
