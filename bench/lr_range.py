"""Does `sweeps lr-range` suggest a good lr range? Two questions, on the demo's config:

    .venv/bin/python bench/lr_range.py [--config examples/digits.yaml] [--seeds 3] [--trials 40]

1. For each seed, the suggested range, and whether it contains the band in which the demo's
   full searches found their best lr (BENCHMARKS.md, "Which sampler?": 0.006–0.23 in 20 of
   20 studies).
2. A study of ``--trials`` trials with the suggested range against the same study with the
   config's hand-set range, seed by seed (sampler and study seed), on fresh SQLite files:
   the best value of each, their means and the mean difference (suggested minus hand-set).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

BEST_BAND = (0.006, 0.23)  # where the demo's 20 full studies found their best lr


def sweeps(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sweeps", *args], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"sweeps {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def suggest(config: Path, seed: int, workdir: Path) -> tuple[float, float]:
    out = sweeps(
        "lr-range",
        str(config),
        "--seed",
        str(seed),
        "--out",
        str(workdir / f"s{seed}.png"),
        cwd=workdir,
    )
    found = re.search(r"suggested space.lr: \{low: (\S+), high: (\S+), log: true\}", out)
    assert found, out
    return float(found[1]), float(found[2])


def best_of_study(
    data: dict[str, Any], lr: dict[str, Any], seed: int, trials: int, workdir: Path, name: str
) -> float:
    config = {**data, "study": name, "seed": seed}
    config["budget"] = {**data["budget"], "trials": trials}
    config["sampler"] = {**data["sampler"], "seed": seed}
    config["space"] = {**data["space"], "lr": lr}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"sqlite:///{workdir / f'{name}.db'}"
    sweeps("run", str(path), "--workers", "2", "--storage", url, cwd=workdir)
    return float(optuna.load_study(study_name=name, storage=url).best_value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("examples/digits.yaml"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    config = args.config.resolve()
    data = yaml.safe_load(config.read_text())
    hand_set = data["space"]["lr"]
    print(f"config: {args.config}  hand-set space.lr: {hand_set}")
    differences, suggested_best, hand_best, contained = [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for seed in range(args.seeds):
            low, high = suggest(config, seed, workdir)
            inside = low <= BEST_BAND[0] and BEST_BAND[1] <= high
            contained += inside
            lr = {"low": low, "high": high, "log": True}
            ours = best_of_study(data, lr, seed, args.trials, workdir, f"suggested{seed}")
            theirs = best_of_study(data, hand_set, seed, args.trials, workdir, f"hand{seed}")
            suggested_best.append(ours)
            hand_best.append(theirs)
            differences.append(ours - theirs)
            print(
                f"seed {seed}: suggested lr {low:g}–{high:g} (contains {BEST_BAND[0]}–"
                f"{BEST_BAND[1]}: {'yes' if inside else 'no'}); best after {args.trials} "
                f"trials: suggested {ours:.4f}, hand-set {theirs:.4f}"
            )

    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f}"

    print(f"suggested_range_contains_best_band: {contained}/{args.seeds}")
    print(f"best_suggested: {spread(suggested_best)}")
    print(f"best_hand_set: {spread(hand_best)}")
    print(f"best_suggested_minus_hand_set_mean: {statistics.mean(differences):+.4f}")


if __name__ == "__main__":
    main()
