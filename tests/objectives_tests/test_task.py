"""A user's own task (`objectives.Task`) gets what the built-in tasks get: stacked training
equal to training alone (a CNN with BatchNorm, its running statistics per trial; dropout
masks of each trial's own), exact resume from a checkpoint, data as tensors or as a batch
source, and a model vmap cannot batch found by a probe and trained one at a time.

Equivalence is checked in float64, to `equivalence.REL` (`conftest.py` says why).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import objectives
from equivalence import (
    Preempted,
    Recorder,
    alone,
    assert_same_curves,
    preempt_after,
    stacked_and_alone,
)
from objectives import Pool, Split, train_stack
from objectives.func_model import FuncModel

EXAMPLE = Path(__file__).parents[2] / "examples" / "shapes_task.py"
_spec = importlib.util.spec_from_file_location("shapes_task", EXAMPLE)
assert _spec is not None and _spec.loader is not None
shapes_task = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_task)


# The README's example task on few small images, for quick tests: 96 of 8x8 pixels to train
# (3 steps of 32 an epoch), 32 to validate. Every check below compares curves step by step,
# and a trial that gets another's masks, statistics or state leaves its curve at once.
SIZE = 8


class SmallShapes(shapes_task.ShapesTask):  # type: ignore[misc, name-defined]
    """The README's example task on fewer, smaller images."""

    image_size = SIZE

    def data(self, device: torch.device) -> Split:
        return Split(
            *shapes_task.shapes(96, seed=1, size=SIZE), *shapes_task.shapes(32, seed=2, size=SIZE)
        )


TASK = SmallShapes()
SGD = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
ADAMW = {"optimizer": "adamw", "lr": 0.003, "beta1": 0.9, "beta2": 0.99, "weight_decay": 1e-2}
SETTINGS = [
    {**SGD, "batch_size": 32, "schedule": "cosine", "cosine.warmup_steps": 3},
    {**ADAMW, "batch_size": 32, "schedule": "onecycle", "onecycle.pct_start": 0.5},
    {
        **SGD,
        "batch_size": 32,
        "schedule": "grad_norm",
        "grad_norm.window": 2,
        "grad_norm.max_ratio": 4.0,
    },
]
ARGS = {"width": 4, "dropout": 0.0}
DROPOUT = {"width": 4, "dropout": 0.5}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("args", [ARGS, DROPOUT], ids=["batchnorm", "batchnorm_and_dropout"])
def test_a_user_cnn_stacked_equals_the_same_cnn_trained_alone(args: dict[str, Any]) -> None:
    """Each trial's init, data order, schedule, optimizer, gradient norm, BatchNorm
    statistics (the validation metric reads them) and dropout masks are its own."""
    results = stacked_and_alone(TASK, SETTINGS, epochs=2, args=args)
    for stacked, single, outcome in results:
        assert isinstance(outcome, float)
        assert_same_curves(stacked, single)
        assert len({point["lr"] for point in single.steps}) > 1  # each schedule shows


@pytest.mark.usefixtures("float64")
def test_dropout_is_deterministic_and_each_trials_own() -> None:
    settings = SETTINGS[:1] * 2
    first, again = (stacked_and_alone(TASK, settings, 1, args=DROPOUT) for _ in range(2))
    for (a, _, _), (b, _, _) in zip(first, again, strict=True):
        assert [p["train_loss"] for p in a.steps] == [p["train_loss"] for p in b.steps]
    # Same parameters, other seeds: other masks (and inits); without dropout, other curves.
    (one, _, _), (two, _, _) = first
    assert one.steps[0]["train_loss"] != two.steps[0]["train_loss"]
    without = alone(TASK, settings[0], 0, 1, args={**DROPOUT, "dropout": 0.0})
    assert without.steps[1]["train_loss"] != one.steps[1]["train_loss"]


@pytest.mark.usefixtures("float64")
def test_the_check_fails_a_stack_whose_rows_share_dropout_masks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = FuncModel.set_dropout

    def first_rows_masks(self: FuncModel, seeds: list[int], steps: list[int]) -> None:
        original(self, [seeds[0]] * len(seeds), steps)

    monkeypatch.setattr(FuncModel, "set_dropout", first_rows_masks)
    results = stacked_and_alone(TASK, SETTINGS, 1, args=DROPOUT)
    failed = 0
    for stacked, single, _ in results:  # all but the first row's trial have others' masks
        try:
            assert_same_curves(stacked, single)
        except AssertionError:
            failed += 1
    assert failed == len(SETTINGS) - 1


