"""An HF Trainer user's objective: a small model trained by `transformers.Trainer` on
scikit-learn's digits, swept with one call of glue, `objectives.transformers.train`.

Run it from the repository root: `sweeps run examples/hf.yaml --workers 2`. The Trainer
gets the trial's optimizer, schedule and batch size; each evaluation is reported for
pruning; the Trainer's own checkpoint folders serve resume after a kill or a SIGTERM.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from objectives import Run
from objectives.data import digits
from objectives.transformers import train


class DigitsClassifier(nn.Module):
    """What a Trainer expects of a model: a forward that returns the loss with the logits."""

    def __init__(self, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class Examples(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def accuracy(prediction: Any) -> dict[str, float]:
    logits, labels = prediction
    return {"accuracy": float((np.argmax(logits, axis=1) == labels).mean())}


def objective(run: Run) -> float:
    data = digits(torch.device("cpu"))
    return train(
        run,
        lambda: DigitsClassifier(**run.args),  # built after seeding with the trial's seed
        monitor="accuracy",
        train_dataset=Examples(data.x_train, data.y_train),
        eval_dataset=Examples(data.x_val, data.y_val),
        compute_metrics=accuracy,
    )
