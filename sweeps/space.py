"""The conditional search space: the config's `space` parsed against declared parameters.

``schedule`` picks the family; only that family's parameters are suggested, named
``<family>.<param>``. ``optimizer`` picks SGD or AdamW; only its own parameters follow.
``args`` holds the objective's own hyperparameters (dropout, width, ...), named
``args.<name>`` and merged into the trial's ``run.args`` over ``objective_args``.
Every parameter may be a fixed value, a list (categorical) or a range
(``{low, high, log, step}``). Fixed values are not Optuna parameters; they are merged in
by `Space.sample` so the objective sees one complete dict.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from schedules import SCHEDULES, Param, Schedule, ScheduleError
from sweeps.config import shown

# Training parameters besides the schedule, declared like schedule parameters.
TRAINING: dict[str, Param] = {
    "lr": Schedule.COMMON["lr"],
    "optimizer": Param(str, "optimizer", choices=("sgd", "adamw"), default="sgd"),
    "batch_size": Param(int, "examples per step", low=1, default=64, log=True),
    "weight_decay": Param(
        float, "decoupled (AdamW) or L2 (SGD) weight decay", low=0.0, default=0.0
    ),
    "momentum": Param(float, "SGD momentum", low=0.0, high=1.0, high_open=True, default=0.9),
    "nesterov": Param(bool, "SGD Nesterov momentum", default=False),
    "beta1": Param(float, "AdamW β1", low=0.0, high=1.0, high_open=True, default=0.9),
    "beta2": Param(float, "AdamW β2", low=0.0, high=1.0, high_open=True, default=0.999),
}
OPTIMIZER_PARAMS = {"sgd": ("momentum", "nesterov"), "adamw": ("beta1", "beta2")}
# Set by the engine from the run length, never searched.
DERIVED = ("total_steps",)
RANGE_KEYS = {"low", "high", "log", "step"}
# Optuna stores a trial's parameters as 64-bit floats, exact for integers up to this.
MAX_INT_PARAM = 2**53
ARGS = "args"  # the space's key for the objective's own parameters, and their name prefix


@dataclass(frozen=True)
class Dimension:
    """One parameter's search: a fixed value, a list of choices, or a numeric range."""

    kind: type
    fixed: Any = None
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_fixed(self) -> bool:
        return not self.choices and not self.is_range

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if not self.is_range:
            return self.fixed
        assert self.low is not None and self.high is not None
        if self.kind is int:
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list[Any]:
        """The values a grid enumerates (ranges have none)."""
        return list(self.choices) if self.choices else [self.fixed]

    def bounds(self) -> tuple[Any, Any]:
        """The smallest and largest value this dimension can take (numbers only)."""
        if self.is_range:
            return self.low, self.high
        values = self.values()
        return min(values), max(values)


