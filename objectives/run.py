"""`Run`: what an objective function receives — the trial's parameters, its optimizer and
schedule, pruning-aware reporting, checkpoints and curve logging.

    def my_objective(run) -> float:
        model = make_model()                      # seed torch from run.seed for determinism
        opt = run.optimizer(model.parameters())
        sched = run.scheduler(opt, total_steps=run.epochs * steps_per_epoch)
        for epoch in range(1, run.epochs + 1):
            ...                                    # opt.step(); sched.step(); run.log_step(...)
            run.report(val_accuracy, epoch)        # raises optuna.TrialPruned when pruned
            run.save_checkpoint({...})             # after report: it keeps the reports too
        return val_accuracy
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

import schedules
from objectives.trunks import Branch, Trunk
from storage import TrialReport
from storage.checkpoints import DiskFull
from storage.optuna_internals import storage_of, trial_id_of

# Per-step curve points kept per trial; longer runs are thinned evenly.
MAX_STEP_POINTS = 500

CurveSink = Callable[[Sequence[dict[str, Any]], Sequence[dict[str, Any]]], None]
# Stores many trials' reports at once (`storage.base.BaseDatabase.add_reports`); returns the ids of
# trials it found already finished (nothing stored for them).
ReportSink = Callable[[Sequence[TrialReport]], Collection[int]]


# What a trial ends with: its value, or the exception that ended it.
Outcome = float | BaseException


class Diverged(Exception):
    """The training diverged (NaN/Inf loss): the trial ends PRUNED with this reason."""


class HandBack(Exception):
    """The worker was told to stop (SIGTERM, SIGINT): the trial goes back to the queue and
    resumes from its last checkpoint, on whichever worker takes it next."""


class Lost(Exception):
    """Another worker failed this trial while it ran here (its heartbeat went stale, say in
    an outage) and re-queued it: its retry resumes from the last checkpoint."""


class Run:
    """One trial as the objective sees it. Built by the worker; objectives only use it."""

    def __init__(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        *,
        seed: int,
        epochs: int,
        direction: str = "maximize",
        args: dict[str, Any] | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        curves: CurveSink | None = None,
        checkpoint: tuple[Callable[..., None], Callable[[], dict[str, Any] | None]] | None = None,
        reports: ReportSink | None = None,
        stopping: Callable[[], bool] = lambda: False,
        checkpoint_dir: Path | None = None,
        trunk: Trunk | None = None,
        branch: Branch | None = None,
    ) -> None:
        """``trunk``, ``branch``: this run's part in sharing a stable phase
        (`objectives.trunks`); a task's trainer uses them, a function objective does not."""
        self.trial = trial
        self.params = params
        self.seed = seed
        self.epochs = epochs
        self.direction = direction
        self.args = dict(args or {})
        self.device = torch.device(device)
        self.precision = precision  # fp32, or bf16 autocast (`objectives.stacking`)
        self._curves = curves
        self._checkpoint = checkpoint
        self._reports = reports
        self._stopping = stopping
        self._checkpoint_dir = checkpoint_dir
        self.trunk = trunk
        self.branch = branch
        self.branched_at = 0  # the trunk's epochs a branch started from (0: none)
        self._saved = False  # whether this run saved a checkpoint
        self._stride = 1
        self._steps: list[dict[str, Any]] = []  # every point kept so far (for checkpoints)
        self._unsaved_steps: list[dict[str, Any]] = []
        self._epochs: list[dict[str, Any]] = []

    # Building blocks from the sampled parameters ------------------------------------------

    def optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """SGD (momentum, Nesterov) or AdamW (β1, β2), with the trial's lr and weight decay."""
        p = self.params
        if p["optimizer"] == "adamw":
            return torch.optim.AdamW(
                parameters,
                lr=p["lr"],
                betas=(p["beta1"], p["beta2"]),
                weight_decay=p["weight_decay"],
            )
        return torch.optim.SGD(
            parameters,
            lr=p["lr"],
            momentum=p["momentum"],
            nesterov=bool(p["nesterov"]) and p["momentum"] > 0,
            weight_decay=p["weight_decay"],
        )

    def schedule(self, *, total_steps: int) -> schedules.Schedule:
        """The trial's schedule over a run of ``total_steps`` optimizer steps (warmup
        included): families that decay over a run length get ``total_steps − warmup``."""
        return schedules.for_run(
            self.params["schedule"],
            lr=self.params["lr"],
            total_steps=total_steps,
            **self.schedule_params,
        )

    @property
    def schedule_params(self) -> dict[str, Any]:
        """The trial's schedule family's parameters (``warmup_steps``, ...), without the
        family's prefix, the lr or the run length (`schedules.for_run` adds those)."""
        family = self.params["schedule"]
        prefix = f"{family}."
        kwargs = {k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)}
        if "mode" in schedules.SCHEDULES[family].PARAMS and "mode" not in kwargs:
            kwargs["mode"] = "max" if self.direction == "maximize" else "min"
        return kwargs

    def scheduler(
        self, optimizer: torch.optim.Optimizer, *, total_steps: int
    ) -> schedules.ScheduleLR:
        """`schedule` attached to ``optimizer``; call ``.step()`` after each optimizer step."""
        self._stride = max(1, math.ceil(total_steps / MAX_STEP_POINTS))
        return self.schedule(total_steps=total_steps).attach(optimizer)

    # Reporting -------------------------------------------------------------------------

    def log_step(
        self, step: int, *, lr: float, loss: float | None = None, grad_norm: float | None = None
    ) -> None:
        """Record one optimizer step's curve point (kept every ``stride`` steps)."""
        if step % self._stride:
            return
        point = {"step": step, "lr": lr, "train_loss": loss, "grad_norm": grad_norm}
        self._steps.append(point)
        self._unsaved_steps.append(point)
        if len(self._steps) > 2 * MAX_STEP_POINTS:  # total_steps was not given: thin evenly
            self._stride *= 2
            self._steps = [p for p in self._steps if p["step"] % self._stride == 0]
            self._unsaved_steps = [p for p in self._unsaved_steps if p["step"] % self._stride == 0]

    def wants_step(self, step: int) -> bool:
        """Whether `log_step` keeps ``step``: skip computing what would be thrown away."""
        return step % self._stride == 0

    def report(
        self, value: float, epoch: int, *, val_loss: float | None = None, prune: bool = True
    ) -> None:
        """Report the validation metric after ``epoch`` epochs (counting from 1).

        With ``prune=False`` the pruner is not asked (a trainer asking for many trials at
        once, `objectives.pruning`, raises `pruned` itself). The final epoch
        (``epoch >= run.epochs``) is never pruned: a trial that trained its whole budget
        ends COMPLETE, so the leaderboards rank what it reached.

        Raises:
            Diverged: ``value`` is NaN or infinite.
            optuna.TrialPruned: the pruner stops this trial here.
            HandBack: the worker is stopping and this run has no checkpoint to lose (else
                `save_checkpoint` raises it, once the epoch is saved).
            Lost: another worker has taken the trial over.
        """
        try:
            self._write_alone(self._record(value, epoch, val_loss))
        except optuna.exceptions.UpdateFinishedTrialError as e:
            raise Lost(str(e)) from e
        if prune and self.prunable(epoch) and self.trial.should_prune():
            raise self.pruned()
        if not self._saved:
            self.check_stopping()

    def _record(self, value: float, epoch: int, val_loss: float | None) -> TrialReport:
        """Keep a report (and the step points since the last) for writing."""
        if not math.isfinite(value):
            raise Diverged(f"validation metric is {value} at epoch {epoch}")
        self._epochs.append({"epoch": epoch, "value": value, "val_loss": val_loss})
        steps, self._unsaved_steps = self._unsaved_steps, []
        return TrialReport(trial_id_of(self.trial), epoch, value, val_loss, steps)

    def _write_alone(self, report: TrialReport) -> None:
        """Write through Optuna's ``trial.report`` (which ``trial.should_prune`` reads back
        from the trial's own cache) and the curve sink."""
        self.trial.report(report.value, report.epoch)
        if self._curves is not None:
            epoch = {"epoch": report.epoch, "value": report.value, "val_loss": report.val_loss}
            self._curves(report.steps, [epoch])

    def prunable(self, epoch: int) -> bool:
        """Whether the pruner may stop this trial after ``epoch``: not once the whole
        budget is trained."""
        return epoch < self.epochs

    @property
    def trained_all_epochs(self) -> bool:
        """Whether this run has reported its final epoch."""
        return bool(self._epochs) and not self.prunable(self._epochs[-1]["epoch"])

    def pruned(self) -> optuna.TrialPruned:
        """The exception that ends this trial as pruned after its last report."""
        last = self._epochs[-1]
        return optuna.TrialPruned(
            f"pruned at epoch {last['epoch']} with value {last['value']:.6g}"
        )

    def _flush(self, epochs: Sequence[dict[str, Any]]) -> None:
        if self._curves is not None:
            self._curves(self._unsaved_steps, epochs)
        self._unsaved_steps = []

    # Checkpoints -----------------------------------------------------------------------

    @property
    def saves_checkpoints(self) -> bool:
        """Whether `save_checkpoint` stores anything (skip building a state when not)."""
        return self._checkpoint is not None

    def save_checkpoint(
        self,
        state: dict[str, Any],
        *,
        stable: bool = False,
        last_stable: bool = False,
        sync: bool = True,
    ) -> None:
        """Save ``state`` (tensors, numbers, lists, dicts) with the curves reported so far.
        ``stable``: the trainer says every step so far held the schedule's stable lr (a
        trunk keeps such checkpoints for its branches); ``last_stable``: the next epoch
        will not. ``sync=False``: not synced to disk (`CheckpointStore.save`), for a small
        one saved very often whose loss in a machine crash costs little.

        Raises:
            HandBack: the worker is stopping; the trial resumes from this checkpoint (or,
                when the disk is full, from the one before, which stands).
        """
        if self._checkpoint is not None:
            saved = {
                "user": state,
                # Columns, not one dict per point: a checkpoint is written every epoch,
                # and serialising hundreds of small dicts cost as much as the weights.
                "steps": _columns(self._steps),
                "epochs": list(self._epochs),
                "stride": self._stride,
                "branched_at": self.branched_at,
            }
            save = self._checkpoint[0]
            try:
                if sync:
                    save(saved)
                else:  # only then: a sink of one argument serves every other caller
                    save(saved, sync=False)
            except DiskFull as e:  # not the trial's fault: it waits in the queue for room
                raise HandBack(f"handed back, its last checkpoint kept: {e}") from e
            if self.trunk is not None:
                if stable:
                    self.trunk.keep(self._epochs[-1]["epoch"])
                if last_stable or not stable:
                    self.trunk.done()
            self._saved = True
        self.check_stopping()

    @property
    def checkpoint_dir(self) -> Path:
        """A folder for a framework's own checkpoint files, kept across attempts of these
        parameters like `save_checkpoint`'s state (which should name the file to resume
        from) and deleted when the trial ends. Created on first use."""
        if self._checkpoint_dir is None:
            raise RuntimeError("this run saves no checkpoints (see saves_checkpoints)")
        self._checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return self._checkpoint_dir

    def check_stopping(self) -> None:
        """Raise `HandBack` if the worker is stopping (`report` and `save_checkpoint` call
        this; an objective with long epochs may call it more often)."""
        if self._stopping():
            epoch = self._epochs[-1]["epoch"] if self._epochs else 0
            raise HandBack(f"handed back after epoch {epoch}")

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The state an earlier attempt of these parameters saved, or None.

        The earlier attempt's reports and curves are replayed into this trial, so pruners
        and curves see the whole run.
        """
        saved = self._checkpoint[1]() if self._checkpoint is not None else None
        return None if saved is None else self._restore(saved)

    def start_branch(self, epoch: int) -> dict[str, Any] | None:
        """The state of this branch's trunk after ``epoch`` (`Branch.load`), its reports and
        curves replayed into this trial as an earlier attempt's are; None if it is gone."""
        saved = self.branch.load(epoch) if self.branch is not None else None
        if saved is None:
            return None
        user = self._restore(saved)
        self.branched_at = epoch
        return user

    def _restore(self, saved: dict[str, Any]) -> dict[str, Any]:
        self.branched_at = saved.get("branched_at", 0)
        self._stride = saved["stride"]
        self._steps = _rows(saved["steps"])
        self._unsaved_steps = list(self._steps)
        self._epochs = list(saved["epochs"])
        # A handed-back trial resumes itself: its own earlier reports are already stored.
        stored = storage_of(self.trial.study).get_trial(trial_id_of(self.trial))
        for point in self._epochs:
            if point["epoch"] not in stored.intermediate_values:
                self.trial.report(point["value"], point["epoch"])
        self._flush(self._epochs)
        user: dict[str, Any] = saved["user"]
        return user

    @property
    def logged_steps(self) -> list[dict[str, Any]]:
        """The step points kept so far: ``{"step", "lr", "train_loss", "grad_norm"}`` each."""
        return list(self._steps)

    @property
    def reported(self) -> list[dict[str, Any]]:
        """The epochs reported so far: ``{"epoch", "value", "val_loss"}`` each."""
        return list(self._epochs)

    def flush(self) -> None:
        """Store curve points logged since the last report (the worker calls this at the end)."""
        if self._unsaved_steps:
            self._flush([])


