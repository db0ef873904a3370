"""Stacked training equals one-at-a-time training: every family, both optimizers, both tasks;
pruning and divergence per trial; checkpoints interchangeable between the two paths.

The equivalence is checked in float64 (`conftest.py`, `equivalence.py`), where it holds to
1e-9 on every CPU; the end of this file shows that a stack that mixes its trials up fails it,
and what float32 itself promises: one step of a stack computes each model's own loss and
gradient to float32 rounding.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
import torch
import torch.nn.functional as F

import schedules
from equivalence import (
    REL,
    Preempted,
    Recorder,
    alone,
    assert_same_curves,
    on_fewer_examples,
    preempt_after,
    stacked_and_alone,
)
from objectives import Diverged, Pool, batched_optim, train, train_stack
from objectives.batched_model import BatchedModel
from objectives.builtin import ClassifierTask, digits_cnn, digits_mlp, tiny_lm
from objectives.losses import cross_entropy

# The equivalence runs: 96 training images in batches of 32 (3 steps an epoch) for 3 epochs,
# on narrow models. Every schedule below changes its lr within those 9 steps (the test
# checks it; the plateau's threshold makes every epoch after the first a stall), and no two
# trials share their hyperparameters, so a row that takes another's lr, momentum, betas,
# gradient, data or state leaves its curve at once (`test_the_check_fails_...`).
EPOCHS = 3
BATCH = 32
MLP = on_fewer_examples(digits_mlp, train=3 * BATCH, val=64)
CNN = on_fewer_examples(digits_cnn, train=3 * BATCH, val=64)
MLP_ARGS = {"hidden": 8}
CNN_ARGS = {"channels": 2}

FAMILY_PARAMS: dict[str, dict[str, Any]] = {
    "constant": {},
    "polynomial": {"polynomial.power": 2.0},
    "inverse_power": {"inverse_power.power": 0.5},
    "grad_norm": {"grad_norm.window": 2, "grad_norm.min_ratio": 0.1, "grad_norm.max_ratio": 4.0},
    "step": {"step.decay_rate": 0.5, "step.decay_steps": 2},
    "exponential": {"exponential.decay_rate": 0.5, "exponential.decay_steps": 3},
    "cosine": {"cosine.warmup_steps": 2},
    "linear": {},
    "wsd": {"wsd.warmup_steps": 2, "wsd.decay_fraction": 0.5},
    "onecycle": {"onecycle.pct_start": 0.3},
    "plateau": {"plateau.patience": 0, "plateau.factor": 0.5, "plateau.threshold": 10.0},
}
OPTIMIZERS = {
    "sgd": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
    },
    "adamw": {
        "optimizer": "adamw",
        "lr": 0.005,
        "beta1": 0.9,
        "beta2": 0.99,
        "weight_decay": 1e-2,
    },
}


def test_every_family_is_covered() -> None:
    assert set(FAMILY_PARAMS) == set(schedules.SCHEDULES)


def trials(batch_size: int = BATCH) -> list[dict[str, Any]]:
    """Every family with both optimizers, each trial with hyperparameters of its own."""
    out = []
    for i, (family, extra) in enumerate(FAMILY_PARAMS.items()):
        own = 1 + i / 10  # lr, weight decay; and momentum or beta1 alternate
        sgd = {**OPTIMIZERS["sgd"], "momentum": (0.9, 0.6)[i % 2]}
        adamw = {**OPTIMIZERS["adamw"], "beta1": (0.9, 0.8)[i % 2]}
        for opt in (sgd, adamw):
            out.append(
                {
                    **opt,
                    "lr": opt["lr"] * own,
                    "weight_decay": opt["weight_decay"] * own,
                    "batch_size": batch_size,
                    "schedule": family,
                    **extra,
                }
            )
    return out


# The CNN's own layers (convolutions, pooling) under both optimizers, an adaptive schedule
# among them; the MLP covers every family with both.
CNN_TRIALS = [
    t
    for t in trials()
    if (t["optimizer"], t["schedule"])
    in {("sgd", "grad_norm"), ("sgd", "step"), ("adamw", "cosine"), ("adamw", "plateau")}
]


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(
    ("task", "settings", "args"),
    [(MLP, trials(), MLP_ARGS), (CNN, CNN_TRIALS, CNN_ARGS)],
    ids=["digits_mlp", "digits_cnn"],
)
def test_each_trial_in_a_stack_equals_the_trial_trained_alone(
    task: ClassifierTask, settings: list[dict[str, Any]], args: dict[str, Any]
) -> None:
    for stacked, single, outcome in stacked_and_alone(task, settings, EPOCHS, args):
        assert_same_curves(stacked, single)
        assert outcome == pytest.approx(single.epochs[-1]["value"], rel=REL)
        # Each schedule changes its lr within these few steps, so a row that follows
        # another's schedule shows.
        lrs = {point["lr"] for point in single.steps}
        assert (len(lrs) > 1) == (single.run.params["schedule"] != "constant"), lrs


@pytest.mark.usefixtures("float64")
def test_a_diverging_trial_leaves_the_stack_and_the_others_are_unaffected() -> None:
    good = {**OPTIMIZERS["sgd"], "batch_size": BATCH, "schedule": "cosine"}
    bad = {**good, "lr": 1e100, "weight_decay": 1.0}  # overflows float64 within 3 steps
    stacked = [
        Recorder(p, seed=i, epochs=2, args=MLP_ARGS) for i, p in enumerate([good, bad, good])
    ]
    outcomes = train_stack(MLP, [r.run for r in stacked])
    assert isinstance(outcomes[1], Diverged)
    assert "train loss is" in str(outcomes[1])
    for i in (0, 2):
        stacked[i].run.flush()
        assert_same_curves(stacked[i], alone(MLP, good, seed=i, epochs=2, args=MLP_ARGS))


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes the first trial of its own study after epoch 1 (each Recorder has a study)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step == 1


@pytest.mark.usefixtures("float64")
def test_a_pruned_trial_leaves_the_stack_and_the_others_are_unaffected() -> None:
    params = {**OPTIMIZERS["adamw"], "batch_size": BATCH, "schedule": "linear"}
    stacked = [Recorder(params, seed=i, epochs=2, args=MLP_ARGS) for i in range(3)]
    pruned = Recorder(params, seed=3, epochs=2, args=MLP_ARGS, pruner=PruneTrialOne())
    outcomes = train_stack(MLP, [stacked[0].run, pruned.run, stacked[1].run, stacked[2].run])
    assert isinstance(outcomes[1], optuna.TrialPruned)
    assert [e["epoch"] for e in pruned.epochs] == [1]
    for i, rec in enumerate(stacked):
        rec.run.flush()
        assert_same_curves(rec, alone(MLP, params, seed=i, epochs=2, args=MLP_ARGS))


@pytest.mark.usefixtures("float64")
def test_a_stacked_checkpoint_resumes_alone_exactly() -> None:
    settings = [
        {
            **OPTIMIZERS[o],
            "batch_size": BATCH,
            "schedule": "grad_norm",
            **FAMILY_PARAMS["grad_norm"],
        }
        for o in OPTIMIZERS
    ]
    full = [alone(MLP, p, seed=i, epochs=3, args=MLP_ARGS) for i, p in enumerate(settings)]
    # Train both in a stack, stopping after epoch 2 (after its checkpoint is written).
    stacked = [Recorder(p, seed=i, epochs=3, args=MLP_ARGS) for i, p in enumerate(settings)]
    preempt_after(stacked, epoch=2)
    with pytest.raises(Preempted):
        train_stack(MLP, [r.run for r in stacked])

    for i, params in enumerate(settings):
        resumed = Recorder(params, seed=i, epochs=3, args=MLP_ARGS)
        resumed.saved = stacked[i].saved
        assert resumed.saved is not None
        value = MLP(resumed.run)  # alone, from the stacked trial's checkpoint
        expected = full[i].epochs[-1]["value"]
        assert value == pytest.approx(expected, rel=REL)
        assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
        resumed.run.flush()
        assert_same_curves(resumed, full[i])  # the checkpoint's step curve is replayed too


@pytest.mark.usefixtures("float64")
def test_trials_joining_a_running_pool_train_as_they_would_alone() -> None:
    """A worker's pool takes new trials between epochs: fresh ones of either optimizer (the
    rows are reordered by kind), one resuming from another run's checkpoint at another
    epoch, one with another batch size (a second stack). Every curve equals its trial's
    alone, and each trial ends when its own epochs are done."""
    sgd = {**OPTIMIZERS["sgd"], "batch_size": BATCH, "schedule": "wsd", **FAMILY_PARAMS["wsd"]}
    adamw = {
        **OPTIMIZERS["adamw"],
        "batch_size": BATCH,
        "schedule": "grad_norm",
        **FAMILY_PARAMS["grad_norm"],
    }
    small_batches = {**sgd, "batch_size": BATCH // 2}

    def recorder(params: dict[str, Any], seed: int, epochs: int = 3) -> Recorder:
        return Recorder(params, seed=seed, epochs=epochs, args=MLP_ARGS)

    earlier = recorder(adamw, seed=4)  # stopped after its first epoch elsewhere
    preempt_after([earlier], epoch=1)
    with pytest.raises(Preempted):
        train_stack(MLP, [earlier.run])

    first = [recorder(adamw, seed=0), recorder(sgd, seed=1)]
    resumed = recorder(adamw, seed=4)
    resumed.saved = earlier.saved
    later = [recorder(sgd, seed=2), recorder(adamw, seed=3), resumed]
    later.append(recorder(small_batches, seed=5, epochs=2))
    pool = Pool(MLP)
    assert pool.join([r.run for r in first]) == []
    assert pool.train_epoch() == []
    assert pool.join([r.run for r in later]) == []
    assert (len(pool), len(pool.stacks)) == (6, 2)

    ended_in_round: dict[int, int] = {}
    outcomes: dict[int, Any] = {}
    for round_ in (2, 3, 4):
        for run, outcome in pool.train_epoch():
            ended_in_round[id(run)], outcomes[id(run)] = round_, outcome
    assert not pool
    expected_round = [3, 3, 4, 4, 3, 3]  # the resumed one had one epoch done already
    for rec, when in zip(first + later, expected_round, strict=True):
        assert ended_in_round[id(rec.run)] == when
        assert isinstance(outcomes[id(rec.run)], float)
        rec.run.flush()
    settings = [(adamw, 0, 3), (sgd, 1, 3), (sgd, 2, 3), (adamw, 3, 3), (adamw, 4, 3)]
    settings.append((small_batches, 5, 2))
    for rec, (params, seed, epochs) in zip(first + later, settings, strict=True):
        assert_same_curves(rec, alone(MLP, params, seed=seed, epochs=epochs, args=MLP_ARGS))


# A stack that mixes its trials up fails the check, at the sizes of the equivalence tests
# above: each breakage below acts only where trials share a stack (rolling the rows of a
# stack of one changes nothing), or only on a resume. Without them the same checks pass
# (`test_the_check_passes_an_unbroken_stack`).
MIXED = [
    {**OPTIMIZERS["sgd"], "batch_size": BATCH, "schedule": "cosine"},
    {
        **OPTIMIZERS["sgd"],
        "lr": 0.05,
        "momentum": 0.5,
        "batch_size": BATCH,
        "schedule": "grad_norm",
        **FAMILY_PARAMS["grad_norm"],
    },
    {**OPTIMIZERS["adamw"], "batch_size": BATCH, "schedule": "step", **FAMILY_PARAMS["step"]},
    {**OPTIMIZERS["adamw"], "lr": 0.002, "beta1": 0.8, "batch_size": BATCH, "schedule": "linear"},
]


def check_stacked() -> float:
    """Returns the largest relative difference between a stacked curve and its alone one."""
    return max(
        assert_same_curves(stacked, single)
        for stacked, single, _ in stacked_and_alone(MLP, MIXED, EPOCHS, MLP_ARGS)
    )


def check_resumed() -> None:
    """Stacked, preempted after epoch 1, resumed in a stack: as if never interrupted."""
    first = [Recorder(p, seed=i, epochs=EPOCHS, args=MLP_ARGS) for i, p in enumerate(MIXED)]
    preempt_after(first, epoch=1)
    with pytest.raises(Preempted):
        train_stack(MLP, [r.run for r in first])
    resumed = [Recorder(p, seed=i, epochs=EPOCHS, args=MLP_ARGS) for i, p in enumerate(MIXED)]
    for rec, earlier in zip(resumed, first, strict=True):
        assert earlier.saved is not None
        rec.saved = earlier.saved
    train_stack(MLP, [r.run for r in resumed])
    for i, rec in enumerate(resumed):
        rec.run.flush()
        assert_same_curves(rec, alone(MLP, MIXED[i], seed=i, epochs=EPOCHS, args=MLP_ARGS))


def _wrap(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, wrapper: Any) -> None:
    """Replace ``owner.name`` by ``wrapper(original, *args)``."""
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **kw: wrapper(original, *a, **kw))


def _rotated(values: list[float]) -> list[float]:
    return values[1:] + values[:1]


def lrs_of_other_rows(mp: pytest.MonkeyPatch) -> None:
    for kind in (batched_optim.BatchedSGD, batched_optim.BatchedAdamW):
        _wrap(mp, kind, "step", lambda step, self, p, g, lrs: step(self, p, g, _rotated(lrs)))


def momentum_of_other_rows(mp: pytest.MonkeyPatch) -> None:
    def columns(original: Any, self: batched_optim.BatchedSGD) -> None:
        original(self)
        self.momentum = self.momentum.roll(1, dims=0)

    _wrap(mp, batched_optim.BatchedSGD, "_columns", columns)


def gradients_of_other_rows(mp: pytest.MonkeyPatch) -> None:
    def loss_and_grad(original: Any, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        losses, grad = original(*args)
        return losses, grad.roll(1, dims=0)

    _wrap(mp, BatchedModel, "loss_and_grad", loss_and_grad)


def data_order_of_the_first_row(mp: pytest.MonkeyPatch) -> None:
    def train_steps(original: Any, self: train.Stack) -> None:
        for row in self.rows[1:]:
            row.shuffle.set_state(self.rows[0].shuffle.get_state())
        original(self)

    _wrap(mp, train.Stack, "_train_steps", train_steps)


def optimizer_state_not_restored(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(train, "row_from_torch", lambda state, names: {})


def schedule_state_not_restored(mp: pytest.MonkeyPatch) -> None:
    def resume(original: Any, self: Any, saved: dict[str, Any]) -> None:
        original(self, {**saved, "scheduler": self.scheduler.state_dict()})

    _wrap(mp, train._Trial, "resume", resume)


def data_order_not_restored(mp: pytest.MonkeyPatch) -> None:
    def resume(original: Any, self: Any, saved: dict[str, Any]) -> None:
        original(self, {**saved, "shuffle": self.shuffle.get_state()})

    _wrap(mp, train._Trial, "resume", resume)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(
    ("breakage", "check"),
    [
        (lrs_of_other_rows, check_stacked),
        (momentum_of_other_rows, check_stacked),
        (gradients_of_other_rows, check_stacked),
        (data_order_of_the_first_row, check_stacked),
        (optimizer_state_not_restored, check_resumed),
        (schedule_state_not_restored, check_resumed),
        (data_order_not_restored, check_resumed),
    ],
    ids=lambda f: f.__name__,
)
def test_the_check_fails_a_stack_that_mixes_its_trials_up(
    breakage: Any, check: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    breakage(monkeypatch)
    with pytest.raises(AssertionError):
        check()


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("check", [check_stacked, check_resumed], ids=lambda f: f.__name__)
def test_the_check_passes_an_unbroken_stack(check: Any) -> None:
    check()


@pytest.mark.usefixtures("float64")
def test_the_check_passes_a_stack_whose_kernels_round_differently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another CPU's kernels, simulated: every gradient of a stack (never of a trial alone)
    is off by a few float64 ulps, at every step. Training amplifies that, but it stays far
    below `REL`: the check holds on any CPU, as the mixed-up stacks above fail it on any."""
    noise = torch.Generator().manual_seed(0)

    def loss_and_grad(original: Any, self: BatchedModel, *args: Any) -> Any:
        losses, grad = original(self, *args)
        if len(self.flat) > 1:
            grad.mul_(1 + 4e-16 * torch.randn(grad.shape, generator=noise))
        return losses, grad

    _wrap(monkeypatch, BatchedModel, "loss_and_grad", loss_and_grad)
    assert 0 < check_stacked() < REL / 100  # the noise shows, a hundredth of the tolerance


