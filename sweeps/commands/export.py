"""`sweeps export --study NAME --out FILE.csv`: every trial with params, values and curves."""

from __future__ import annotations

import argparse

from sweeps.commands.common import add_storage_arguments

HELP = "write every trial (state, value, parameters, validation and lr curves) to a CSV file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="where to write")
    add_storage_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import csv
    from pathlib import Path

    from storage.optuna_internals import trial_id_of
    from sweeps.commands.common import open_database
    from sweeps.errors import UsageError
    from sweeps.study import load
    from sweeps.trial_attrs import REASON, params_of

    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out: directory {str(out.parent)!r} does not exist")
    db = open_database(args)
    handle = load(db, args.study)
    trials = handle.study.get_trials(deepcopy=False)
    param_names = sorted({k for t in trials for k in params_of(t)})
    rows = []
    for t in trials:
        epochs = db.epoch_curve(trial_id_of(t))
        steps = db.step_curve(trial_id_of(t))
        duration = t.duration.total_seconds() if t.duration else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "duration_s": duration,
                "reason": t.user_attrs.get(REASON, ""),
                **{f"param:{k}": v for k, v in params_of(t).items()},
                "val_curve": " ".join(f"{p.value:.6g}" for p in epochs),
                "lr_curve": " ".join(f"{p.step}:{p.lr:.6g}" for p in steps),
                "loss_curve": " ".join(
                    f"{p.step}:{p.train_loss:.6g}" for p in steps if p.train_loss is not None
                ),
            }
        )
    fields = [
        "number",
        "state",
        "value",
        "duration_s",
        "reason",
        *(f"param:{k}" for k in param_names),
        "val_curve",
        "lr_curve",
        "loss_curve",
    ]
    try:
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as e:
        raise UsageError(f"--out: cannot write {str(out)!r}: {e.strerror}") from None
    print(f"wrote {len(rows)} trials to {out}")
    return 0