def outcome_of(run: Run, train: Callable[[Run], float]) -> Outcome:
    """``train(run)``'s value, or the exception that ended it (never raised for the trial's
    own faults)."""
    try:
        return float(train(run))
    except BaseException as e:
        kept = (optuna.TrialPruned, Diverged, HandBack, Lost)
        if run._stopping() and not isinstance(e, kept):
            # What else an objective raises while its worker stops is a framework's own
            # reaction to our signal (Lightning raises SystemExit on SIGTERM), or the
            # second signal's KeyboardInterrupt: the trial is not at fault.
            epoch = run.reported[-1]["epoch"] if run.reported else 0
            why = f"{type(e).__name__} while the worker stopped"
            return HandBack(f"handed back after epoch {epoch} ({why})")
        if isinstance(e, Exception | SystemExit):  # the trial's own fault: its outcome
            return e
        raise


def _columns(points: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {key: [p[key] for p in points] for key in ("step", "lr", "train_loss", "grad_norm")}


def _rows(saved: dict[str, list[Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step points from `_columns` (or the list of dicts older checkpoints hold)."""
    if isinstance(saved, list):
        return list(saved)
    return [dict(zip(saved, values, strict=True)) for values in zip(*saved.values(), strict=True)]


def report_all(
    runs: Sequence[Run],
    values: Sequence[float],
    epochs: Sequence[int],
    *,
    val_losses: Sequence[float | None],
) -> dict[int, Diverged | Lost]:
    """``run.report(value, epoch, val_loss=..., prune=False)`` for many runs, each at its own
    epoch, with one write per report sink: a worker's reports after an epoch are one
    database transaction, not two per trial. Decide pruning afterwards from storage
    (`objectives.pruning.should_prune_all`; ``trial.should_prune`` would not see these
    reports).

    Returns:
        The runs (by index) that end here: `Diverged` (the value is not finite) or `Lost`
        (another worker took the trial over); nothing is written for them.
    """
    ended: dict[int, Diverged | Lost] = {}
    batches: dict[ReportSink, list[tuple[int, TrialReport]]] = {}
    rows = zip(runs, values, epochs, val_losses, strict=True)
    for i, (run, value, epoch, val_loss) in enumerate(rows):
        try:
            report = run._record(value, epoch, val_loss)
            if run._reports is None:
                run._write_alone(report)
            else:
                batches.setdefault(run._reports, []).append((i, report))
        except Diverged as e:
            ended[i] = e
        except optuna.exceptions.UpdateFinishedTrialError as e:
            ended[i] = Lost(str(e))
    for sink, indexed in batches.items():
        finished = sink([report for _, report in indexed])
        for i, report in indexed:
            if report.trial_id in finished:
                ended[i] = Lost(f"trial {runs[i].trial.number} was finished by another worker")
    return ended
