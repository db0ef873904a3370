"""The torch adapter: one `LRScheduler` that drives an optimizer with any `Schedule`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from schedules._base import ScheduleError

if TYPE_CHECKING:
    from schedules._base import Schedule


class ScheduleLR(LRScheduler):
    """Sets every param group's lr to ``schedule``'s value at the current step.

    ``last_epoch`` counts optimizer steps: after ``n`` calls to `step`, the optimizer runs
    step ``n`` at ``schedule.lr_at(n)``. For adaptive families, `step` first lets the
    schedule observe the step just taken (``grad_norm`` reads the gradients still held by the
    optimizer's parameters, so call it before the next ``zero_grad``).

    `state_dict` holds only plain numbers and lists, plus the schedule's name and parameters
    so that loading a checkpoint made with another schedule fails loudly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.schedule = schedule
        self.state = schedule.initial_state()
        super().__init__(optimizer)

    def get_lr(self) -> list[float | torch.Tensor]:
        lr = self.schedule.lr_in_state(self.state, self.last_epoch)
        return [lr for _ in self.optimizer.param_groups]

    def step(self, metrics: float | None = None) -> None:
        """Advance one optimizer step; with ``metrics``, feed a metric-driven family instead.

        ``scheduler.step(val_loss)`` mirrors torch's ``ReduceLROnPlateau`` and does not advance
        the step count, so a loop may call ``step()`` per batch and ``step(metric)`` per epoch.
        """
        if metrics is not None:
            self.observe(metrics)
            return
        if not self._is_initial:
            done = self.last_epoch - self.schedule.warmup_steps
            if done >= 0:
                self.schedule.observe_step(self.state, done, self.optimizer)
        super().step()

    def seek(self, step: int) -> None:
        """Put a closed-form schedule at optimizer step ``step``, exactly as ``step`` calls
        to `step` would (for trainers that read `Schedule.lr_at` directly)."""
        if not self.schedule.closed_form:
            raise ScheduleError(f"{self.schedule.name}: adaptive, it can only be stepped")
        self.last_epoch = step
        self._step_count = step + 1
        lr = self.schedule.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr for _ in self.optimizer.param_groups]

    def observe(self, metric: float) -> None:
        """Feed a validation metric to a metric-driven family (``plateau``) and apply it now."""
        self.schedule.observe_metric(self.state, float(metric))
        lr = self.schedule.lr_in_state(self.state, self.last_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}
        state["schedule"] = {"name": self.schedule.name, "params": dict(self.schedule.params)}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("schedule", None)
        mine = {"name": self.schedule.name, "params": dict(self.schedule.params)}
        if saved is not None and saved != mine:
            raise ScheduleError(
                f"{self.schedule.name}: checkpoint was made by schedule {saved!r}, not {mine!r}"
            )
        self.__dict__.update(state)
