"""Tasks declare their arguments (`objectives.args`): the config's values, fixed or searched,
are checked against the declaration before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import objectives
from objectives import Param, arg_errors, digits_cnn, digits_mlp, tiny_lm
from sweeps.space import parse_space


def searched(args: dict[str, Any]) -> dict[str, Any]:
    """``space.args`` as the config's space parses them."""
    space = parse_space({"lr": 0.1, "schedule": {"constant": {}}, "args": args})
    assert space.errors == []
    return space.args


class Declared(objectives.Task):
    args = {
        "width": Param(int, "channels", low=1, high=512, default=8),
        "dropout": Param(float, "dropout", low=0.0, high=1.0, high_open=True, default=0.1),
        "act": Param(str, "activation", choices=("relu", "tanh"), default="relu"),
        "classes": Param(int, "outputs", low=2),  # no default: required
    }


class Undeclared(objectives.Task):
    pass


def test_the_built_in_tasks_declare_every_argument_their_models_read() -> None:
    assert set(digits_mlp.args or {}) == {"hidden", "depth"}
    assert set(digits_cnn.args or {}) == {"channels"}
    assert set(tiny_lm.args or {}) == {"dim", "heads", "layers"}
    # The declared defaults are the ones the model is built with.
    model = digits_mlp.model({})
    assert model[0].out_features == 128 and len(model) == 3  # one hidden layer of 128


@pytest.mark.parametrize(
    ("value", "shown"),
    [(-4, "-4"), (10**12, "1000000000000"), (float("nan"), "nan"), (b"\x00\x01", "b'\\x00\\x01'"),
     (True, "True"), ("32", "'32'"), (3.5, "3.5")],
)  # fmt: skip
def test_a_value_the_declaration_does_not_allow_is_one_line_naming_it(
    value: Any, shown: str
) -> None:
    assert arg_errors(digits_mlp, {"hidden": value}, {}) == [
        f"objective_args.hidden: must be an integer in [1, 65536], got {shown}"
    ]


def test_allowed_values_pass_and_integral_floats_count_as_integers() -> None:
    assert arg_errors(digits_mlp, {"hidden": 32.0, "depth": 0}, {}) == []
    assert arg_errors(digits_mlp, {}, searched({"hidden": [8, 65536], "depth": [1, 2]})) == []


def test_a_misspelled_argument_names_the_ones_the_task_takes() -> None:
    assert arg_errors(digits_mlp, {"hiden": 32}, searched({"widht": [3, 4]})) == [
        "objective_args.hiden: digits_mlp takes no argument 'hiden' (it takes: hidden, depth)",
        "space.args.widht: digits_mlp takes no argument 'widht' (it takes: hidden, depth)",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([16, 0, 32], "must be an integer in [1, 65536], got 0"),
        ({"low": 1, "high": 100000}, "must be an integer in [1, 65536], got 100000"),
        ({"low": 0.5, "high": 64.5}, "must be a range of integers (an integer in [1, 65536])"),
    ],
)
def test_every_searched_value_passes_the_declaration(spec: Any, message: str) -> None:
    (error,) = arg_errors(digits_mlp, {}, searched({"hidden": spec}))
    assert error.startswith(f"space.args.hidden: {message}")


def test_a_users_task_declares_kinds_choices_and_required_arguments() -> None:
    assert arg_errors(Declared(), {"classes": 4, "act": "tanh"}, {}) == []
    assert arg_errors(Declared(), {"act": "gelu", "dropout": 1.0}, {}) == [
        "objective_args.act: must be one of 'relu', 'tanh', got 'gelu'",
        "objective_args.dropout: must be a number in [0, 1), got 1.0",
        "objective_args.classes: required by Declared (an integer in [2, inf))",
    ]
    # Searched, a required argument is given; a float argument over integer bounds would
    # only ever sample 0 or 1.
    assert arg_errors(
        Declared(), {}, searched({"classes": [2, 4], "dropout": {"low": 0, "high": 1}})
    ) == [
        "space.args.dropout: a range of integers samples only integers; write its bounds "
        "as numbers (0.0, 1.0) to search a number in [0, 1)"
    ]
    assert arg_errors(Declared(), {"classes": 2}, searched({"act": {"low": 1, "high": 2}})) == [
        "space.args.act: must be one of 'relu', 'tanh' (a value or a list), not a range"
    ]


def test_an_objective_that_declares_nothing_takes_any_arguments() -> None:
    anything = {"hiden": -4, "blob": b"x"}
    assert arg_errors(Undeclared(), anything, searched({"widht": [3, 4]})) == []
    assert arg_errors(lambda run: 0.0, anything, {}) == []


def test_defaults_complete_the_given_arguments() -> None:
    assert objectives.with_defaults(Declared.args, {"width": 4}) == {
        "width": 4,
        "dropout": 0.1,
        "act": "relu",
    }


def test_a_torch_module_named_as_the_objective_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "args_net_module.py").write_text(
        "from torch import nn\n\nclass Net(nn.Module):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(objectives.ObjectiveNotFound) as refused:
        objectives.resolve("args_net_module:Net")
    assert str(refused.value).startswith(
        "objective: args_net_module:Net is a torch nn.Module, not an objective; name an "
        "objectives.Task whose model(args) builds it"
    )


class PlainArgs(objectives.Task):
    args = {"width": 8}  # type: ignore[dict-item]  # a task's own setting, not a declaration


class MethodArgs(objectives.Task):
    def args(self) -> dict[str, int]:  # type: ignore[override]
        return {"width": 8}


class NamespaceArgs(objectives.Task):
    class args:  # noqa: N801
        width = 8


@pytest.mark.parametrize("task", [PlainArgs(), MethodArgs(), NamespaceArgs()], ids=type)
def test_an_args_that_declares_nothing_is_one_line_naming_the_task(task: Any) -> None:
    (error,) = arg_errors(task, {"width": 8}, searched({"width": [4, 8]}))
    assert error.startswith(
        f"objective: {task.name}.args must map argument names to schedules.Param "
        "declarations (got "
    )
    assert "\n" not in error


def test_sweeps_validate_names_a_task_whose_args_declares_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeps.cli import main
    from sweeps_helpers import config

    (tmp_path / "args_plain_task.py").write_text(
        "import objectives\n\nclass Task(objectives.Task):\n    args = {'width': 8}\n"
    )
    path = config(tmp_path, objective="args_plain_task:Task", objective_args={"width": 8})
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err == (
        "error: objective: Task.args must map argument names to schedules.Param declarations "
        "(got {'width': 8})\n"
    )
