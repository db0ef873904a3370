"""`tiny_lm`: a character-level transformer on text that ships with Python. It learns,
is deterministic, stacks like the digits tasks, and runs through the real CLI."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

import objectives
from equivalence import REL, Recorder, alone, assert_same_curves, stacked_and_alone
from objectives.batched_model import BatchedModel
from objectives.builtin import tiny_lm
from objectives.data import CONTEXT, Split, pydoc_topics, text_vocab
from sweeps_helpers import config, sweeps

ADAMW: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "beta1": 0.9,
    "beta2": 0.99,
    "weight_decay": 0.01,
    "batch_size": 32,
}
SETTINGS: list[dict[str, Any]] = [
    {**ADAMW, "schedule": "cosine", "cosine.warmup_steps": 2},
    {**ADAMW, "lr": 1e-3, "schedule": "constant"},
    {**ADAMW, "schedule": "wsd", "wsd.warmup_steps": 2, "wsd.decay_fraction": 0.5},
    {
        **ADAMW,
        "optimizer": "sgd",
        "lr": 0.3,
        "momentum": 0.9,
        "nesterov": False,
        "schedule": "grad_norm",
        "grad_norm.window": 2,
        "grad_norm.min_ratio": 0.1,
        "grad_norm.max_ratio": 4.0,
    },
]
# Every kind of layer, narrow; and for the equivalence runs, 3 batches an epoch of windows
# of 16 characters (the model reads a window shorter than its context as its start).
SMALL = {"dim": 8, "heads": 2, "layers": 1}


def _short_windows(device: Any) -> Split:
    full = pydoc_topics(device)
    train, val = 3 * ADAMW["batch_size"], 32
    return Split(
        full.x_train[:train, :16],
        full.y_train[:train, :16],
        full.x_val[:val, :16],
        full.y_val[:val, :16],
    )


SHORT = dataclasses.replace(tiny_lm, make_data=_short_windows)


def unigram_cross_entropy() -> float:
    """Nats per character of the best context-free guess: training-text character
    frequencies, scored on the validation targets."""
    data = pydoc_topics(torch.device("cpu"))
    counts = torch.bincount(data.y_train.flatten(), minlength=text_vocab()).double() + 1
    log_p = (counts / counts.sum()).log()
    return float(-log_p[data.y_val.flatten()].mean())


def test_tiny_lm_data_is_next_character_windows_of_the_shipped_text() -> None:
    data = pydoc_topics(torch.device("cpu"))
    assert data.x_train.shape == data.y_train.shape and data.x_train.shape[1] == CONTEXT
    assert data.x_val.shape == data.y_val.shape and data.x_val.shape[1] == CONTEXT
    assert torch.equal(data.y_train[:, :-1], data.x_train[:, 1:])
    assert torch.equal(data.y_val[:, :-1], data.x_val[:, 1:])
    assert int(data.x_train.max()) < text_vocab() and text_vocab() > 60
    assert torch.equal(pydoc_topics(torch.device("cpu")).x_train, data.x_train)  # fixed


def test_tiny_lm_loss_falls_below_the_unigram_entropy() -> None:
    entropy = unigram_cross_entropy()
    assert 2.5 < entropy < 4.0  # English characters: about 3.2 nats
    learning = {**ADAMW, "lr": 1e-2, "schedule": "cosine", "cosine.warmup_steps": 8}
    rec = alone(tiny_lm, learning, seed=0, epochs=3, args={"dim": 32, "heads": 2, "layers": 1})
    losses = [e["value"] for e in rec.epochs]
    value = losses[-1]
    assert value == rec.epochs[-1]["val_loss"]  # the metric is the loss
    assert losses[0] > losses[-1]
    assert value < entropy - 0.3, (value, entropy)


def test_tiny_lm_same_seed_gives_the_same_curve() -> None:
    first, again, other = (
        alone(tiny_lm, SETTINGS[0], seed=s, epochs=1, args=SMALL) for s in (3, 3, 4)
    )
    assert first.steps == again.steps and first.epochs == again.epochs
    assert first.steps != other.steps


@pytest.mark.usefixtures("float64")
def test_tiny_lm_each_trial_in_a_stack_equals_the_trial_trained_alone() -> None:
    for stacked, single, outcome in stacked_and_alone(SHORT, SETTINGS, 2, SMALL):
        assert_same_curves(stacked, single)
        assert outcome == pytest.approx(single.epochs[-1]["value"], rel=REL)
        lrs = {point["lr"] for point in single.steps}  # each schedule changes the lr
        assert (len(lrs) > 1) == (single.run.params["schedule"] != "constant"), lrs


def test_tiny_lm_model_alone_computes_what_its_stack_of_one_computes() -> None:
    torch.manual_seed(0)
    model = tiny_lm.make_model(SMALL)
    ids = pydoc_topics(torch.device("cpu")).x_val[:4]
    with torch.no_grad():
        solo = model(ids)
        stack = BatchedModel(model, [model]).forward(ids[None])[0]
    assert solo.shape == (4, CONTEXT, text_vocab())
    torch.testing.assert_close(solo, stack, rtol=1e-5, atol=1e-5)


def test_tiny_lm_refuses_to_maximize_its_loss() -> None:
    run = Recorder(SETTINGS[0], seed=0, epochs=1).run  # maximizing
    with pytest.raises(ValueError, match="set direction: minimize"):
        tiny_lm(run)


@pytest.mark.e2e
def test_tiny_lm_is_a_builtin_that_runs_through_the_cli(tmp_path: Path) -> None:
    assert objectives.resolve("tiny_lm") is tiny_lm
    path = config(
        tmp_path,
        study="lm",
        objective="tiny_lm",
        objective_args=SMALL,
        direction="minimize",
        budget={"trials": 3, "epochs": 2},
        space={
            "lr": {"low": 1e-3, "high": 1e-2, "log": True},
            "optimizer": "adamw",
            "batch_size": 64,
            "schedule": {"constant": {}, "cosine": {"warmup_steps": [0, 4]}},
        },
    )
    url = f"sqlite:///{tmp_path / 'lm.db'}"
    done = sweeps(
        "run", str(path), "--workers", "1", "--stack", "2", "--storage", url, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "cannot be stacked" not in done.stdout + done.stderr
    study = optuna.load_study(study_name="lm", storage=url)
    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(values) == 3
    assert all(v is not None and 0 < v < math.log(text_vocab()) for v in values)