@dataclass
class Space:
    training: dict[str, Dimension] = field(default_factory=dict)
    raw_names: frozenset[str] = frozenset()  # the training parameters the config wrote
    families: dict[str, dict[str, Dimension]] = field(default_factory=dict)
    args: dict[str, Dimension] = field(default_factory=dict)  # the objective's own
    errors: list[str] = field(default_factory=list)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest one point: training parameters, then the family, then its parameters."""
        params: dict[str, Any] = {}
        for name in self._training_names(self.training["optimizer"].suggest(trial, "optimizer")):
            params[name] = self.training[name].suggest(trial, name)
        family = self._family_dimension().suggest(trial, "schedule")
        params["schedule"] = family
        for key, dim in self.families[family].items():
            params[f"{family}.{key}"] = dim.suggest(trial, f"{family}.{key}")
        for name, dim in self.args.items():
            params[f"{ARGS}.{name}"] = dim.suggest(trial, f"{ARGS}.{name}")
        return params

    def run_args(
        self, objective_args: Mapping[str, Any], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A trial's ``run.args``: the config's ``objective_args`` and its own sampled ones."""
        return {**objective_args, **{n: params[f"{ARGS}.{n}"] for n in self.args}}

    def center(self, optimizer: str) -> dict[str, Any]:
        """A typical point for ``optimizer`` (an lr range test's settings): each fixed value,
        each list's first choice, each range's middle (geometric for log ranges)."""
        point = {"optimizer": optimizer}
        for name in self._training_names(optimizer):
            point.setdefault(name, _middle(self.training[name]))
        return point | {f"{ARGS}.{n}": _middle(d) for n, d in self.args.items()}

    def _training_names(self, optimizer: str) -> Iterator[str]:
        yield "optimizer"
        others = {p for names in OPTIMIZER_PARAMS.values() for p in names}
        for name in self.training:
            if name != "optimizer" and (name not in others or name in OPTIMIZER_PARAMS[optimizer]):
                yield name

    def _family_dimension(self) -> Dimension:
        names = tuple(self.families)
        return Dimension(str, choices=names) if len(names) > 1 else Dimension(str, names[0])

    def unwritten(self) -> set[str]:
        """The training parameters a trial has only because they have defaults."""
        return set(self.training) - self.raw_names

    def names(self) -> set[str]:
        """Every parameter name a trial of this space may have."""
        names = {*self.training, "schedule", *(f"{ARGS}.{n}" for n in self.args)}
        return names | {f"{f}.{k}" for f, dims in self.families.items() for k in dims}

    def ranged(self) -> list[str]:
        """Names of the parameters searched over a numeric range."""
        names = [n for n, d in self.training.items() if d.is_range]
        for family, dims in self.families.items():
            names += [f"schedule.{family}.{k}" for k, d in dims.items() if d.is_range]
        return names + [f"{ARGS}.{n}" for n, d in self.args.items() if d.is_range]

    def grid(self) -> list[dict[str, Any]]:
        """Every distinct point of a space without ranges, as Optuna trial params."""
        return [
            dict(zip(axes, combo, strict=True))
            for axes in self._grid_axes()
            for combo in itertools.product(*axes.values())
        ]

    def grid_size(self) -> int:
        """How many points `grid` has, counted without building them."""
        return sum(math.prod(map(len, axes.values())) for axes in self._grid_axes())

    def _grid_axes(self) -> Iterator[dict[str, list[Any]]]:
        """Per optimizer and family, each parameter's values: the grid is their products."""
        for optimizer in self.training["optimizer"].values():
            names = [n for n in self._training_names(optimizer) if n != "optimizer"]
            for family, dims in self.families.items():
                axes: dict[str, list[Any]] = {"optimizer": [optimizer]}
                axes |= {n: self.training[n].values() for n in names}
                axes["schedule"] = [family]
                axes |= {f"{family}.{k}": d.values() for k, d in dims.items()}
                axes |= {f"{ARGS}.{n}": d.values() for n, d in self.args.items()}
                yield axes

    def searched(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Of a complete point, the entries that are Optuna parameters (not fixed values)."""
        dims = {**self.training, "schedule": self._family_dimension()}
        family = params["schedule"]
        dims |= {f"{family}.{k}": d for k, d in self.families[family].items()}
        dims |= {f"{ARGS}.{n}": d for n, d in self.args.items()}
        return {k: v for k, v in params.items() if k in dims and not dims[k].is_fixed}


def _middle(dim: Dimension) -> Any:
    if dim.choices:
        return dim.choices[0]
    if not dim.is_range:
        return dim.fixed
    low, high = dim.bounds()
    middle = math.sqrt(low * high) if dim.log else (low + high) / 2
    return round(middle) if dim.kind is int else middle


def parse_dimension(spec: Any, param: Param, path: str, errors: list[str]) -> Dimension | None:
    """Parse a fixed value, a list or a range for ``param``; append errors naming ``path``."""
    mine: list[str] = []
    dim: Dimension | None
    if isinstance(spec, dict):
        dim = _parse_range(spec, param, path, mine)
    elif isinstance(spec, list):
        dim = _parse_list(spec, param, path, mine)
    else:
        dim = Dimension(param.kind, fixed=_checked(spec, param, path, mine))
    errors.extend(mine)
    return None if mine else dim


def _checked(value: Any, param: Param, where: str, errors: list[str]) -> Any:
    """``value`` as ``param`` takes it; None, with an error naming ``where``, if it can't."""
    try:
        value = param.coerce(value)
    except TypeError:
        pass
    else:
        if isinstance(value, int) and param.kind is int and abs(value) > MAX_INT_PARAM:
            errors.append(
                f"{where}: must be an integer in [-2**53, 2**53] (what a trial's parameter "
                f"stores exactly), got {shown(value)}"
            )
            return None
        if param.contains(value):
            return value
    given = shown(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    errors.append(f"{where}: must be {param.allowed()}, got {given}")
    return None


def _parse_range(
    spec: dict[str, Any], param: Param, path: str, errors: list[str]
) -> Dimension | None:
    if param.kind in (str, bool):
        errors.append(f"{path}: {param.allowed()} or a list of them; a range needs numbers")
        return None
    unknown = sorted(set(spec) - RANGE_KEYS, key=str)
    if unknown:
        errors.append(f"{path}.{unknown[0]}: unknown field; a range has low, high, log, step")
    for key in ("low", "high"):
        if key not in spec:
            errors.append(f"{path}.{key}: required in a range ({param.allowed()})")
    low = _checked(spec["low"], param, f"{path}.low", errors) if "low" in spec else None
    high = _checked(spec["high"], param, f"{path}.high", errors) if "high" in spec else None
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        errors.append(f"{path}.log: must be true or false, got {log!r}")
    if step is not None and (
        isinstance(step, bool)
        or not isinstance(step, int | float)
        or step <= 0
        or (param.kind is int and step != int(step))
    ):
        kind = "a positive integer" if param.kind is int else "a positive number"
        errors.append(f"{path}.step: must be {kind}, got {step!r}")
    if errors or low is None or high is None:
        return None
    if low > high:
        errors.append(f"{path}: low must be <= high, got low={low!r} high={high!r}")
    elif log and low <= 0:
        errors.append(f"{path}.low: must be > 0 with log: true, got {low!r}")
    elif log and step is not None:
        errors.append(f"{path}.step: cannot be combined with log: true")
    return None if errors else Dimension(param.kind, low=low, high=high, log=log, step=step)


def _parse_list(spec: list[Any], param: Param, path: str, errors: list[str]) -> Dimension | None:
    if not spec:
        errors.append(f"{path}: an empty list; give at least one value ({param.allowed()})")
        return None
    values = [_checked(v, param, f"{path}[{i}]", errors) for i, v in enumerate(spec)]
    if errors:
        return None
    if len(set(values)) != len(values):
        errors.append(f"{path}: lists a value twice: {spec!r}")
        return None
    if len(values) == 1:
        return Dimension(param.kind, fixed=values[0])
    return Dimension(param.kind, choices=tuple(values))


def parse_space(space: Mapping[str, Any]) -> Space:
    """Parse the config's ``space`` mapping; problems are collected in `Space.errors`."""
    result = Space(raw_names=frozenset(space))
    errors = result.errors
    for name in space:
        if name not in TRAINING and name not in ("schedule", ARGS):
            errors.append(
                f"space.{name}: unknown parameter; allowed: {', '.join(TRAINING)}, schedule, "
                f"and the objective's own under {ARGS} (space.{ARGS}.{name})"
            )
    result.args = _parse_args(space.get(ARGS, {}), errors)
    for name, param in TRAINING.items():
        if name not in space and param.required:
            errors.append(f"space.{name}: required ({param.allowed()})")
            continue
        dim = parse_dimension(space.get(name, param.default), param, f"space.{name}", errors)
        if dim is not None:
            result.training[name] = dim

    families = space.get("schedule")
    if not isinstance(families, dict) or not families:
        errors.append(
            "space.schedule: required: a mapping of schedule families to their parameters; "
            f"families: {', '.join(SCHEDULES)}"
        )
        return result
    for family, params in families.items():
        path = f"space.schedule.{family}"
        cls = SCHEDULES.get(family)
        if cls is None:
            errors.append(f"{path}: unknown schedule family; known: {', '.join(SCHEDULES)}")
            continue
        if params is None:
            params = {}
        if not isinstance(params, dict):
            errors.append(f"{path}: must be a mapping of parameters (or {{}}), got {params!r}")
            continue
        result.families[family] = _parse_family(cls, params, path, errors)
    _check_optimizers(result, errors)
    _check_families(result, errors)
    return result


def _parse_args(args: Any, errors: list[str]) -> dict[str, Dimension]:
    """The objective's own parameters: each a fixed value, a list or a range, its kind
    (int, float, bool, str) read from the values given."""
    if not isinstance(args, dict):
        errors.append(
            f"space.{ARGS}: must be a mapping of the objective's parameters, got {args!r}"
        )
        return {}
    dims: dict[str, Dimension] = {}
    for name, spec in args.items():
        path = f"space.{ARGS}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            errors.append(f"{path}: a parameter name must be an identifier, got {name!r}")
            continue
        param = arg_param(spec)
        if param is None:
            errors.append(
                f"{path}: must be a number, string or boolean, a list of one kind of them, or "
                f"a range {{low, high, log, step}}, got {spec!r}"
            )
            continue
        dim = parse_dimension(spec, param, path, errors)
        if dim is not None:
            dims[name] = dim
    return dims


def arg_param(spec: Any) -> Param | None:
    """What values one of the objective's parameters takes, read from its spec; None when
    the spec is not a value, a list of values of one kind, or a mapping (a range)."""
    if isinstance(spec, dict):  # a range: of integers when both bounds are
        bounds = [spec.get(k) for k in ("low", "high")]
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)
        return Param(int if integers else float, "the objective's own parameter")
    values = spec if isinstance(spec, list) else [spec]
    kinds = {type(v) for v in values}
    if kinds == {int, float}:
        kinds = {float}
    if len(kinds) != 1 or not kinds <= {int, float, bool, str}:
        return None
    (kind,) = kinds
    choices = tuple(values) if kind is str else ()
    return Param(kind, "the objective's own parameter", choices=choices)


def _check_optimizers(space: Space, errors: list[str]) -> None:
    """An optimizer's own parameter is useless when that optimizer is never chosen."""
    chosen = space.training.get("optimizer")
    if chosen is None:
        return
    for optimizer, names in OPTIMIZER_PARAMS.items():
        if optimizer not in chosen.values():
            for name in names:
                if name in space.raw_names:
                    errors.append(
                        f"space.{name}: only used by optimizer {optimizer!r}, which this space "
                        f"never chooses (optimizer: {chosen.values()!r})"
                    )


def _parse_family(
    cls: type[Schedule], params: dict[str, Any], path: str, errors: list[str]
) -> dict[str, Dimension]:
    spec = {k: p for k, p in cls.params_spec().items() if k != "lr"}
    dims: dict[str, Dimension] = {}
    for key, value in params.items():
        if key in DERIVED and key in spec:
            errors.append(
                f"{path}.{key}: set by lr-sweeps from budget.epochs and the batch size; remove it"
            )
        elif key not in spec:
            allowed = ", ".join(k for k in spec if k not in DERIVED) or "warmup_steps"
            errors.append(f"{path}.{key}: unknown parameter of {cls.name}; allowed: {allowed}")
        else:
            dim = parse_dimension(value, spec[key], f"{path}.{key}", errors)
            if dim is not None:
                dims[key] = dim
    for key, param in spec.items():
        if key not in params and key not in DERIVED and param.required:
            errors.append(f"{path}.{key}: required ({param.allowed()})")
    return dims


def _check_families(space: Space, errors: list[str]) -> None:
    """Build every family at the corners of its space: a combination the family refuses
    (min_lr above lr, min_ratio above max_ratio, ...) would fail every trial that draws it."""
    lr = space.training.get("lr")
    if lr is None:
        return
    for family, dims in space.families.items():
        if any(e.startswith(f"space.schedule.{family}") for e in errors):
            continue  # already reported; its corners would only repeat it
        cls = SCHEDULES[family]
        axes = {"lr": _corners(lr)} | {k: _corners(d) for k, d in dims.items()}
        if "total_steps" in cls.PARAMS:
            # The run length is derived per trial; a long one checks everything else.
            axes["total_steps"] = [10**6]
        for combo in itertools.islice(itertools.product(*axes.values()), 4096):
            params = dict(zip(axes, combo, strict=True))
            try:
                cls(**params)
            except ScheduleError as e:
                field, _, why = str(e).partition(": ")
                shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if k != "total_steps")
                errors.append(f"space.schedule.{field}: {why} (when {shown})")
                break


