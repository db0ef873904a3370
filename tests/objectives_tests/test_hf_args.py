"""`objectives.command.hf`: the flags ``{hf_args}`` expands to, parsed by HF's own argument
parser as a user's script parses them, make the scheduler HF's Trainer builds from them give
every optimizer step the lr of ``schedules.for_run`` over the same run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import schedules
from objectives.command.hf import HF_FAMILIES, HFScheduleError, hf_args, why_not

transformers = pytest.importorskip("transformers")

N = 200  # the Trainer's num_training_steps: the whole run, warmup included
LR = 0.1


def parse(flags: list[str], tmp_path: Path, *extra: str) -> Any:
    """The TrainingArguments a script gets from ``flags`` on its command line."""
    parser = transformers.HfArgumentParser(transformers.TrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), *extra, *flags])
    return args


def hf_scheduler(args: Any) -> tuple[torch.optim.Optimizer, Any]:
    """An optimizer at ``args.learning_rate`` (as the Trainer creates it) and the scheduler
    the Trainer's own ``create_scheduler`` builds for it over a run of N steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    # create_scheduler reads only args and lr_scheduler here: no model, no Trainer to build.
    trainer = SimpleNamespace(args=args, lr_scheduler=None)
    return optimizer, transformers.Trainer.create_scheduler(trainer, N, optimizer)


CLOSED_FORMS = [
    ("constant", LR, {}),
    ("constant", LR, {"warmup_steps": 20}),
    ("linear", LR, {}),
    ("linear", LR, {"warmup_steps": 20}),
    ("linear", 3e-4, {"min_lr": 1e-5}),
    ("linear", LR, {"warmup_steps": 20, "min_lr": 1e-3}),
    ("linear", LR, {"warmup_steps": N}),  # warmup is the whole run
    ("polynomial", LR, {"power": 2.0}),
    ("polynomial", LR, {"power": 0.5, "min_lr": 1e-3, "warmup_steps": 20}),
    ("polynomial", 3e-4, {"power": 3, "min_lr": 0.0, "warmup_steps": 199}),
    ("polynomial", LR, {"min_lr": LR}),  # min_lr = lr: constant
    ("cosine", LR, {}),
    ("cosine", LR, {"warmup_steps": 20}),
    ("cosine", 3e-4, {"min_lr": 1e-5}),
    ("cosine", LR, {"warmup_steps": 20, "min_lr": 1e-3}),
    ("cosine", LR, {"min_lr": LR}),
    ("inverse_power", LR, {"power": 0.5, "timescale": 50.0}),
    ("inverse_power", LR, {"power": 0.5, "timescale": 7.5, "warmup_steps": 20}),
    ("inverse_power", 3e-4, {"power": 0.5, "timescale": 1000, "warmup_steps": 1}),
]


@pytest.mark.parametrize(
    ("family", "lr", "params"),
    CLOSED_FORMS,
    ids=[f"{f}-lr{lr}-{p}" for f, lr, p in CLOSED_FORMS],
)
def test_hf_args_closed_form_family_every_step_matches_schedule(
    family: str, lr: float, params: dict[str, Any], tmp_path: Path
) -> None:
    optimizer, scheduler = hf_scheduler(parse(hf_args(family, lr=lr, params=params), tmp_path))
    reference = schedules.for_run(family, lr=lr, total_steps=N, **params)
    applied, expected = [], []
    for t in range(N):
        # The Trainer steps the scheduler after each optimizer step: step t runs at the lr
        # left by t scheduler steps.
        applied.append(optimizer.param_groups[0]["lr"])
        expected.append(reference.lr_at(t))
        optimizer.step()
        scheduler.step()
    assert applied == pytest.approx(expected, rel=1e-6, abs=0.0)


