"""Stacked training against one-trial-at-a-time training on digits_mlp, side by side.

    .venv/bin/python bench/stacked.py            # K = 16, 10 epochs; prints `name: value`

Every figure comes from this one run on this machine: the loops being compared train the same
16 trials (same seeds, schedules, optimizers; batch size 128 and 10 epochs as in Optuna's
`pytorch_simple.py`) in-process, without a database.

- speedup_vs_optuna_example_loop: the style of Optuna's own PyTorch example (a DataLoader
  over the training set, one model and optimizer per trial, trained one after another)
  divided by the stack's time.
- speedup_vs_per_trial_loop: our own one-at-a-time path (a stack of one per trial).
- fraction_of_matmul_peak: the stack's FLOP/s over a large float32 matmul's FLOP/s.
- max_rel_diff_vs_solo_float32: the largest relative train-loss difference, over every
  logged step of every trial, between the stack and the same trials trained alone. Not a
  constant: a batched kernel and an unbatched one may round float32 differently, depending
  on the CPU (0 on some, about 1e-5 on others), and training amplifies that.
- max_rel_diff_vs_solo_float64: the same in float64, what the tests check on every CPU
  (to 1e-9): kernels' rounding differences stay near 1e-15 there.
- speedup_k<K>: how the speedup over the per-trial loop grows with the stack size.
- batched_kernels_vs_vmap: one training step's forward + backward for K models, with
  torch.func's vmap over functional_call divided by `BatchedModel` (baddbmm kernels).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from objectives import Run, train_stack
from objectives.builtin import digits_mlp
from objectives.data import digits
from objectives.losses import cross_entropy

FAMILIES: list[tuple[str, dict[str, Any]]] = [
    ("constant", {}),
    ("cosine", {"cosine.warmup_steps": 20}),
    ("linear", {}),
    ("polynomial", {"polynomial.power": 2.0}),
    ("inverse_power", {"inverse_power.power": 0.5}),
    ("step", {"step.decay_rate": 0.5, "step.decay_steps": 100}),
    ("wsd", {"wsd.decay_fraction": 0.2}),
    ("onecycle", {}),
]


def trial_params(k: int, batch_size: int = 128) -> list[dict[str, Any]]:
    """K trials: the families above, alternating SGD and AdamW, lrs spread over a range."""
    out = []
    for i in range(k):
        family, extra = FAMILIES[i % len(FAMILIES)]
        lr_scale = 1.5 ** (i % 5 - 2)
        if i % 2:
            opt = {
                "optimizer": "adamw",
                "lr": 0.003 * lr_scale,
                "beta1": 0.9,
                "beta2": 0.999,
                "weight_decay": 1e-3,
            }
        else:
            opt = {
                "optimizer": "sgd",
                "lr": 0.05 * lr_scale,
                "momentum": 0.9,
                "nesterov": False,
                "weight_decay": 1e-4,
            }
        out.append({**opt, "batch_size": batch_size, "schedule": family, **extra})
    return out


def make_run(
    params: dict[str, Any], seed: int, epochs: int, steps: list[dict[str, Any]] | None = None
) -> Run:
    trial = optuna.create_study(direction="maximize").ask()
    sink = (lambda s, e: steps.extend(s)) if steps is not None else None
    return Run(trial, params, seed=seed, epochs=epochs, args={"hidden": 128}, curves=sink)


def optuna_example_loop(params: dict[str, Any], seed: int, epochs: int) -> float:
    """One trial the way Optuna's PyTorch example trains: DataLoader, module, optimizer."""
    data = digits(torch.device("cpu"))
    trial = optuna.create_study(direction="maximize").ask()
    torch.manual_seed(seed)
    model = digits_mlp.make_model({"hidden": 128})
    run = make_run(params, seed, epochs)
    optimizer = run.optimizer(model.parameters())
    batch = params["batch_size"]
    train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True)
    valid = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=batch)
    scheduler = run.scheduler(optimizer, total_steps=epochs * len(train))
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in valid:
                correct += int((model(x).argmax(dim=1) == y).sum())
        accuracy = correct / len(valid.dataset)  # type: ignore[arg-type]
        trial.report(accuracy, epoch)
    return accuracy


def max_rel_diff(stacked: list[list[dict[str, Any]]], solo: list[list[dict[str, Any]]]) -> float:
    """The largest relative train-loss difference over every logged step of every trial."""
    return max(
        abs(a["train_loss"] - b["train_loss"]) / abs(b["train_loss"])
        for s, o in zip(stacked, solo, strict=True)
        for a, b in zip(s, o, strict=True)
    )