@pytest.mark.parametrize("task", [digits_mlp, digits_cnn, tiny_lm], ids=lambda t: t.name)
def test_one_float32_step_of_a_stack_is_each_models_own_to_float32_rounding(
    task: ClassifierTask,
) -> None:
    """What float32 promises on any CPU: a stack's loss and gradient for each row equal
    that model's own, computed by its ``nn.Module`` forward and autograd, to rounding."""
    args = {"dim": 8, "heads": 2, "layers": 1} if task is tiny_lm else {}
    data = task.data(torch.device("cpu"))
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        models.append(task.make_model(args))
    batches = torch.stack(
        [
            torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(s))[:32]
            for s in range(4)
        ]
    )
    stack = BatchedModel(models[0], models)
    losses, grad = stack.loss_and_grad(data.x_train[batches], data.y_train[batches], cross_entropy)
    for k, model in enumerate(models):
        x, y = data.x_train[batches[k]], data.y_train[batches[k]]
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.flatten())
        own = torch.autograd.grad(loss, list(model.parameters()))
        own_flat = torch.cat([g.flatten() for g in own])
        torch.testing.assert_close(losses[k], loss.detach(), rtol=1e-5, atol=0)
        scale = float(own_flat.abs().max())
        torch.testing.assert_close(grad[k], own_flat, rtol=1e-4, atol=1e-5 * scale)
