"""What the schedules of a config look like before any compute is spent: a sample of each
family's learning-rate curves over the configured run length, one panel per family."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import objectives  # noqa: E402
import schedules  # noqa: E402
from sweeps.config import SweepConfig  # noqa: E402
from sweeps.space import parse_space  # noqa: E402
from sweeps.summary import describe  # noqa: E402

POINTS = 400  # steps drawn per curve


def sample_config(
    config: SweepConfig, *, per_family: int, seed: int, total_steps: int | None
) -> dict[str, list[tuple[str, schedules.Schedule, int]]]:
    """``per_family`` random points of each family in the config's space, built as their
    trials would build them: {family: [(label, schedule, total steps)]}."""
    space = parse_space(config.space)
    task = objectives.resolve(config.objective_spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    samples: dict[str, list[tuple[str, schedules.Schedule, int]]] = {}
    for family in space.families:
        for _ in range(per_family):
            study.enqueue_trial({"schedule": family})
            trial = study.ask()
            params = space.sample(trial)
            study.tell(trial, 0.0)
            steps = total_steps or (
                config.budget.epochs * task.steps_per_epoch(params["batch_size"])
                if isinstance(task, objectives.Task)
                else 0
            )
            run = objectives.Run(
                trial, params, seed=0, epochs=config.budget.epochs, direction=config.direction
            )
            own = {
                k.removeprefix(f"{family}."): v
                for k, v in params.items()
                if k.startswith(f"{family}.")
            }
            label = f"{describe({'lr': params['lr'], **own}, family=False)} T={steps}"
            samples.setdefault(family, []).append((label, run.schedule(total_steps=steps), steps))
    return samples


def plot(
    samples: dict[str, list[tuple[str, schedules.Schedule, int]]], out: Path, title: str
) -> None:
    cols = min(3, len(samples))
    rows = math.ceil(len(samples) / cols)
    fig = Figure(figsize=(5 * cols, 3.4 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    peaks = [schedule.lr for curves in samples.values() for _, schedule, _ in curves]
    scale = "log" if max(peaks) > 10 * min(peaks) else "linear"  # α0 over decades: shapes too
    for ax, (family, curves) in zip(axes, samples.items(), strict=False):
        adaptive = not curves[0][1].closed_form
        for label, schedule, total in curves:
            ts = sorted({round(i * (total - 1) / (POINTS - 1)) for i in range(POINTS)})
            ax.plot(
                ts,
                [schedule.nominal_lr_at(t) for t in ts],
                linestyle="--" if adaptive else "-",
                label=label,
            )
        note = " (adaptive: moves with training; drawn before it does)" if adaptive else ""
        ax.set_title(f"{family}{note}", fontsize=9)
        ax.set(xlabel="optimizer step", ylabel="learning rate", yscale=scale)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(samples) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def example_schedules(
    settings: dict[str, dict[str, Any]], total: int
) -> dict[str, list[tuple[str, schedules.Schedule, int]]]:
    """One curve per family from ``settings`` ({family: build kwargs})."""
    return {
        name: [
            (
                describe(kwargs, family=False),
                schedules.build(name, **kwargs),
                total,
            )
        ]
        for name, kwargs in settings.items()
    }