def max_rel_diff_in_float64(settings: list[dict[str, Any]], epochs: int) -> float:
    """`max_rel_diff` of the same trials trained in float64, alone and as one stack."""
    torch.set_default_dtype(torch.float64)
    try:
        solo: list[list[dict[str, Any]]] = [[] for _ in settings]
        for i, p in enumerate(settings):
            digits_mlp(make_run(p, i, epochs, solo[i]))
        stacked: list[list[dict[str, Any]]] = [[] for _ in settings]
        runs = [make_run(p, i, epochs, stacked[i]) for i, p in enumerate(settings)]
        train_stack(digits_mlp, runs)
        for run in runs:
            run.flush()
        return max_rel_diff(stacked, solo)
    finally:
        torch.set_default_dtype(torch.float32)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def matmul_flops_per_second(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    seconds, _ = timed(lambda: [a @ b for _ in range(repeats)])
    return 2 * n**3 * repeats / seconds


def workload_flops(k: int, epochs: int, hidden: int = 128) -> float:
    """Multiply-adds of the MLP: forward + backward (2x forward) per training example,
    forward per validation example."""
    data = digits(torch.device("cpu"))
    forward = 2 * (64 * hidden + hidden * 10)
    per_epoch = 3 * forward * len(data.y_train) + forward * len(data.y_val)
    return k * epochs * per_epoch


def batched_kernels_vs_vmap(k: int, steps: int = 200) -> float:
    """Time of vmap(functional_call) over BatchedModel for one step's loss and gradient."""
    from torch.func import functional_call, vmap

    from objectives.batched_model import BatchedModel

    torch.manual_seed(0)
    models = [digits_mlp.make_model({"hidden": 128}) for _ in range(k)]
    stack = BatchedModel(models[0], models)
    x, y = torch.randn(k, 32, 64), torch.randint(0, 10, (k, 32))
    forward = vmap(lambda p, x: functional_call(models[0], p, (x,)))

    def with_vmap() -> None:
        leaves = {n: p.detach().requires_grad_() for n, p in stack.params().items()}
        logits = forward(leaves, x)
        F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(
            dim=1
        ).sum().backward()

    def with_kernels() -> None:
        stack.loss_and_grad(x, y, cross_entropy)

    times = {}
    for fn in (with_vmap, with_kernels, with_vmap, with_kernels):  # twice: warm, then timed
        times[fn.__name__], _ = timed(lambda fn=fn: [fn() for _ in range(steps)])
    return times["with_vmap"] / times["with_kernels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--scaling", default="1,4,16,64")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="examples per step (Optuna's PyTorch example uses 128)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k, epochs = args.k, args.epochs
    settings = trial_params(k, args.batch_size)
    digits(torch.device("cpu"))  # load the data once, outside every timing
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, digits_mlp "
        f"hidden 128, batch {args.batch_size}, K={k}, {epochs} epochs"
    )

    t_example, _ = timed(
        lambda: [optuna_example_loop(p, i, epochs) for i, p in enumerate(settings)]
    )
    solo_steps: list[list[dict[str, Any]]] = [[] for _ in settings]
    t_solo, _ = timed(
        lambda: [digits_mlp(make_run(p, i, epochs, solo_steps[i])) for i, p in enumerate(settings)]
    )
    stack_steps: list[list[dict[str, Any]]] = [[] for _ in settings]
    runs = [make_run(p, i, epochs, stack_steps[i]) for i, p in enumerate(settings)]
    t_stack, outcomes = timed(lambda: train_stack(digits_mlp, runs))
    for run in runs:
        run.flush()
    assert all(isinstance(o, float) for o in outcomes), outcomes

    peak = matmul_flops_per_second()
    print(f"seconds_optuna_example_loop: {t_example:.2f}")
    print(f"seconds_per_trial_loop: {t_solo:.2f}")
    print(f"seconds_stacked: {t_stack:.2f}")
    print(f"speedup_vs_optuna_example_loop: {t_example / t_stack:.1f}")
    print(f"speedup_vs_per_trial_loop: {t_solo / t_stack:.1f}")
    print(f"fraction_of_matmul_peak: {workload_flops(k, epochs) / t_stack / peak:.3f}")
    print(f"max_rel_diff_vs_solo_float32: {max_rel_diff(stack_steps, solo_steps):.2e}")
    print(f"max_rel_diff_vs_solo_float64: {max_rel_diff_in_float64(settings, epochs):.2e}")

    print(f"batched_kernels_vs_vmap: {batched_kernels_vs_vmap(k):.2f}")
    per_trial = t_solo / k
    for size in (int(s) for s in args.scaling.split(",")):
        sized = trial_params(size, args.batch_size)
        t, _ = timed(
            lambda sized=sized: train_stack(
                digits_mlp, [make_run(p, i, epochs) for i, p in enumerate(sized)]
            )
        )
        print(f"speedup_k{size}: {size * per_trial / t:.1f}")


if __name__ == "__main__":
    main()
