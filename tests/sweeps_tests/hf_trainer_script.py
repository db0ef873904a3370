"""An HF Trainer script for command-trial tests: the scheduler comes from its own flags
(``{hf_args}`` in the sweep's command). It prints, as JSON lines, the lr each optimizer
step ran at and the eval loss."""

from __future__ import annotations

import json

import torch
from torch import nn
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments


class Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


class PrintLr(TrainerCallback):
    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
        lr = optimizer.param_groups[0]["lr"]
        print(json.dumps({"step": state.global_step + 1, "lr": lr}), flush=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
        print(json.dumps({"step": state.global_step, "value": metrics["eval_loss"]}), flush=True)


(args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses()
torch.manual_seed(args.seed)
x = torch.randn(64, 4)
data = [{"x": x[i], "labels": x[i].sum()} for i in range(64)]
trainer = Trainer(
    model=Regression(),
    args=args,
    train_dataset=data,
    eval_dataset=data[:16],
    callbacks=[PrintLr()],
)
trainer.train()
