"""A task's declared arguments, and the config's check of them before anything runs.

A task declares the arguments its model takes (``objective_args``, and ``space.args``:
searched values of the same arguments) as a schedule declares its parameters, with
`schedules.Param`::

    class MyTask(objectives.Task):
        args = {
            "width": Param(int, "channels of the first block", low=1, high=4096, default=8),
            "dropout": Param(float, "dropout probability", low=0.0, high=1.0, high_open=True,
                             default=0.1),
        }

`arg_errors` then refuses, at validation, a name the task does not take and a value
(fixed, listed, or a range's bounds) its declaration does not allow. A task without a
declaration (``args = None``, the default) and a function objective take any arguments as
given: ``model(self, args)`` and ``fn(run)`` receive a dict, so nothing else tells which
names they read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from schedules import Param

Declared = Mapping[str, Param]


class Searched(Protocol):
    """One searched argument, as the space parsed it (`sweeps.space.Dimension`)."""

    @property
    def kind(self) -> type: ...

    @property
    def is_range(self) -> bool: ...

    def bounds(self) -> tuple[Any, Any]: ...

    def values(self) -> list[Any]: ...


def with_defaults(declared: Declared, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` completed with the declared defaults of those not given."""
    return {**{k: p.default for k, p in declared.items() if not p.required}, **args}


def arg_errors(objective: object, given: Any, searched: Mapping[str, Searched]) -> list[str]:
    """The config's ``objective_args`` (``given``) and ``space.args`` (``searched``) checked
    against the objective's declared arguments, one ``field: why`` line per problem (a
    searched argument's first value refused); none for an objective that declares nothing
    (a function, a task with ``args = None``).
    """
    from objectives.task import Task

    if not isinstance(objective, Task) or objective.args is None:
        return []
    declared, task = objective.args, objective.name
    if not _is_declaration(declared):  # a task's own attribute that happens to be `args`
        return [
            f"objective: {task}.args must map argument names to schedules.Param "
            f"declarations (got {_shown(declared)})"
        ]
    if not isinstance(given, dict):
        return []  # (an objective_args that is no mapping is the config's own error)
    errors: list[str] = []
    for name, value in given.items():
        path = f"objective_args.{name}"
        param = declared.get(name)
        if param is None:
            errors.append(f"{path}: {_unknown(task, name, declared)}")
        else:
            errors += _value_errors(path, param, value)
    for name, dim in searched.items():
        path = f"space.args.{name}"
        param = declared.get(name)
        if param is None:
            errors.append(f"{path}: {_unknown(task, name, declared)}")
            continue
        wrong_kind = _range_errors(path, param, dim) if dim.is_range else []
        if wrong_kind:
            errors += wrong_kind
            continue
        values = dim.bounds() if dim.is_range else dim.values()
        errors += next(filter(None, (_value_errors(path, param, v) for v in values)), [])
    errors += [
        f"objective_args.{name}: required by {task} ({param.allowed()})"
        for name, param in declared.items()
        if param.required and name not in given and name not in searched
    ]
    return errors


def _is_declaration(declared: object) -> bool:
    return isinstance(declared, Mapping) and all(
        isinstance(name, str) and isinstance(param, Param) for name, param in declared.items()
    )


def _unknown(task: str, name: str, declared: Declared) -> str:
    takes = ", ".join(declared) or "none"
    return f"{task} takes no argument {name!r} (it takes: {takes})"


def _value_errors(path: str, param: Param, value: Any) -> list[str]:
    try:
        if param.contains(param.coerce(value)):
            return []
    except TypeError:
        pass
    return [f"{path}: must be {param.allowed()}, got {_shown(value)}"]


def _range_errors(path: str, param: Param, dim: Searched) -> list[str]:
    """A range samples numbers of its bounds' kind: it must be the declared kind."""
    low, high = dim.bounds()
    if param.kind not in (int, float):
        return [f"{path}: must be {param.allowed()} (a value or a list), not a range"]
    if param.kind is int and dim.kind is not int:
        return [f"{path}: must be a range of integers ({param.allowed()}), got {low}..{high}"]
    if param.kind is float and dim.kind is int:
        return [
            f"{path}: a range of integers samples only integers; write its bounds as "
            f"numbers ({float(low)!r}, {float(high)!r}) to search {param.allowed()}"
        ]
    return []


def _shown(value: Any) -> str:
    """``value`` as the config wrote it, cut short (a ``!!binary`` blob can be long)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
