"""A user's own CNN (examples/shapes_task.py: a small ResNet with BatchNorm and dropout)
trained three ways, side by side in one run.

    .venv/bin/python -P bench/user_task.py        # 16 trials, 3 epochs; prints `name: value`

The same 16 trials (same seeds, schedules, optimizers) are trained in-process, without a
database:

- speedup_vs_optuna_example_loop: the style of Optuna's own PyTorch example (a DataLoader
  over the training set, the user's ``nn.Module`` and a torch optimizer per trial, trained
  one after another, evaluated each epoch) divided by the stack's time.
- speedup_vs_per_trial_loop: lr-sweeps' own one-at-a-time path (the task, a stack of one
  per trial: no vmap) divided by the stack's time.
- fraction_of_matmul_peak: the stack's FLOP/s (counted by torch's FlopCounterMode) over a
  large float32 matmul's FLOP/s on this device.
- max_rel_diff_vs_solo: the largest relative train-loss difference over every logged step of
  every trial, stacked against alone, in float32. A batched and an unbatched kernel may
  round a sum differently (CPU dependent): max_rel_diff_vs_solo_first_step is that
  rounding, at each trial's first step; training amplifies it over the run, most for
  trials that never decay their lr (chaotic SGD at a constant lr).
  max_rel_diff_vs_solo_float64: the whole run of 4 trials in float64, what the tests check
  to 1e-9 on every CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from objectives import Run, train_stack

_spec = importlib.util.spec_from_file_location(
    "shapes_task", Path(__file__).parents[1] / "examples" / "shapes_task.py"
)
assert _spec is not None and _spec.loader is not None
shapes_task = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_task)

FAMILIES: list[tuple[str, dict[str, Any]]] = [
    ("constant", {}),
    ("cosine", {"cosine.warmup_steps": 10}),
    ("wsd", {"wsd.decay_fraction": 0.3}),
    ("onecycle", {}),
]


def trial_params(k: int, batch_size: int) -> list[dict[str, Any]]:
    """K trials: the families above, alternating SGD and AdamW, lrs spread over a range."""
    out = []
    for i in range(k):
        family, extra = FAMILIES[i % len(FAMILIES)]
        scale = 1.5 ** (i % 5 - 2)
        opt: dict[str, Any] = (
            {"optimizer": "adamw", "lr": 0.003 * scale, "beta1": 0.9, "beta2": 0.999}
            if i % 2
            else {"optimizer": "sgd", "lr": 0.05 * scale, "momentum": 0.9, "nesterov": False}
        )
        out.append({**opt, "weight_decay": 1e-4, "batch_size": batch_size, "schedule": family})
        out[-1].update(extra)
    return out


def make_run(
    params: dict[str, Any],
    seed: int,
    epochs: int,
    args: dict[str, Any],
    device: str,
    steps: list[dict[str, Any]] | None = None,
) -> Run:
    trial = optuna.create_study(direction="maximize").ask()
    sink = (lambda s, e: steps.extend(s)) if steps is not None else None
    return Run(trial, params, seed=seed, epochs=epochs, args=args, device=device, curves=sink)


def optuna_example_loop(
    task: Any, params: dict[str, Any], seed: int, epochs: int, args: dict[str, Any], device: str
) -> float:
    """One trial the way Optuna's PyTorch example trains: DataLoader, module, optimizer."""
    data = task.data(torch.device("cpu"))
    trial = optuna.create_study(direction="maximize").ask()
    torch.manual_seed(seed)
    model = task.model(args).to(device)
    run = make_run(params, seed, epochs, args, device)
    optimizer = run.optimizer(model.parameters())
    batch = params["batch_size"]
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True)
    valid = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch)
    scheduler = run.scheduler(optimizer, total_steps=epochs * len(train))
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in valid:
                correct += int((model(x.to(device)).argmax(dim=1) == y.to(device)).sum())
        accuracy = correct / len(data.y_val)
        trial.report(accuracy, epoch)
    return accuracy


