"""`Command`: a training script as the objective, run once per trial attempt.

The worker expands the command's placeholders (`objectives.command.template`), puts the
trial's schedule in the environment (`schedules.from_env`), starts the command under a guard
(`objectives.command.process`), and reads its output as it comes
(`objectives.command.output`): each value is reported (the pruner may end the trial), each
curve point logged. The trial ends as the command does, or earlier, ending every process of
the command: pruned, diverged (a NaN or infinite value), or handed back when the worker
stops. Each attempt's whole output goes to the trial's log file, named in a failure's reason.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import schedules
from objectives.command import template
from objectives.command.output import LOG_NOTE, ErrorLine, OutputReader
from objectives.command.process import CommandProcess
from objectives.command.template import ARGS, HF_ARGS
from objectives.run import Run
from storage.checkpoints import disk_full

# The worker's own settings, which a trial's command has no business seeing (a password,
# the storage proxy's token).
PRIVATE_ENV = (
    "SWEEPS_STORAGE",
    "SWEEPS_STORAGE_FILE",
    "SWEEPS_PROXY_TOKEN",
    "SWEEPS_WORKER_INDEX",
    "SWEEPS_LIFELINE",
)


MAX_STEP = 2**31 - 1  # Optuna stores a report's step as a 32-bit integer (PostgreSQL)


class CommandFailed(Exception):
    """The command exited with an error, or printed no value: the trial FAILs."""


class Command:
    """A training script as the objective (DESIGN.md, "Command trials")."""

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        resume: str | Sequence[str] | None = None,
        report: str | None = None,
        processes: int = 1,
        grace_period: float = 10.0,
    ) -> None:
        """Raises:
        TemplateError: a command that cannot be split or has a malformed placeholder.
        ReportFormatError: a ``report`` pattern that cannot read a value.
        """
        self.items = template.split(command)
        self.resume = template.split(resume) if resume else []
        template.placeholders([*self.items, *self.resume])
        self.reader = OutputReader(report)
        self.processes = processes
        self.grace_period = grace_period

    def __call__(
        self,
        run: Run,
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        hidden: Collection[str] = (),
    ) -> float:
        """Run the command for ``run``'s trial to its end; its last value is the result.

        Args:
            run: the trial.
            log: the file this attempt's output is appended to.
            env: added to the command's environment (the GPUs it may use).
            hidden: parameters ``{args}`` leaves out (defaults the config never wrote).

        Raises:
            optuna.TrialPruned, Diverged, HandBack, Lost: as `Run.report` does; the
                command's processes are ended first.
            CommandFailed: a non-zero exit, or no value printed.
            DiskFull: a non-zero exit that says the disk is full, or with (all but) no
                room left on its checkpoint folder's disk.
        """
        run.load_checkpoint()  # replays an earlier attempt's reports into this trial
        argv = self.argv(run, hidden=hidden, resume=any(run.checkpoint_dir.iterdir()))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"# trial {run.trial.number}: {' '.join(argv)}\n")
            out.flush()
            process = CommandProcess(argv, env=self.environment(run, env), grace=self.grace_period)
            try:
                last, code, why = self._follow(run, process, out)
                if not run.trained_all_epochs:
                    run.check_stopping()  # it exited on the same signal: not a result
            except BaseException:
                process.end(lambda line: out.write(line + "\n"))
                raise
        where = f"{LOG_NOTE}{log})"
        if code:
            failed = CommandFailed(
                f"{_exit(code)}: {why}{where}" if str(why) else _exit(code) + where
            )
            # Its own files filled the disk: not the trial's fault, the worker stops.
            raise disk_full(run.checkpoint_dir, failed, what="the trial's files") or failed
        if last is None:
            if not run.reported:
                raise CommandFailed(f"printed no value: waited for {self.reader.waits_for}{where}")
            last = run.reported[-1]["value"]  # an earlier attempt's, when this one had no more
        return last

    def _follow(
        self, run: Run, process: CommandProcess, out: Any
    ) -> tuple[float | None, int, ErrorLine]:
        """Report what ``process`` prints until it exits: (its last value, its exit code,
        its error line)."""
        why = ErrorLine()
        have = {point["epoch"] for point in run.reported}  # steps stored by an earlier attempt
        last = None
        for line in process.lines():
            run.check_stopping()
            if line is None:  # silence
                continue
            out.write(line + "\n")
            why.see(line)
            reading = self.reader.read(line)
            if reading is None:
                continue
            if reading.lr is not None and reading.step is not None:
                run.log_step(
                    reading.step, lr=reading.lr, loss=reading.loss, grad_norm=reading.grad_norm
                )
            if reading.value is None:
                continue
            # Without a step, the count of values so far, across attempts.
            step = max(have, default=0) + 1 if reading.step is None else reading.step
            if step > MAX_STEP:
                raise CommandFailed(
                    f"reported step {step}: storage keeps steps up to {MAX_STEP} (2**31 - 1); "
                    f"count steps in a larger unit{LOG_NOTE}{out.name})"
                )
            last = reading.value
            if step in have:
                continue
            have.add(step)
            out.flush()
            run.report(reading.value, step)
            # The reports, for a retry to replay; unsynced: one per report, and its loss
            # in a machine crash costs a retry only the replay.
            run.save_checkpoint({"step": step}, sync=False)
        return last, process.wait(), why

    def argv(self, run: Run, *, hidden: Collection[str] = (), resume: bool = False) -> list[str]:
        """The command line of ``run``'s trial; with ``resume``, the `resume` items too."""
        from objectives.command.hf import hf_args

        values = {
            **run.params,
            **{f"{ARGS}.{name}": value for name, value in run.args.items()},
            "epochs": run.epochs,
            "seed": run.seed,
            "trial": run.trial.number,
            "checkpoint_dir": str(run.checkpoint_dir),
            "port": _free_port(),
        }
        shown = {k: v for k, v in run.params.items() if k not in hidden}
        many = {
            ARGS: lambda: [f"--{k}={template.text(v)}" for k, v in shown.items()],
            HF_ARGS: lambda: hf_args(
                run.params["schedule"], lr=run.params["lr"], params=run.schedule_params
            ),
        }
        items = [*self.items, *(self.resume if resume else [])]
        return template.expand(items, values, many=many)

    def environment(self, run: Run, extra: Mapping[str, str] | None) -> dict[str, str]:
        """The worker's environment, less its private settings, plus the trial's schedule
        (`schedules.from_env`), this Python environment's programs first on the PATH
        (`search_path`), unbuffered Python output (so reports arrive as printed, and
        the pruner can act on them), and ``extra``."""
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env["PATH"] = search_path()
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[schedules.ENV] = schedules.to_env(
            run.params["schedule"], lr=run.params["lr"], params=run.schedule_params
        )
        env["SWEEPS_TRIAL"] = str(run.trial.number)
        return env | dict(extra or {})


def search_path() -> str:
    """The PATH a command runs with: this Python environment's own programs (``python``,
    ``torchrun``) first, as if it were activated, then the PATH."""
    here = os.path.dirname(sys.executable)
    return os.pathsep.join([here, os.environ.get("PATH", os.defpath)])


def _exit(code: int) -> str:
    if code > 128:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def _free_port() -> int:
    """A TCP port nothing listens on now, for the command's own rendezvous (torchrun's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
