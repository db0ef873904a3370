"""Sweep the schedule of a Lightning model with one call: `fit`.

    from objectives.lightning import fit

    def objective(run) -> float:
        return fit(run, lambda: MyModule(**run.args), datamodule=MyData(), monitor="val_acc")

The user's `LightningModule` is not edited: its ``configure_optimizers`` is replaced, on
this instance only, by the trial's optimizer and schedule (stepped after every optimizer
step). A callback logs each step's lr, loss and gradient norm to the trial's curves,
reports the monitored validation metric after each epoch (pruning raises out of
``Trainer.fit``, which Lightning lets through after its teardown), and saves Lightning's own
checkpoint into the trial's checkpoint folder, so a retry after a kill, or a trial handed
back on SIGTERM, resumes with ``ckpt_path``: model, optimizer, schedule and loop state,
loaded weights-only (tensors and plain data: no pickled code runs).

Needs the ``lightning`` extra: ``pip install 'lr-sweeps[lightning]'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch

import schedules
from objectives.run import Run

CHECKPOINT = "lightning-epoch{epoch}.ckpt"  # in `Run.checkpoint_dir`
HYPER_PARAMETERS = [  # what Lightning saves of the module's and the data module's hparams
    getattr(holder, key)
    for holder in (pl.LightningModule, pl.LightningDataModule)
    for key in (
        "CHECKPOINT_HYPER_PARAMS_KEY",
        "CHECKPOINT_HYPER_PARAMS_NAME",
        "CHECKPOINT_HYPER_PARAMS_TYPE",
    )
]


def fit(
    run: Run,
    model: pl.LightningModule | Callable[[], pl.LightningModule],
    *,
    monitor: str,
    datamodule: pl.LightningDataModule | None = None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    **trainer_options: Any,
) -> float:
    """Train ``model`` for ``run.epochs`` epochs with the trial's optimizer and schedule;
    return the last value of ``monitor`` (a metric the module logs in validation).

    ``model`` is best given as a function that builds it: it is then built after seeding
    torch with the trial's seed, so a trial's initialisation is its own and repeatable.
    ``trainer_options`` go to ``lightning.pytorch.Trainer`` (``gradient_clip_val``,
    ``precision``, more ``callbacks``, ...); lr-sweeps sets the epochs, the device, and turns
    off Lightning's own logger, checkpointing and progress bar.
    """
    pl.seed_everything(run.seed, workers=True, verbose=False)
    module = model if isinstance(model, pl.LightningModule) else model()
    reporter = _Reporter(run, monitor)
    # This instance only: the user's class keeps its own configure_optimizers.
    module.configure_optimizers = lambda: _trial_optimizer(run, module)  # type: ignore[method-assign,assignment,return-value]
    trainer = pl.Trainer(
        max_epochs=run.epochs,
        accelerator="gpu" if run.device.type == "cuda" else "cpu",
        devices=[run.device.index or 0] if run.device.type == "cuda" else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **{**trainer_options, "callbacks": [reporter, *trainer_options.get("callbacks", [])]},
    )
    saved = run.load_checkpoint()
    resume = run.checkpoint_dir / saved["lightning"] if saved else None
    trainer.fit(
        module,
        train_dataloaders=train_dataloaders,
        val_dataloaders=val_dataloaders,
        datamodule=datamodule,
        ckpt_path=resume if resume is not None and resume.exists() else None,
        # Tensors and plain data only: the checkpoint folder is shared by every worker (a
        # volume), and a pickle put there would run its code in each worker that resumed.
        weights_only=True,
    )
    if reporter.last is None:
        raise RuntimeError(f"monitor: {monitor!r} was never logged in validation")
    return reporter.last


def _trial_optimizer(run: Run, module: pl.LightningModule) -> dict[str, Any]:
    optimizer = run.optimizer(module.parameters())
    total_steps = int(module.trainer.estimated_stepping_batches)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": run.scheduler(optimizer, total_steps=total_steps),
            "interval": "step",
        },
    }


class _Reporter(pl.Callback):
    """The trial's side of training: curves, per-epoch reports, checkpoints."""

    def __init__(self, run: Run, monitor: str) -> None:
        self.run = run
        self.monitor = monitor
        self.last: float | None = None
        self._lr = math.nan
        self._grad_norm: float | None = None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._lr = float(optimizer.param_groups[0]["lr"])  # the lr this step applies
        if self.run.wants_step(trainer.global_step):
            grads = [
                p.grad
                for group in optimizer.param_groups
                for p in group["params"]
                if p.grad is not None
            ]
            self._grad_norm = (
                float(
                    torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g) for g in grads])
                    )
                )
                if grads
                else None
            )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step - 1  # the optimizer step just taken
        if step < 0 or not self.run.wants_step(step):
            return
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        self.run.log_step(
            step,
            lr=self._lr,
            loss=float(loss) if loss is not None else None,
            grad_norm=self._grad_norm,
        )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # The objective builds the module anew to resume, so its hyper-parameters are not
        # needed; kept, they could be any Python object, which a weights-only load refuses.
        for key in HYPER_PARAMETERS:
            checkpoint.pop(key, None)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise ValueError(
                f"monitor: {self.monitor!r} is not logged by the module (logged: {logged})"
            )
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch + 1
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        if isinstance(scheduler, schedules.ScheduleLR) and scheduler.schedule.metric_driven:
            scheduler.step(value)  # plateau: fed the validation metric once an epoch
        self.last = value
        self.run.report(value, epoch)  # raises TrialPruned: Lightning lets it through
        if self.run.saves_checkpoints:
            path = self.run.checkpoint_dir / CHECKPOINT.format(epoch=epoch)
            trainer.save_checkpoint(path, weights_only=False)  # all of it, to resume
            try:
                self.run.save_checkpoint({"lightning": path.name})  # HandBack when stopping
            finally:  # the trial's checkpoint names this file now: the older ones can go
                for old in self.run.checkpoint_dir.glob(CHECKPOINT.format(epoch="*")):
                    if old != path:
                        old.unlink(missing_ok=True)


__all__ = ["fit"]