def _corners(dim: Dimension) -> list[Any]:
    return list(dict.fromkeys(dim.bounds())) if dim.kind in (int, float) else dim.values()


def check_point(space: Space, point: Mapping[str, Any]) -> list[str]:
    """Problems with a (partial) point to enqueue, one ``name: why`` line each."""
    errors: list[str] = []
    family = point.get("schedule")
    families = space._family_dimension()
    for name, value in point.items():
        if name == "schedule":
            dim, param = families, Param(str, "family", choices=tuple(space.families))
        elif name in space.training:
            dim, param = space.training[name], TRAINING[name]
        elif name.startswith(f"{ARGS}.") and name.removeprefix(f"{ARGS}.") in space.args:
            dim = space.args[name.removeprefix(f"{ARGS}.")]
            param = Param(dim.kind, "the objective's own parameter", choices=dim.choices)
        elif "." in name and name.split(".", 1)[0] in space.families:
            owner, key = name.split(".", 1)
            if owner != family:
                errors.append(
                    f'{name}: only for schedule {owner!r}; set "schedule": {owner!r} too'
                )
                continue
            if key not in space.families[owner]:
                errors.append(f"{name}: not searched in this study's space")
                continue
            dim, param = space.families[owner][key], SCHEDULES[owner].params_spec()[key]
        else:
            errors.append(
                f"{name}: not a parameter of this study; parameters: "
                f"{', '.join([*space.training, 'schedule'])}, <family>.<param>"
                + "".join(f", {ARGS}.{n}" for n in space.args)
            )
            continue
        errors += _check_value(name, value, dim, param)
    optimizer = point.get("optimizer")
    for opt, names in OPTIMIZER_PARAMS.items():
        if optimizer is not None and optimizer != opt:
            errors += [f"{n}: only for optimizer {opt!r}" for n in names if n in point]
    return errors


def _check_value(name: str, value: Any, dim: Dimension, param: Param) -> list[str]:
    try:
        value = param.coerce(value)
    except TypeError:
        return [f"{name}: must be {param.allowed()}, got {value!r}"]
    if dim.is_fixed:
        return [] if value == dim.fixed else [f"{name}: fixed at {dim.fixed!r} by the config"]
    if dim.choices:
        if value not in dim.choices:
            return [f"{name}: must be one of {list(dim.choices)!r}, got {value!r}"]
        return []
    if not dim.bounds()[0] <= value <= dim.bounds()[1]:
        return [f"{name}: must be in [{dim.low!r}, {dim.high!r}], got {value!r}"]
    return []