@pytest.mark.usefixtures("float64")
def test_a_stacked_user_task_resumes_from_its_checkpoints_as_if_never_stopped() -> None:
    """Preempted after epoch 1; each trial resumes alone from its stacked checkpoint
    (model with BatchNorm buffers, optimizer, scheduler, data order)."""
    full = [alone(TASK, p, i, 2, args=DROPOUT) for i, p in enumerate(SETTINGS)]
    stacked = [Recorder(p, seed=i, epochs=2, args=DROPOUT) for i, p in enumerate(SETTINGS)]
    preempt_after(stacked, epoch=1)
    with pytest.raises(Preempted):
        train_stack(TASK, [r.run for r in stacked])
    for i, params in enumerate(SETTINGS):
        saved = stacked[i].saved
        assert saved is not None and any("running_mean" in k for k in saved["user"]["model"])
        resumed = Recorder(params, seed=i, epochs=2, args=DROPOUT)
        resumed.saved = saved
        TASK(resumed.run)
        resumed.run.flush()
        assert_same_curves(resumed, full[i])


class Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot batch ``if`` on a tensor's value."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out * 2 if x.mean() > 0.5 else out


class BranchyTask(SmallShapes):
    def model(self, args: dict[str, Any]) -> nn.Module:
        return Branchy()


@pytest.mark.usefixtures("float64")
def test_a_model_vmap_cannot_batch_is_found_by_a_probe_and_trains_one_at_a_time() -> None:
    task = BranchyTask()
    recorders = [Recorder(p, seed=i, epochs=2) for i, p in enumerate(SETTINGS)]
    pool = Pool(task)
    assert pool.join([r.run for r in recorders]) == []
    assert pool.cannot_stack is not None
    assert pool.cannot_stack.startswith("BranchyTask cannot be stacked (RuntimeError: ")
    assert "\n" not in pool.cannot_stack
    assert len(pool.stacks) == 3  # a stack of one each
    ended = pool.train_epoch() + pool.train_epoch()
    assert [isinstance(outcome, float) for _, outcome in ended] == [True] * 3
    for i, rec in enumerate(recorders):
        rec.run.flush()
        assert_same_curves(rec, alone(task, SETTINGS[i], i, 2))


def test_a_stackable_task_passes_the_probe() -> None:
    pool = Pool(TASK)
    runs = [Recorder(p, seed=i, epochs=1, args=DROPOUT).run for i, p in enumerate(SETTINGS)]
    assert pool.join(runs) == []
    assert pool.cannot_stack is None and len(pool.stacks) == 1


class ShapesSource:
    """A `objectives.BatchSource`: batches served one at a time, as from files."""

    def __init__(self) -> None:
        self.x, self.y = shapes_task.shapes(96, seed=3, size=SIZE)
        self.x = self.x.to(torch.get_default_dtype())

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.y) // batch_size)

    def train_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.y), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield self.x[index], self.y[index]

    def val_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, 32, batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]


class StreamedShapes(shapes_task.ShapesTask):  # type: ignore[misc, name-defined]
    def data(self, device: torch.device) -> ShapesSource:
        return ShapesSource()


@pytest.mark.usefixtures("float64")
def test_a_batch_source_task_stacks_and_resumes() -> None:
    task = StreamedShapes()
    assert isinstance(task.data(torch.device("cpu")), objectives.BatchSource)
    for stacked, single, outcome in stacked_and_alone(task, SETTINGS, epochs=2, args=ARGS):
        assert isinstance(outcome, float)
        assert_same_curves(stacked, single)
    first = Recorder(SETTINGS[0], seed=0, epochs=2, args=ARGS)
    preempt_after([first], epoch=1)
    with pytest.raises(Preempted):
        task(first.run)
    resumed = Recorder(SETTINGS[0], seed=0, epochs=2, args=ARGS)
    resumed.saved = first.saved
    task(resumed.run)
    resumed.run.flush()
    assert_same_curves(resumed, alone(task, SETTINGS[0], 0, 2, args=ARGS))


def test_data_that_is_neither_tensors_nor_a_source_is_a_clear_error() -> None:
    class Wrong(SmallShapes):
        def data(self, device: torch.device) -> Any:
            return [1, 2, 3]

    rec = Recorder(SETTINGS[0], seed=0, epochs=1, args=ARGS)
    with pytest.raises(TypeError, match=r"Wrong.data\(device\) must return objectives.Split"):
        Wrong()(rec.run)


def test_a_task_class_resolves_from_the_config(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "mine.py").write_text(EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)
    task = objectives.resolve("mine:ShapesTask")
    assert isinstance(task, objectives.Task) and task.name == "ShapesTask"
    assert objectives.cannot_stack("mine:ShapesTask") is None
