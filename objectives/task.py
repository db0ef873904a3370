"""`Task`: your own model and data, trained by lr-sweeps.

Write what is yours; lr-sweeps trains it with the trial's optimizer and schedule, reports
every epoch (pruning), stops a diverged trial, checkpoints every epoch (model, optimizer,
scheduler, data order) and resumes exactly, logs curves, hands trials back on SIGTERM, and
stacks K trials into one model (``--stack K``, `objectives.train`)::

    class MyTask(objectives.Task):
        direction = "maximize"                  # of `metric`, on the validation data

        def model(self, args):                  # torch is seeded with the trial's seed
            return MyNet(width=args.get("width", 64))

        def data(self, device):                 # tensors, or a `BatchSource`
            return objectives.Split(x_train, y_train, x_val, y_val)

        # optional: loss(output, target) -> scalar (default: cross-entropy),
        #           metric(output, target) -> scalar (default: accuracy),
        #           args = {"width": Param(int, "channels", low=1, default=64)}: the
        #           arguments model() takes, checked when the config is (`objectives.args`)

    # config: objective: mypkg.tasks:MyTask

A task is also an objective (``task(run) -> float``, one trial). ``def fn(run) -> float``
stays for people who write their own loop (`objectives.run`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported when a task first trains (`sweeps validate` is quick)
    import torch
    from torch import nn

    from objectives.data import Split
    from objectives.run import Run
    from objectives.stacking import Loss
    from schedules import Param

Batch = tuple["torch.Tensor", "torch.Tensor"]


@runtime_checkable
class BatchSource(Protocol):
    """Data too big to hold as tensors, served a batch at a time (on the device).

    Stacking needs equal batch shapes: every batch of an epoch but the last has
    ``batch_size`` examples, the last the same number in every epoch.
    """

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training batches per epoch."""
        ...

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of (input, target) batches, in an order drawn from ``generator`` (the
        trial's own: its state is checkpointed, so a resumed trial sees the same order)."""
        ...

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """The validation data, in a fixed order."""
        ...


class Task:
    """Subclass this, name the class in the config (``objective: package.module:Class``)
    and lr-sweeps trains it. The methods above the line are yours to write."""

    direction: ClassVar[Literal["maximize", "minimize"]] = "maximize"
    metric_name: ClassVar[str] = "metric"  # what `metric` measures, for messages
    # The arguments `model` takes, by name: validation refuses others, and values these
    # do not allow (`objectives.args`). None: any, unchecked.
    args: Mapping[str, Param] | None = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def model(self, args: dict[str, object]) -> nn.Module:
        """A fresh model from the config's ``objective_args`` (with any searched in the
        space's ``args``). torch's generator is seeded with the trial's seed."""
        raise NotImplementedError(f"{self.name}.model(args) is not written")

    def data(self, device: torch.device) -> Split | BatchSource:
        """The training and validation data: a `Split` of tensors (lr-sweeps moves them to
        ``device``, inputs in torch's default dtype), or a `BatchSource` (serving batches on
        ``device``). Called once per worker and device (cached)."""
        raise NotImplementedError(f"{self.name}.data(device) is not written")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean training loss of one model's output for a batch (a scalar)."""
        from objectives.losses import cross_entropy

        return cross_entropy(output, target)

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor | float:
        """The validation metric, over the model's outputs for all validation data."""
        from objectives.losses import accuracy

        return accuracy(output, target)

    # ------------------------------------------------------------------------------------

    def build(self, run: Run) -> nn.Module:
        """The trial's model, initialised from the trial's own seed."""
        import torch

        torch.manual_seed(run.seed)
        return self.model(run.args)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch of the training data."""
        import torch

        from objectives.feed import steps_per_epoch, task_data

        data = task_data(self, torch.device("cpu"), torch.get_default_dtype())
        return steps_per_epoch(data, batch_size)

    def check(self, run: Run) -> None:
        """Raises ValueError when the study optimises the metric the wrong way."""
        if run.direction != self.direction:
            raise ValueError(
                f"direction: {self.name} reports validation {self.metric_name}; "
                f"set direction: {self.direction}"
            )

    def training_loss(self) -> Loss:
        """`loss` as the trainer calls it: the default cross-entropy is the module
        function itself, which hand-batched kernels compute for a whole stack at once."""
        from objectives.losses import cross_entropy

        return cross_entropy if type(self).loss is Task.loss else self.loss

    def __call__(self, run: Run) -> float:
        from objectives.train import train_stack

        (outcome,) = train_stack(self, [run])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