def staircase(mode: str) -> list[float]:
    """A validation metric that improves in steps, stalls (sub-threshold changes included)
    and ends on a long plateau; negated for ``max``."""
    metrics = [1.0 / (1 + i // 6) * (1.0 - 1e-4 * (i % 6)) for i in range(36)] + [0.1] * 24
    return [-m if mode == "max" else m for m in metrics]


PLATEAUS = [
    {},
    {"factor": 0.5, "patience": 2, "threshold": 1e-2, "cooldown": 1, "min_lr": 0.01},
    {"mode": "max", "factor": 0.3, "patience": 1, "threshold": 0.0},
    {"mode": "min", "factor": 0.9, "patience": 0, "min_lr": 0.08, "warmup_steps": 0},
]


@pytest.mark.parametrize("params", PLATEAUS, ids=[str(p) for p in PLATEAUS])
def test_hf_args_plateau_same_metrics_same_lr(params: dict[str, Any], tmp_path: Path) -> None:
    # reduce_lr_on_plateau needs the script to evaluate; the Trainer then steps it with the
    # evaluation's metric.
    args = parse(hf_args("plateau", lr=LR, params=params), tmp_path, "--eval_strategy=epoch")
    optimizer, scheduler = hf_scheduler(args)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    reference = schedules.for_run("plateau", lr=LR, total_steps=N, **params).attach(ours)
    applied, expected = [], []
    for metric in staircase(params.get("mode", "min")):
        ours.step()  # a training step between evaluations: lr-sweeps' scheduler counts it
        reference.step()
        reference.step(metric)
        scheduler.step(metric)
        applied.append(optimizer.param_groups[0]["lr"])
        expected.append(ours.param_groups[0]["lr"])
    assert applied == pytest.approx(expected, rel=1e-6, abs=0.0)
    if params:
        assert expected[-1] < LR  # the metric did plateau: the comparison saw reductions


def test_hf_args_awkward_floats_parse_back_exactly(tmp_path: Path) -> None:
    lr, min_lr = 0.1 + 0.2, 1e-3 / 3
    args = parse(hf_args("cosine", lr=lr, params={"min_lr": min_lr}), tmp_path)
    assert args.learning_rate == lr
    assert args.lr_scheduler_kwargs == {"min_lr": min_lr}
    args = parse(hf_args("polynomial", lr=lr, params={"power": 1 / 3}), tmp_path)
    assert args.lr_scheduler_kwargs == {"lr_end": 0.0, "power": 1 / 3}


def test_hf_args_each_flag_one_item_in_order() -> None:
    flags = hf_args("cosine", lr=LR, params={"warmup_steps": 10, "min_lr": 1e-5})
    assert flags == [
        "--learning_rate=0.1",
        "--lr_scheduler_type=cosine_with_min_lr",
        "--warmup_steps=10",
        '--lr_scheduler_kwargs={"min_lr":1e-05}',
    ]


REFUSED = [
    ("step", {"decay_steps": 10}),
    ("exponential", {"decay_steps": 10}),
    ("grad_norm", {}),
    ("onecycle", {}),
    ("wsd", {"decay_fraction": 0.2}),
]


@pytest.mark.parametrize(("family", "params"), REFUSED, ids=[f for f, _ in REFUSED])
def test_hf_args_unmapped_family_raises(family: str, params: dict[str, Any]) -> None:
    with pytest.raises(HFScheduleError, match=f"^{family}: .*schedules.from_env"):
        hf_args(family, lr=LR, params=params)


@pytest.mark.parametrize(
    ("family", "params", "match"),
    [
        ("inverse_power", {"power": 1.0, "timescale": 10.0}, "power at 0.5"),
        ("inverse_power", {"timescale": 10.0}, "power at 0.5"),  # default power 1
        ("inverse_power", {"power": 0.5}, "timescale"),  # default: the run length
        ("plateau", {"warmup_steps": 5}, "no warmup"),
    ],
)
def test_hf_args_unmapped_params_raise(family: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(HFScheduleError, match=match):
        hf_args(family, lr=LR, params=params)


def test_hf_args_unknown_family_raises_schedule_error() -> None:
    with pytest.raises(schedules.ScheduleError, match="unknown schedule family"):
        hf_args("sawtooth", lr=LR, params={})


def test_hf_args_bad_param_raises_schedule_error() -> None:
    with pytest.raises(schedules.ScheduleError, match="cosine.min_lr"):
        hf_args("cosine", lr=LR, params={"min_lr": 1.0})


EXPRESSIBLE = [
    ("constant", {"warmup_steps": None}),
    ("linear", {"min_lr": None, "warmup_steps": [0, 100]}),
    ("polynomial", {"power": None, "min_lr": [0.0, 1e-4]}),
    ("cosine", {"min_lr": None}),
    ("inverse_power", {"power": [0.5], "timescale": None}),
    ("inverse_power", {"power": [0.5], "timescale": [100.0, 1000.0], "warmup_steps": None}),
    ("plateau", {"factor": None, "patience": [2, 5], "mode": ["max"]}),
    ("plateau", {"warmup_steps": [0]}),
]


@pytest.mark.parametrize(
    ("family", "values"), EXPRESSIBLE, ids=[f"{f}-{v}" for f, v in EXPRESSIBLE]
)
def test_why_not_expressible_space_is_none(
    family: str, values: dict[str, list[Any] | None]
) -> None:
    assert why_not(family, values) is None


def test_why_not_every_family_is_mapped_or_refused() -> None:
    assert {family for family, _ in EXPRESSIBLE} == set(HF_FAMILIES)
    for family in set(schedules.SCHEDULES) - set(HF_FAMILIES):
        assert why_not(family, {}) is not None, family


UNEXPRESSIBLE = [
    ("inverse_power", {"timescale": None}, "fix space.schedule.inverse_power.power to 0.5"),
    ("inverse_power", {"power": None, "timescale": None}, "power to 0.5"),
    ("inverse_power", {"power": [0.5, 1.0], "timescale": None}, "power to 0.5"),
    ("inverse_power", {"power": [0.5]}, "set space.schedule.inverse_power.timescale"),
    ("inverse_power", {"power": [0.5], "timescale": [None, 10.0]}, "timescale"),
    ("plateau", {"warmup_steps": None}, "plateau.warmup_steps to 0"),
    ("plateau", {"warmup_steps": [0, 10]}, "plateau.warmup_steps to 0"),
    ("wsd", {}, "num_decay_steps"),
    ("step", {"decay_rate": None}, "drop space.schedule.step"),
    ("onecycle", {}, "drop space.schedule.onecycle"),
]


@pytest.mark.parametrize(
    ("family", "values", "fix"), UNEXPRESSIBLE, ids=[f"{f}-{v}" for f, v, _ in UNEXPRESSIBLE]
)
def test_why_not_unexpressible_space_names_fix(
    family: str, values: dict[str, list[Any] | None], fix: str
) -> None:
    why = why_not(family, values)
    assert why is not None
    assert why.startswith(f"{family}: ")
    assert fix in why
    assert "\n" not in why
