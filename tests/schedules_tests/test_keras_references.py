"""Closed forms against Keras' own schedules (the keras package on its torch backend, float64)."""

from __future__ import annotations

import keras  # conftest.py selects the torch backend
import numpy as np
import pytest

import schedules

keras.config.set_floatx("float64")
ks = keras.optimizers.schedules

STEPS = np.arange(10_000)
LR = 0.1


def keras_lrs(schedule: object) -> np.ndarray:
    return np.asarray(schedule(STEPS), dtype=np.float64)  # type: ignore[operator]


def ours(name: str, **params: object) -> np.ndarray:
    sched = schedules.build(name, lr=LR, **params)
    return np.array([sched.lr_at(int(t)) for t in STEPS])


CASES = {
    "exponential": (
        {"decay_rate": 0.5, "decay_steps": 1000},
        ks.ExponentialDecay(LR, decay_steps=1000, decay_rate=0.5),
    ),
    "step": (
        {"decay_rate": 0.8, "decay_steps": 600},
        ks.ExponentialDecay(LR, decay_steps=600, decay_rate=0.8, staircase=True),
    ),
    "inverse_power": (
        # Keras' lr/(1 + rate·t/steps) is γ = 1 with timescale steps/rate.
        {"power": 1.0, "timescale": 500 / 2.0},
        ks.InverseTimeDecay(LR, decay_steps=500, decay_rate=2.0),
    ),
    "polynomial": (
        {"total_steps": 7000, "power": 1.7, "min_lr": 0.004},
        ks.PolynomialDecay(LR, decay_steps=7000, end_learning_rate=0.004, power=1.7),
    ),
    "cosine": (
        {"total_steps": 8000, "min_lr": 0.1 * LR},
        ks.CosineDecay(LR, decay_steps=8000, alpha=0.1),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_closed_form_matches_keras_schedule(name: str) -> None:
    params, reference = CASES[name]
    np.testing.assert_allclose(ours(name, **params), keras_lrs(reference), rtol=1e-6, atol=1e-15)