def max_rel_diff(stacked: list[list[dict[str, Any]]], solo: list[list[dict[str, Any]]]) -> float:
    return max(
        abs(a["train_loss"] - b["train_loss"]) / abs(b["train_loss"])
        for s, o in zip(stacked, solo, strict=True)
        for a, b in zip(s, o, strict=True)
    )


def stacked_and_solo(
    task: Any, settings: list[dict[str, Any]], epochs: int, args: dict[str, Any], device: str
) -> tuple[float, float, float, float]:
    """Seconds alone (one after another), seconds stacked, and `max_rel_diff` over the
    whole runs and over the first steps."""
    solo: list[list[dict[str, Any]]] = [[] for _ in settings]
    start = time.perf_counter()
    for i, p in enumerate(settings):
        task(make_run(p, i, epochs, args, device, solo[i]))
    t_solo = time.perf_counter() - start
    stacked: list[list[dict[str, Any]]] = [[] for _ in settings]
    runs = [make_run(p, i, epochs, args, device, stacked[i]) for i, p in enumerate(settings)]
    start = time.perf_counter()
    outcomes = train_stack(task, runs)
    t_stack = time.perf_counter() - start
    assert all(isinstance(o, float) for o in outcomes), outcomes
    for run in runs:
        run.flush()
    first_steps = max_rel_diff([s[:1] for s in stacked], [s[:1] for s in solo])
    return t_solo, t_stack, max_rel_diff(stacked, solo), first_steps


def matmul_flops_per_second(device: str, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def workload_flops(task: Any, args: dict[str, Any], k: int, epochs: int, batch: int) -> float:
    """FLOPs of K trials' epochs: forward + backward per training example, forward per
    validation example (counted on one batch)."""
    data = task.data(torch.device("cpu"))
    model = task.model(args)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(
            model(data.x_train[:batch]), data.y_train[:batch]
        ).backward()
    train_flops = counter.get_total_flops() / batch
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model.eval()
        model(data.x_val[:batch])
    val_flops = forward.get_total_flops() / batch
    return k * epochs * (train_flops * len(data.y_train) + val_flops * len(data.y_val))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8, help="the ResNet's first width")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class Task(shapes_task.ShapesTask):  # type: ignore[misc, name-defined]
        image_size = args.image_size

    task = Task()
    model_args = {"width": args.width, "dropout": 0.1}
    k, epochs, device = args.k, args.epochs, args.device
    settings = trial_params(k, args.batch_size)
    task.data(torch.device("cpu"))  # generate the images once, outside every timing
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, "
        f"ResNet width {args.width} on {args.image_size}x{args.image_size} images, "
        f"batch {args.batch_size}, K={k}, {epochs} epochs"
    )
    start = time.perf_counter()
    for i, p in enumerate(settings):
        optuna_example_loop(task, p, i, epochs, model_args, device)
    t_example = time.perf_counter() - start
    t_solo, t_stack, diff, first = stacked_and_solo(task, settings, epochs, model_args, device)
    flops = workload_flops(task, model_args, k, epochs, args.batch_size)
    print(f"seconds_optuna_example_loop: {t_example:.2f}")
    print(f"seconds_per_trial_loop: {t_solo:.2f}")
    print(f"seconds_stacked: {t_stack:.2f}")
    print(f"speedup_vs_optuna_example_loop: {t_example / t_stack:.2f}")
    print(f"speedup_vs_per_trial_loop: {t_solo / t_stack:.2f}")
    print(f"fraction_of_matmul_peak: {flops / t_stack / matmul_flops_per_second(device):.3f}")
    print(f"max_rel_diff_vs_solo: {diff:.2e}")
    print(f"max_rel_diff_vs_solo_first_step: {first:.2e}")
    torch.set_default_dtype(torch.float64)
    _, _, diff64, _ = stacked_and_solo(task, settings[:4], 1, model_args, device)
    print(f"max_rel_diff_vs_solo_float64: {diff64:.2e}")


if __name__ == "__main__":
    main()
