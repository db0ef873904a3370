"""Malformed sweep configs through the CLI: `sweeps validate` and `sweeps launch` must exit 2
with one ``error: field: why`` line per problem, never a traceback, and write nothing.

The corpus runs through `sweeps.cli.main` in this process (`cli_in_process`: an exception it
lets through fails the test, as a traceback would); the real program runs the base config, a
config with many mistakes, and the configs whose process matters (a fresh process's stack and
memory against a 5000-deep nesting and an alias bomb).
Cases marked xfail are bugs in the source, kept here until they are fixed.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from cli_in_process import InProcess

from sweeps.config import MAX_CONFIG_BYTES
from sweeps_helpers import sweeps

# A valid config shaped like examples/digits.yaml, with small budgets; cases alter one part.
BASE: dict[str, Any] = {
    "study": "config-errors",
    "objective": "digits_mlp",
    "objective_args": {"hidden": 32},
    "direction": "maximize",
    "budget": {"trials": 4, "epochs": 3},
    "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 2},
    "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3},
    "space": {
        "lr": {"low": 1.0e-3, "high": 1.0, "log": True},
        "optimizer": ["sgd", "adamw"],
        "momentum": {"low": 0.0, "high": 0.95},
        "weight_decay": {"low": 1.0e-6, "high": 1.0e-2, "log": True},
        "batch_size": [32, 64],
        "schedule": {
            "constant": {},
            "step": {
                "decay_rate": {"low": 0.3, "high": 0.95},
                "decay_steps": {"low": 20, "high": 400, "log": True},
            },
            "cosine": {"warmup_steps": [0, 10]},
            "grad_norm": {"window": [10, 50]},
        },
    },
}
# A space without ranges, for the grid sampler: 2 lrs x 2 families = 4 combinations.
GRID_SPACE: dict[str, Any] = {
    "lr": [0.1, 0.01],
    "optimizer": "sgd",
    "schedule": {"constant": {}, "step": {"decay_steps": 10}},
}
# Four lists of 60 values: a 1 KB config whose grid has 60**4 points.
HUGE_GRID_SPACE: dict[str, Any] = {
    "lr": [round(0.001 * (i + 1), 3) for i in range(60)],
    "optimizer": "sgd",
    "momentum": [i / 100 for i in range(60)],
    "weight_decay": [i / 10_000 for i in range(60)],
    "batch_size": list(range(1, 61)),
    "schedule": {"constant": {}},
}
CONFIG = "config.yaml"


@dataclass(frozen=True, eq=False)
class Case:
    """One config: ``make`` writes it (and anything it needs) into a directory and returns
    the CONFIG argument; every path in ``fields`` must start one of the error lines."""

    id: str
    make: Callable[[Path], str]
    fields: tuple[str, ...]
    launch: bool = False  # also run `sweeps launch` (a representative third of the cases)


@dataclass(frozen=True)
class Run:
    argv: list[str]
    cwd: Path
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ sweeps {' '.join(self.argv)}  (in {self.cwd})\nexit code {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def storage_url(directory: Path) -> str:
    return f"sqlite:///{directory / 's.db'}"


def run_cli(argv: list[str], cwd: Path) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEPS_")}
    done = subprocess.run(
        [sys.executable, "-m", "sweeps", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Run(argv, cwd, done.returncode, done.stdout, done.stderr)


# --- building cases -------------------------------------------------------------------------


def write_text(text: str) -> Callable[[Path], str]:
    def make(directory: Path) -> str:
        (directory / CONFIG).write_text(text, encoding="utf-8")
        return CONFIG

    return make


def write_bytes(data: bytes) -> Callable[[Path], str]:
    def make(directory: Path) -> str:
        (directory / CONFIG).write_bytes(data)
        return CONFIG

    return make


def dump(config: Any) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def base_text() -> str:
    return dump(BASE)


def base_with(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], str]:
    config = copy.deepcopy(BASE)
    edit(config)
    return write_text(dump(config))


def deeply_nested(depth: int) -> str:
    """The base config whose objective_args hold lists nested ``depth`` deep."""
    rest = dump({k: v for k, v in BASE.items() if k != "objective_args"})
    return rest + "objective_args: {x: " + "[" * depth + "]" * depth + "}\n"


def flow(value: Any) -> str:
    """A value as short flow YAML, for test ids: 0, ten, '10', [32, 32], {low: 0.9, high: 0.3}."""
    listed = yaml.safe_dump([value], default_flow_style=True, sort_keys=False, width=999)
    return listed.strip()[1:-1]


def param(case: Case, xfail: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(case, id=case.id, marks=marks)


def edited(
    id: str,
    edit: Callable[[dict[str, Any]], None],
    *fields: str,
    launch: bool = False,
    xfail: str | None = None,
) -> Any:
    """The base config changed in place by ``edit``."""
    return param(Case(id, base_with(edit), fields, launch), xfail)


def _parent(config: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, key = path.split(".")
    for part in parents:
        config = config[part]
    return config, key


def changed(
    path: str,
    value: Any,
    *fields: str,
    launch: bool = False,
    xfail: str | None = None,
) -> Any:
    """The base config with the field at dotted ``path`` set to ``value``."""

    def edit(config: dict[str, Any]) -> None:
        parent, key = _parent(config, path)
        parent[key] = value

    return edited(f"{path}={flow(value)}", edit, *(fields or (path,)), launch=launch, xfail=xfail)


def own_arg(name: str, spec: Any, *fields: str, launch: bool = False) -> Any:
    """The base config searching the objective's own parameter ``name`` over ``spec``."""
    return edited(
        f"space.args.{name}={flow(spec)}",
        lambda c: c["space"].update(args={name: spec}),
        *(fields or (f"space.args.{name}",)),
        launch=launch,
    )


