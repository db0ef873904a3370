"""The lr range test (Smith 2015, "Cyclical Learning Rates"; fastai's ``lr_find``,
Lightning's ``Tuner.lr_find``): train a fresh model while the lr grows exponentially, one
step per lr, and read off where the loss falls fastest and where it stops falling.

The raw loss is noisy and a single spike can fool a finder that reads it directly (the
known complaint about Lightning's): here the loss is first median-filtered (a spike
shorter than half the window vanishes), then smoothed with a moving average run both ways
(no lag), and the slope is taken over a window of steps rather than between neighbours.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from objectives.data import Split
from objectives.feed import task_data
from objectives.run import Run
from objectives.task import BatchSource, Task

MEDIAN = 9  # steps in the median filter: removes spikes of up to 4 steps
BETA = 0.8  # moving-average decay of the smoothed loss (each way)
SLOPE = 10  # steps over which the slope of the smoothed loss is measured
DIVERGED = 4.0  # the test stops once the recent median loss exceeds this many times its minimum


@dataclass(frozen=True)
class RangeTest:
    """One optimizer's test: every lr tried and the loss at it, raw and smoothed."""

    optimizer: str
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    steepest: float  # the lr where the smoothed loss falls fastest (per log-lr)
    lowest: float  # the lr where the smoothed loss is lowest, before it diverges

    @property
    def suggested(self) -> tuple[float, float]:
        """A log range for the search: a decade below the steepest descent, up to the
        lowest loss (where larger lrs stop helping)."""
        return self.steepest / 10, max(self.lowest, self.steepest)


def run_test(
    task: Task,
    params: dict[str, Any],
    *,
    args: dict[str, Any],
    steps: int,
    min_lr: float,
    max_lr: float,
    seed: int = 0,
) -> RangeTest:
    """Train ``task``'s model from a fresh init with the optimizer of ``params`` (its lr
    replaced) for up to ``steps`` steps, the lr growing from ``min_lr`` to ``max_lr``."""
    run = Run(None, params, seed=seed, epochs=1, args=args)  # type: ignore[arg-type]
    model = task.build(run)
    data = task_data(task, torch.device("cpu"), torch.get_default_dtype())
    optimizer = run.optimizer(model.parameters())
    growth = (max_lr / min_lr) ** (1 / max(1, steps - 1))
    feed = _random_batches(data, int(params["batch_size"]), seed)
    model.train()
    lrs: list[float] = []
    losses: list[float] = []
    lowest = math.inf  # of the recent median, the spike-proof level the test stops on
    for step in range(steps):
        lr = min_lr * growth**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(feed)
        loss = task.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        value = float(loss.detach())
        lrs.append(lr)
        losses.append(value if math.isfinite(value) else math.inf)
        recent = statistics.median(losses[-MEDIAN:])
        lowest = min(lowest, recent)
        if not math.isfinite(value) or (step > SLOPE and recent > DIVERGED * lowest):
            break
    return analyse(str(params["optimizer"]), lrs, losses)


def _random_batches(
    data: Split | BatchSource, batch: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches without end, in an order drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        if isinstance(data, Split):
            index = torch.randint(0, len(data.x_train), (batch,), generator=generator)
            yield data.x_train[index], data.y_train[index]
        else:
            yield from data.train_batches(batch, generator)


def smooth(losses: Sequence[float]) -> list[float]:
    """Median filter, then a bias-corrected moving average run forwards and backwards: a
    one-way average lags, and would put the steepest descent at too large an lr."""
    half = MEDIAN // 2
    filtered = [
        statistics.median(losses[max(0, i - half) : i + half + 1]) for i in range(len(losses))
    ]
    return _average(_average(filtered)[::-1])[::-1]


def _average(values: Sequence[float]) -> list[float]:
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = BETA * average + (1 - BETA) * value
        out.append(average / (1 - BETA**i))
    return out


def analyse(optimizer: str, lrs: list[float], losses: list[float]) -> RangeTest:
    """Find the steepest descent and the lowest point of the smoothed loss."""
    smoothed = smooth(losses)
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) <= 2 * SLOPE:
        raise ValueError(f"{optimizer}: the loss diverged at once; lower --min-lr")
    lowest = min(finite, key=lambda i: smoothed[i])
    # Slope per unit of log lr, over SLOPE steps, up to the lowest point.
    slopes = {
        i: (smoothed[i + SLOPE] - smoothed[i]) / math.log(lrs[i + SLOPE] / lrs[i])
        for i in range(max(1, len(finite) // 10), max(1, lowest - SLOPE))
    }
    steepest = min(slopes, key=lambda i: slopes[i]) + SLOPE // 2 if slopes else lowest
    return RangeTest(optimizer, lrs, losses, smoothed, lrs[steepest], lrs[lowest])
