"""A Lightning user's objective: their own LightningModule (a small CNN with BatchNorm and
dropout on scikit-learn's digits) swept with one call of glue, `objectives.lightning.fit`.

Run it from the repository root: `sweeps run examples/lightning.yaml --workers 2`. The
module is plain Lightning; lr-sweeps gives it the trial's optimizer and schedule, reports
`val_acc` each epoch for pruning, checkpoints with Lightning's own files and resumes from
them after a kill or a SIGTERM.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from objectives import Run
from objectives.data import digits
from objectives.lightning import fit


class DigitsCNN(pl.LightningModule):
    def __init__(self, channels: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * 16, 10),
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())


def objective(run: Run) -> float:
    data = digits(torch.device("cpu"))
    train = DataLoader(
        TensorDataset(data.x_train, data.y_train),
        batch_size=int(run.params["batch_size"]),
        shuffle=True,
    )
    val = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=512)
    return fit(
        run,
        lambda: DigitsCNN(**run.args),  # built after seeding with the trial's seed
        monitor="val_acc",
        train_dataloaders=train,
        val_dataloaders=val,
    )