def dropped(path: str, *fields: str, launch: bool = False) -> Any:
    """The base config without the field at dotted ``path``."""

    def edit(config: dict[str, Any]) -> None:
        parent, key = _parent(config, path)
        del parent[key]

    return edited(f"no {path}", edit, *(fields or (path,)), launch=launch)


def renamed(path: str, new: str, *fields: str, launch: bool = False) -> Any:
    """The base config with the key at dotted ``path`` renamed to ``new`` (a typo)."""

    def edit(config: dict[str, Any]) -> None:
        parent, key = _parent(config, path)
        parent[new] = parent.pop(key)

    return edited(f"{path} spelt {new}", edit, *fields, launch=launch)


def text(
    id: str, content: str, *fields: str, launch: bool = False, xfail: str | None = None
) -> Any:
    return param(Case(id, write_text(content), fields, launch), xfail)


def raw(
    id: str,
    make: Callable[[Path], str],
    *fields: str,
    launch: bool = False,
    xfail: str | None = None,
) -> Any:
    return param(Case(id, make, fields, launch), xfail)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level lists the previous one ``width`` times (9**9 strings)."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def oversized() -> str:
    padding = "# padding to push the file past the size limit\n"
    return base_text() + padding * (MAX_CONFIG_BYTES // len(padding) + 1)


def directory_named_config(directory: Path) -> str:
    (directory / CONFIG).mkdir()
    return CONFIG


def objective_with_syntax_error(directory: Path) -> str:
    (directory / "broken_objective.py").write_text("def fn(run:\n    return 1.0\n")
    (directory / CONFIG).write_text(dump({**BASE, "objective": "broken_objective:fn"}))
    return CONFIG


def objective_a_torch_module(directory: Path) -> str:
    (directory / "net.py").write_text("from torch import nn\n\nclass Net(nn.Module):\n    pass\n")
    (directory / CONFIG).write_text(dump({**BASE, "objective": "net:Net"}))
    return CONFIG


def grid(trials: int, space: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["sampler"] = {"name": "grid"}
        config["budget"]["trials"] = trials
        config["space"] = space

    return edit


def several_mistakes(config: dict[str, Any]) -> None:
    """Independent mistakes at every level: top-level fields, budget, sampler, training
    parameters, families and their parameters."""
    config["direction"] = "up"
    config["device"] = "gpu"
    config["verbose"] = True
    config["objective_args"] = ["hidden", 32]
    config["budget"]["trials"] = 0
    config["budget"]["max_failures"] = 0
    config["sampler"]["n_startup"] = 5
    space = config["space"]
    space["optimizer"] = "sgdd"
    space["momentum"] = 1.0
    space["learning_rate"] = 0.1
    schedule = space["schedule"]
    schedule["cosin"] = schedule.pop("cosine")
    schedule["grad_norm"]["total_steps"] = 100
    schedule["step"]["decay_rate"]["high"] = 1.5
    del schedule["step"]["decay_steps"]


def several_mistakes_and_an_unknown_objective(config: dict[str, Any]) -> None:
    several_mistakes(config)
    config["objective"] = "nope"


SEVERAL_MISTAKES = (
    "direction",
    "device",
    "verbose",
    "objective_args",
    "budget.trials",
    "budget.max_failures",
    "sampler.n_startup",
    "space.optimizer",
    "space.momentum",
    "space.learning_rate",
    "space.schedule.cosin",
    "space.schedule.grad_norm.total_steps",
    "space.schedule.step.decay_rate.high",
    "space.schedule.step.decay_steps",
)

CASES = [
    # Wrong types.
    changed("budget.trials", "ten", launch=True),
    changed("study", ["a", "b"]),
    changed("space.schedule.step", 5),
    changed("objective", ""),
    changed("objective", {"command": ["python", 3]}, "objective.command"),
    changed(
        "budget.trials",
        True,
        launch=True,
    ),
    # Out-of-range numbers.
    changed("budget.trials", 0, launch=True),
    changed("budget.epochs", -1),
    changed("space.momentum", 1.0),
    changed("space.schedule.step.decay_rate.high", 1.5),
    changed("space.lr", 0),
    edited(
        "pruner.successive_halving.min_resource=0",
        lambda c: c.update(pruner={"name": "successive_halving", "min_resource": 0}),
        "pruner.min_resource",
    ),
    # Integers past what storage holds (INTEGER: 32-bit signed on PostgreSQL) or seeds take.
    changed("budget.trials", 10**30, launch=True),
    changed("budget.trials", 3_000_000_000, launch=True),
    changed("budget.epochs", 2**63),
    changed("budget.max_failures", 2**31),
    changed("sampler.seed", 1099511627776000000000000, launch=True),
    changed("sampler.seed", -1),
    changed("seed", 2**32),
    changed("pruner.reduction_factor", 2**31),
    # Integer parameters past what Optuna stores exactly (a float), numbers past any float.
    changed("space.batch_size", [32, 2**60], "space.batch_size[1]"),
    own_arg("width", {"low": 1, "high": 10**4000}, "space.args.width.high", launch=True),
    changed("space.lr", 10**400),
    # Unknown keys and typos.
    renamed("budget", "budjet", "budjet", "budget", launch=True),
    renamed("sampler", "sampeler", "sampeler"),
    renamed("space.schedule.cosine", "cosin", "space.schedule.cosin", launch=True),
    changed("space.schedule.step.decay_rat", 0.5),
    changed("space.schedule.cosine.total_steps", 100, launch=True),
    changed("sampler.name", "tpee", "sampler", launch=True),
    changed("pruner.name", "medain", "pruner"),
    changed("sampler.n_startup", 5),
    changed("pruner.min_resources", 2),
    text(
        "a newline in an unknown key",
        base_text() + '"bud\\nget": 1\n',
        "bud\\nget",
    ),
    # Ranges and lists.
    changed("space.schedule.step.decay_rate", {"low": 0.9, "high": 0.3}),
    changed(
        "space.weight_decay", {"low": 0, "high": 1.0e-2, "log": True}, "space.weight_decay.low"
    ),
    changed(
        "space.schedule.step.decay_steps",
        {"low": 20, "high": 400, "log": True, "step": 10},
        "space.schedule.step.decay_steps.step",
    ),
    changed("space.momentum", {"low": 0.0, "high": 0.9, "lgo": True}, "space.momentum.lgo"),
    changed("space.batch_size", []),
    changed("space.batch_size", [32, 32]),
    # The objective's own parameters (space.args).
    changed("space.dropout", {"low": 0.0, "high": 0.5}, launch=True),  # belongs under args
    changed("space.args", [1, 2]),
    own_arg("dropout", {"low": 0.0, "high": "half"}, "space.args.dropout.high"),
    own_arg("width", [64, "wide"]),
    own_arg("width", {"low": 128, "high": 64}),
    own_arg("depth", None),
    own_arg("hidden", [16, 32], launch=True),  # also in objective_args
    # A task's declared arguments (objectives.args): names and values, fixed or searched.
    changed("objective_args.hidden", -4, launch=True),
    changed("objective_args.hidden", 10**12),
    changed("objective_args.hidden", float("nan")),
    changed("objective_args.hidden", b"\x00\x01"),
    renamed("objective_args.hidden", "hiden", "objective_args.hiden", launch=True),
    own_arg("widht", [3, 4], launch=True),
    own_arg("depth", [1, 100]),
    own_arg("depth", {"low": 0.5, "high": 2.5}),
    # Missing required fields.
    dropped("study"),
    dropped("objective"),
    dropped("budget"),
    dropped("space"),
    dropped("space.schedule", launch=True),
    dropped("space.schedule.step.decay_steps"),
    # Checks across fields.
    edited(
        "grid sampler with a range",
        grid(
            2,
            {
                **GRID_SPACE,
                "schedule": {"step": {"decay_rate": {"low": 0.3, "high": 0.9}, "decay_steps": 10}},
            },
        ),
        "space.schedule.step.decay_rate",
        launch=True,
    ),
    edited("grid of 4 combinations with 5 trials", grid(5, GRID_SPACE), "budget.trials"),
    edited("grid of 60**4 combinations", grid(4, HUGE_GRID_SPACE), "space", launch=True),
    changed("pruner.min_resource", 10, launch=True),
    changed("space.schedule.cosine.min_lr", 0.01),
    edited(
        "space.schedule.grad_norm={min_ratio: 0.9, max_ratio: 0.5}",
        lambda c: c["space"]["schedule"].update(grad_norm={"min_ratio": 0.9, "max_ratio": 0.5}),
        "space.schedule.grad_norm.min_ratio",
    ),
    # Objectives.
    changed("objective", "nope", launch=True),
    changed("objective", "no_such_module:fn"),
    changed("objective", "tiny_lm", "direction", launch=True),  # a loss: must minimize
    raw(
        "objective module with a SyntaxError",
        objective_with_syntax_error,
        "objective",
    ),
    raw("objective a torch nn.Module", objective_a_torch_module, "objective", launch=True),
    # Study names.
    changed("study", "my study"),
    changed("study", "team/sweep", launch=True),
    # The file itself.
    text("invalid YAML", base_text() + "pruner: {name: median\n", CONFIG, launch=True),
    text("a list document", "- study: x\n- budget: {trials: 1}\n", "config"),
    text("an empty file", "", "config"),
    text("a YAML alias bomb", alias_bomb(), CONFIG, launch=True),
    text("over 256 KiB", oversized(), CONFIG),
    raw("not UTF-8", write_bytes(base_text().encode() + b"# caf\xe9\n"), CONFIG, launch=True),
    raw("a missing file", lambda directory: "missing.yaml", "missing.yaml"),
    raw("a directory", directory_named_config, CONFIG),
    text(
        "duplicate key study",
        base_text() + "study: another-study\n",
        "study",
    ),
    text("a 5000-digit integer", base_text() + "seed: " + "1" * 5000 + "\n", CONFIG, launch=True),
    text("a 5000-digit hexadecimal integer", base_text() + "seed: 0x" + "f" * 5000 + "\n", CONFIG),
    raw("a device of endless zeros", lambda directory: "/dev/zero", "/dev/zero"),
    text(
        "lists nested 5000 deep",
        deeply_nested(5000),
        CONFIG,
        launch=True,
    ),
]


# --- running them ---------------------------------------------------------------------------


def written(case: Case, directory: Path) -> str:
    """The case's files in ``directory``; its CONFIG argument."""
    return case.make(directory)


def validate_in_process(cli: InProcess, case: Case, directory: Path) -> Run:
    config = written(case, directory)
    done = cli("validate", config, cwd=directory)
    return Run(["validate", config], directory, done.returncode, done.stdout, done.stderr)


def launch_in_process(cli: InProcess, case: Case, directory: Path) -> Run:
    argv = ["launch", written(case, directory), "--storage", storage_url(directory)]
    done = cli(*argv, cwd=directory)
    return Run(argv, directory, done.returncode, done.stdout, done.stderr)


def launch_in_a_process(case: Case, directory: Path) -> Run:
    return run_cli(
        ["launch", written(case, directory), "--storage", storage_url(directory)], directory
    )


def assert_rejected(run: Run, fields: tuple[str, ...]) -> None:
    """Exit 2, nothing on stdout, only ``error:`` lines, one naming each of ``fields``."""
    assert run.code == 2, str(run)
    assert "Traceback" not in run.stderr, str(run)
    assert run.stdout == "", str(run)
    lines = run.stderr.splitlines()
    assert lines, str(run)
    assert all(line.startswith("error: ") for line in lines), str(run)
    for name in fields:
        assert any(line.startswith(f"error: {name}:") for line in lines), f"{name!r} in\n{run}"


def study_names(directory: Path) -> list[str]:
    if not (directory / "s.db").exists():
        return []
    return optuna.get_all_study_names(storage=storage_url(directory))


def case_named(id: str) -> Any:
    (found,) = [p for p in CASES if p.id == id]
    return found


# --- the tests ------------------------------------------------------------------------------

BASE_CASE = Case("the base config", write_text(base_text()), ())
SEVERAL = Case(
    f"{len(SEVERAL_MISTAKES)} independent mistakes", base_with(several_mistakes), SEVERAL_MISTAKES
)


@pytest.mark.e2e
def test_launch_base_config_creates_the_study(tmp_path: Path) -> None:
    """The cases' base is valid, so each case fails for its own mistake only."""
    launched = launch_in_a_process(BASE_CASE, tmp_path)
    assert launched.code == 0, str(launched)
    assert study_names(tmp_path) == ["config-errors"]


@pytest.mark.parametrize("case", CASES)
def test_validate_malformed_config_exits_2_naming_the_field(
    case: Case, cli: InProcess, tmp_path: Path
) -> None:
    assert_rejected(validate_in_process(cli, case, tmp_path), case.fields)


@pytest.mark.parametrize("case", [p for p in CASES if p.values[0].launch])
def test_launch_malformed_config_exits_2_and_writes_no_study(
    case: Case, cli: InProcess, tmp_path: Path
) -> None:
    assert_rejected(launch_in_process(cli, case, tmp_path), case.fields)
    assert study_names(tmp_path) == []


@pytest.mark.e2e
def test_validate_in_a_process_reports_every_mistake(tmp_path: Path) -> None:
    """The real program: one ``error:`` line per field, nothing else, exit 2."""
    validated = run_cli(["validate", written(SEVERAL, tmp_path)], tmp_path)
    assert_rejected(validated, SEVERAL.fields)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case",
    [
        case_named("budget.trials=ten"),
        # A fresh process's own stack and memory: no crash, no blow-up.
        case_named("a YAML alias bomb"),
        case_named("lists nested 5000 deep"),
    ],
)
def test_launch_in_a_process_exits_2_and_writes_no_study(case: Case, tmp_path: Path) -> None:
    assert_rejected(launch_in_a_process(case, tmp_path), case.fields)
    assert study_names(tmp_path) == []


@pytest.mark.parametrize(
    "case",
    [
        param(SEVERAL),
        param(
            Case(
                f"{SEVERAL.id} and objective=nope",
                base_with(several_mistakes_and_an_unknown_objective),
                (*SEVERAL_MISTAKES, "objective"),
            ),
        ),
    ],
)
def test_validate_several_mistakes_reports_every_field(
    case: Case, cli: InProcess, tmp_path: Path
) -> None:
    assert_rejected(validate_in_process(cli, case, tmp_path), case.fields)


def test_corpus_has_at_least_35_distinct_cases() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)) >= 35


