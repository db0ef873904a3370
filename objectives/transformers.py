"""Sweep the schedule of a Hugging Face ``transformers.Trainer`` model with one call: `train`.

    from objectives.transformers import train

    def objective(run) -> float:
        return train(run, lambda: MyModel(MyConfig(**run.args)), train_dataset=train_set,
                     eval_dataset=val_set, compute_metrics=accuracy, monitor="accuracy")

The trial's optimizer and schedule replace the Trainer's (`Trainer.create_optimizer` and
`Trainer.create_scheduler`, given the exact number of training steps); the batch size is the
trial's. Each training step's lr, loss and gradient norm go to the trial's curves; each
epoch's evaluation is reported, and pruning raises out of ``Trainer.train``. The Trainer's
own checkpoint folder (model, optimizer, schedule, RNG states) is saved each epoch in the
trial's checkpoint folder, and a retry after a kill, or a trial handed back on SIGTERM,
continues with ``resume_from_checkpoint``.

Needs the ``transformers`` extra: ``pip install 'lr-sweeps[transformers]'``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

import schedules
from objectives.run import Run

CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's own folder names: checkpoint-<step>


def train(
    run: Run,
    model: nn.Module | Callable[[], nn.Module],
    *,
    monitor: str,
    training_args: dict[str, Any] | None = None,
    **trainer_options: Any,
) -> float:
    """Train ``model`` for ``run.epochs`` epochs with the trial's optimizer, schedule and
    batch size; return the last evaluation's ``monitor`` (``accuracy`` or
    ``eval_accuracy``: a key of ``compute_metrics``' result, or ``loss``).

    ``model`` is best given as a function that builds it: it is then built after seeding
    torch with the trial's seed. ``training_args`` override `TrainingArguments` fields
    (``gradient_accumulation_steps``, ``max_grad_norm``, ...); lr-sweeps sets the epochs,
    the batch size, evaluation and saving each epoch, the seed and the device.
    ``trainer_options`` go to the Trainer (``train_dataset``, ``eval_dataset``,
    ``data_collator``, ``compute_metrics``, more ``callbacks``, ...).
    """
    transformers.set_seed(run.seed)
    # No progress bars, huggingface_hub's included (saving a checkpoint draws "Writing
    # model shards"): in a worker's log they are lines of noise. `disable_tqdm` below
    # covers the Trainer's own.
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    module = model() if not isinstance(model, nn.Module) else model
    scratch = None if run.saves_checkpoints else tempfile.mkdtemp(prefix="sweeps-trainer-")
    args = transformers.TrainingArguments(
        **{
            "output_dir": scratch or str(run.checkpoint_dir),
            "num_train_epochs": run.epochs,
            "per_device_train_batch_size": int(run.params["batch_size"]),
            "eval_strategy": "epoch",
            "save_strategy": "epoch" if scratch is None else "no",
            "logging_strategy": "no",  # the trial's curves are logged by `_TrialTrainer`
            "report_to": "none",
            "disable_tqdm": True,
            "seed": run.seed,
            "use_cpu": run.device.type == "cpu",
            **(training_args or {}),
        }
    )
    reporter = _Reporter(run, monitor)
    trainer = _TrialTrainer(
        run,
        model=module,
        args=args,
        **{**trainer_options, "callbacks": [reporter, *trainer_options.get("callbacks", [])]},
    )
    trainer.remove_callback(transformers.PrinterCallback)  # its log lines are in the curves
    saved = run.load_checkpoint()
    resume = run.checkpoint_dir / saved["transformers"] if saved else None
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume and resume.exists() else None)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if reporter.last is None:
        raise RuntimeError(f"monitor: {monitor!r}: the Trainer never evaluated")
    return reporter.last


class _TrialTrainer(transformers.Trainer):
    """A Trainer with the trial's optimizer and schedule, logging the trial's step curve."""

    def __init__(self, run: Run, **kwargs: Any) -> None:
        self.run = run
        super().__init__(**kwargs)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            module = model or self.model
            assert module is not None
            self.optimizer = self.run.optimizer(module.parameters())
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            assert optimizer is not None
            scheduler = self.run.scheduler(optimizer, total_steps=num_training_steps)
            self.lr_scheduler = scheduler  # type: ignore[assignment]
            return scheduler
        return self.lr_scheduler

    def training_step(self, model: nn.Module, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(model, inputs, *args, **kwargs)
        step = self.state.global_step  # before this step's update: its lr is set, grads too
        if self.run.wants_step(step) and self.optimizer is not None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            )
            self.run.log_step(
                step,
                lr=float(self.optimizer.param_groups[0]["lr"]),
                loss=float(loss),
                grad_norm=float(norm) if grads else None,
            )
        return loss


class _Reporter(transformers.TrainerCallback):
    """Reports each evaluation; records each saved checkpoint as the trial's."""

    def __init__(self, run: Run, monitor: str) -> None:
        self.run = run
        self.monitor = monitor
        self.last: float | None = None

    def on_evaluate(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        metrics = metrics or {}
        key = self.monitor if self.monitor in metrics else f"eval_{self.monitor}"
        if key not in metrics:
            raise ValueError(
                f"monitor: {self.monitor!r} is not among the evaluation's metrics "
                f"({', '.join(sorted(metrics)) or 'none'})"
            )
        value = float(metrics[key])
        # accelerate may wrap the scheduler: ours is then its `.scheduler`
        scheduler = getattr(kwargs.get("lr_scheduler"), "scheduler", kwargs.get("lr_scheduler"))
        if isinstance(scheduler, schedules.ScheduleLR) and scheduler.schedule.metric_driven:
            scheduler.step(value)  # plateau: fed the validation metric once an epoch
        self.last = value
        self.run.report(value, round(state.epoch or 0))  # raises TrialPruned out of train()

    def on_save(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        folder = f"{CHECKPOINT_PREFIX}{state.global_step}"
        try:
            self.run.save_checkpoint({"transformers": folder})  # HandBack when stopping
        finally:  # the trial's checkpoint names this folder now: the older ones can go
            for old in Path(str(args.output_dir)).glob(f"{CHECKPOINT_PREFIX}*"):
                if old.name != folder:
                    shutil.rmtree(old, ignore_errors=True)


__all__ = ["train"]