STORAGE_FILE_ERRORS = [
    (
        ["--storage", "sqlite:///x.db", "--storage-file", "url"],
        "error: --storage-file: give --storage or --storage-file, not both",
    ),
    (
        ["--storage-file", "missing"],
        "error: --storage-file: cannot read missing: No such file",
    ),
    (["--storage-file", "empty"], "error: --storage-file: empty is empty"),
    (["--storage-file", "bad"], "error: --storage-file: unsupported database 'mysql'"),
]


def storage_files(directory: Path) -> None:
    (directory / "empty").write_text("\n")
    (directory / "bad").write_text("mysql://u:pw@host/db\n")


def assert_one_storage_file_error(stderr: str, message: str) -> None:
    assert stderr.startswith(message), stderr
    assert len(stderr.strip().splitlines()) == 1 and "pw" not in stderr


@pytest.mark.parametrize(("args", "message"), STORAGE_FILE_ERRORS)
def test_storage_file_errors(
    cli: InProcess, tmp_path: Path, args: list[str], message: str
) -> None:
    storage_files(tmp_path)
    result = cli("status", "--study", "t", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_storage_file_error(result.stderr, message)


@pytest.mark.e2e
def test_a_storage_file_error_in_a_process(tmp_path: Path) -> None:
    storage_files(tmp_path)
    args, message = STORAGE_FILE_ERRORS[-1]
    result = sweeps("status", "--study", "t", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert_one_storage_file_error(result.stderr, message)
