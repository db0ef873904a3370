"""The sweep config: YAML in, a validated `SweepConfig` out, or every error at once.

Validation finishes before anything runs or is written. Each error is one line naming the
field path and what is allowed (``space.schedule.step.decay_rate.high: must be a number in
(0, 1], got 1.5``). Schedule parameters are checked against the schedule classes' own
declarations (`schedules.Param`), the single source of truth.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

import schedules
from objectives.command import ReportFormatError, TemplateError, compile_report, template
from sweeps.errors import UsageError

if TYPE_CHECKING:
    from sweeps.space import Space

MAX_CONFIG_BYTES = 256 * 1024
MAX_STACK = 1024  # trials one worker trains at once (the config's stack, --stack)
# A YAML alias bomb builds a small document that expands to billions of nodes.
MAX_CONFIG_NODES = 20_000
MAX_CONFIG_DEPTH = 32
# Integers a config may hold, so that one that validates can also be stored and run: counts
# and epochs go into INTEGER columns (32-bit signed on PostgreSQL), and seeds into numpy's
# generators (which Optuna's samplers use).
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**32 - 1
# The grid sampler's points are built and enqueued at launch, one storage transaction each
# (Optuna's, a few hundred a second): a bound on its memory and on a launch's time (seconds).
MAX_GRID_POINTS = 5_000
# The validation context for a config read back from a study (`sweeps.study.load`): the range
# checks below came after configs were first stored, and one an older lr-sweeps stored must
# still load for every command. Its seeds are wrapped where used (`sweeps.samplers`,
# `sweeps.worker.trial_seed`), as they always were.
STORED = {"stored": True}


class ConfigError(UsageError):
    """An invalid config; `errors` holds one ``field: why`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        # A key or value with a line break must not split its error over two lines.
        self.errors = [e.replace("\r", "\\r").replace("\n", "\\n") for e in errors]
        super().__init__("\n".join(self.errors))


def shown(value: int) -> str:
    """An integer for an error line: a huge one by its number of digits."""
    digits = str(value)
    return digits if len(digits) <= 24 else f"a {len(digits.lstrip('-'))}-digit number"


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def _in_range(low: int | None, high: int, what: str) -> AfterValidator:
    """A range check for new configs only (`STORED`)."""

    def check(value: int, info: ValidationInfo) -> int:
        if _stored(info):
            return value
        if low is not None and value < low:
            raise ValueError(f"must be at least {low} ({what}), got {shown(value)}")
        if value > high:
            raise ValueError(f"must be at most {high} ({what}), got {shown(value)}")
        return value

    return AfterValidator(check)


# A count or an epoch number, and a seed; each count field adds its own lower bound.
Count = Annotated[int, _in_range(None, MAX_COUNT, "2**31 - 1, the largest integer storage holds")]
Seed = Annotated[int, _in_range(0, MAX_SEED, "a seed is in [0, 2**32 - 1]")]


class _Strict(BaseModel):
    # strict: a YAML `true` or "10" is not a number here, as in the space's own parameters.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Budget(_Strict):
    trials: Count = Field(gt=0, description="finished (COMPLETE + PRUNED) trials, all workers")
    epochs: Count = Field(gt=0, description="max epochs per trial, the pruner's resource")
    retries: Count = Field(2, ge=0, description="re-runs of a FAILed trial's params")
    max_failures: Count | None = Field(
        None,
        gt=0,
        description="failed trials after which the sweep stops (default: max(10, trials))",
    )
    max_repeated_failures: Count = Field(
        3,
        ge=2,
        description="trials failing in a row with one error, across schedule families, "
        "after which the sweep stops",
    )


class Branches(_Strict):
    per_trunk: int = Field(
        ge=2, le=64, description="trials sharing one stable phase: a trunk and its branches"
    )


class Heartbeat(_Strict):
    interval: float = Field(5.0, gt=0, description="seconds between a worker's heartbeats")
    grace_period: float = Field(
        60.0, gt=0, description="a RUNNING trial silent this long is failed and re-queued"
    )


class CommandObjective(_Strict):
    """A training script as the objective (`objectives.command`, DESIGN.md "Command trials")."""

    command: str | list[str] = Field(description="the command line, with {placeholders}")
    resume: str | list[str] | None = Field(
        None, description="appended when {checkpoint_dir} holds an earlier attempt's files"
    )
    report: str | None = Field(
        None, description="a regex with a 'value' group; default: JSON lines with 'value'"
    )
    processes: int = Field(1, ge=1, le=1024, description="processes (GPUs) one trial takes")
    grace_period: float = Field(
        10.0, gt=0, le=3600, description="seconds between SIGTERM and SIGKILL when a trial ends"
    )

    @field_validator("command", "resume", mode="before")
    @classmethod
    def _string_or_list(cls, value: Any) -> Any:
        if not (isinstance(value, str) or value is None or isinstance(value, list)) or (
            isinstance(value, list) and not all(isinstance(item, str) for item in value)
        ):
            raise ValueError(f"must be a string or a list of strings, got {value!r}")
        return value

    @field_validator("command", "resume")
    @classmethod
    def _splits(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None:
            try:
                template.placeholders(template.split(value))
            except TemplateError as e:
                raise ValueError(str(e)) from None
        return value

    @field_validator("report")
    @classmethod
    def _reads_a_value(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_report(value)
            except ReportFormatError as e:
                raise ValueError(str(e)) from None
        return value

    @property
    def items(self) -> list[str]:
        """The command's and the resume addition's items."""
        return template.split(self.command) + (template.split(self.resume) if self.resume else [])


def _objective_kind(value: Any) -> str:
    return "command" if isinstance(value, dict | CommandObjective) else "name"


Objective = Annotated[
    Annotated[str, Field(min_length=1), Tag("name")] | Annotated[CommandObjective, Tag("command")],
    Discriminator(_objective_kind),
]


class _Seeded(_Strict):
    seed: Seed | None = 0


class TPE(_Seeded):
    name: Literal["tpe"]
    n_startup_trials: Count = Field(10, ge=0)
    multivariate: bool = True
    group: bool = True  # the schedule space is conditional: group=True models it per family
    constant_liar: bool = True


class GP(_Seeded):
    name: Literal["gp"]
    n_startup_trials: Count = Field(10, ge=0)


class CmaEs(_Seeded):
    name: Literal["cmaes"]
    n_startup_trials: Count = Field(1, ge=0)


class Random(_Seeded):
    name: Literal["random"]


class QMC(_Seeded):
    name: Literal["qmc"]
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class Grid(_Seeded):
    """Every combination of the space's categorical and fixed values, in a seeded order."""

    name: Literal["grid"]


Sampler = Annotated[TPE | GP | CmaEs | Random | QMC | Grid, Field(discriminator="name")]


class NoPruner(_Strict):
    name: Literal["none"]


class Median(_Strict):
    name: Literal["median"]
    n_startup_trials: Count = Field(5, ge=0)
    n_warmup_steps: Count = Field(0, ge=0)
    interval_steps: Count = Field(1, ge=1)
    n_min_trials: Count = Field(1, ge=1)


class Percentile(Median):
    name: Literal["percentile"]  # type: ignore[assignment]
    percentile: float = Field(ge=0, le=100)


class SuccessiveHalving(_Strict):
    name: Literal["successive_halving"]
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: Count = Field(4, ge=2)
    min_early_stopping_rate: Count = Field(0, ge=0)
    bootstrap_count: Count = Field(0, ge=0)

    @field_validator("min_resource")
    @classmethod
    def _at_least_one(cls, value: int | str, info: ValidationInfo) -> int | str:
        # The upper bound is new (`STORED`); the lower one always held.
        if isinstance(value, int) and (value < 1 or (value > MAX_COUNT and not _stored(info))):
            raise ValueError(
                f"must be 'auto' or an integer in [1, {MAX_COUNT}], got {shown(value)}"
            )
        return value


class Hyperband(_Strict):
    name: Literal["hyperband"]
    min_resource: Count = Field(1, ge=1)
    reduction_factor: Count = Field(3, ge=2)
    bootstrap_count: Count = Field(0, ge=0)


class Wilcoxon(_Strict):
    name: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0, lt=1)
    n_startup_steps: Count = Field(2, ge=0)


Pruner = Annotated[
    NoPruner | Median | Percentile | SuccessiveHalving | Hyperband | Wilcoxon,
    Field(discriminator="name"),
]


class SweepConfig(_Strict):
    """A validated sweep. `space` is kept as written; `sweeps.space` parses and checks it."""

    study: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    objective: Objective = Field(
        description="built-in task, 'package.module:function', or {command: ...}"
    )
    objective_args: dict[str, Any] = Field(default_factory=dict)
    direction: Literal["maximize", "minimize"] = "maximize"
    budget: Budget
    sampler: Sampler = Field(default_factory=lambda: TPE(name="tpe"))
    pruner: Pruner = Field(default_factory=lambda: Median(name="median"))
    space: dict[str, Any]
    seed: Seed = 0
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto (checked by workers)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="fp32, or bf16: forward passes under bfloat16 autocast (tasks)"
    )
    stack: int = Field(1, ge=1, le=MAX_STACK, description="trials trained at once as one model")
    min_trials_per_family: Count = Field(
        1, ge=0, description="trials each schedule family gets before the sampler chooses"
    )
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    branches: Branches | None = Field(
        None, description="cooldown branches from shared stable phases (sweeps.branches)"
    )

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        from sweeps.device import ALLOWED, DEVICE_PATTERN

        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"must be {ALLOWED}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        min_resource = getattr(self.pruner, "min_resource", None)
        if isinstance(min_resource, int) and min_resource > self.budget.epochs:
            raise ValueError(
                f"pruner.min_resource: must be <= budget.epochs={self.budget.epochs}, "
                f"got {min_resource}"
            )
        if self.branches is not None and isinstance(self.sampler, Grid):
            raise ValueError(
                "branches: not with sampler grid (its points fix every parameter, the "
                "cooldown's too); use another sampler or remove branches"
            )
        families = self.space.get("schedule")
        if self.branches is not None and isinstance(families, dict):
            cooling = [n for n, f in schedules.SCHEDULES.items() if f.COOLDOWN]
            if not set(families) & set(cooling):
                raise ValueError(
                    f"branches: needs a family with a cooldown in space.schedule "
                    f"({', '.join(cooling)}); add one or remove branches"
                )
        if self.heartbeat.grace_period <= 2 * self.heartbeat.interval:
            raise ValueError(
                "heartbeat.grace_period: must be more than twice heartbeat.interval="
                f"{self.heartbeat.interval:g}, got {self.heartbeat.grace_period:g}"
            )
        return self

    @property
    def objective_spec(self) -> str | dict[str, Any]:
        """What `objectives.resolve` takes: the name, or the command's settings."""
        if isinstance(self.objective, str):
            return self.objective
        return self.objective.model_dump()

    @property
    def objective_name(self) -> str:
        """The objective as a person reads it: its name, or its command line."""
        if isinstance(self.objective, str):
            return self.objective
        return " ".join(template.split(self.objective.command))

    @property
    def max_failures(self) -> int:
        return self.budget.max_failures or max(10, self.budget.trials)


def load_yaml(path: Path) -> Any:
    """Read a YAML file safely: size-capped, safe loader, alias expansion bounded.

    Raises:
        ConfigError: unreadable, too large, not YAML, or expanding past `MAX_CONFIG_NODES`.
    """
    try:
        # A bounded read: a device or a pipe (/dev/zero) has no size to check beforehand.
        with path.open("rb") as file:
            content = file.read(MAX_CONFIG_BYTES + 1)
        if len(content) > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: config is over {MAX_CONFIG_BYTES} bytes, the limit"])
        text = content.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise ConfigError([f"{path}: cannot read config: {reason}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise ConfigError([f"{path}: config is nested too deeply"]) from None
    except _DuplicateKey as e:
        raise ConfigError([f"{e.key}: given twice (line {e.line}); keep one"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    _check_expansion(data, path)
    return data


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys instead of keeping the last one, and
    integers too long to print (past Python's 4300 digits)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            value: int = super().construct_yaml_int(node)
            str(value)  # hexadecimal escapes the limit when read, not when printed
        except ValueError:
            limit = sys.get_int_max_str_digits()
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of more than {limit} digits", node.start_mark
            ) from None
        return value

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)


def _check_expansion(data: Any, path: Path) -> None:
    budget = MAX_CONFIG_NODES
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                [
                    f"{path}: config expands to more than {MAX_CONFIG_NODES} values "
                    "(YAML aliases?); refusing it"
                ]
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError([f"{path}: config is nested deeper than {MAX_CONFIG_DEPTH} levels"])
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in (*node.keys(), *node.values()))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def parse_config(data: Any) -> SweepConfig:
    """Validate ``data`` (a loaded YAML document) into a `SweepConfig` whose space is valid.

    Raises:
        ConfigError: with every problem found, each naming its field path.
    """
    from sweeps.space import parse_space  # the space needs `schedules` (torch): import late

    if not isinstance(data, dict):
        raise ConfigError([f"config: must be a mapping of fields, got {type(data).__name__}"])
    errors: list[str] = []
    config: SweepConfig | None = None
    try:
        config = SweepConfig.model_validate(data)
    except ValidationError as e:
        errors.extend(pydantic_errors(e))
    space = data.get("space")
    if isinstance(space, dict):
        parsed = parse_space(space)
        errors.extend(parsed.errors)
        given = data.get("objective_args")
        errors += [
            f"space.args.{name}: also set in objective_args; give it in one place"
            for name in parsed.args
            if isinstance(given, dict) and name in given
        ]
        if not errors and config is not None and isinstance(config.sampler, Grid):
            errors.extend(_grid_errors(parsed, config.budget.trials))
        if not errors and config is not None and isinstance(config.objective, CommandObjective):
            errors.extend(_command_errors(config.objective, parsed, config.objective_args))
    if errors:
        raise ConfigError(errors)
    assert config is not None
    return config


def _command_errors(
    command: CommandObjective, space: Space, objective_args: dict[str, Any]
) -> list[str]:
    """Placeholders that name no parameter of the space; families ``{hf_args}`` cannot
    express."""
    known = space.names() | {f"args.{name}" for name in objective_args}
    for field in ("command", "resume"):
        value = getattr(command, field)
        try:
            template.check(template.split(value) if value else [], known)
        except TemplateError as e:
            return [f"objective.{field}: {e}"]
    if template.HF_ARGS not in template.placeholders(command.items):
        return []
    from objectives.command.hf import why_not

    errors = []
    for family, dims in space.families.items():
        values = {k: None if d.is_range else d.values() for k, d in dims.items()}
        why = why_not(family, values)
        if why:
            errors.append(f"space.schedule.{family}: {{{template.HF_ARGS}}}: {why}")
    return errors


def _grid_errors(space: Space, trials: int) -> list[str]:
    errors = [
        f"space.{name}: grid sampler needs a list or fixed value, not a range"
        for name in space.ranged()
    ]
    if not errors:
        size = space.grid_size()
        if size > MAX_GRID_POINTS:
            errors.append(
                f"space: the grid sampler's grid has {size} points, more than the "
                f"{MAX_GRID_POINTS} allowed (launch queues each one); list fewer values, or use "
                "another sampler"
            )
        elif trials > size:
            errors.append(
                f"budget.trials: the grid has {size} combinations; trials must be <= {size}"
            )
    return errors


def pydantic_errors(error: ValidationError) -> list[str]:
    """One ``field: why`` line per problem pydantic found."""
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        # Drop the union tag pydantic inserts: pruner.hyperband.x -> pruner.x
        if len(loc) > 1 and loc[0] in ("sampler", "pruner", "objective"):
            loc = [loc[0], *loc[2:]]
        field = ".".join(loc) or "config"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required"
        elif item["type"] == "union_tag_invalid":
            expected = item.get("ctx", {}).get("expected_tags", "")
            message = f"unknown name {item['input'].get('name')!r}; allowed: {expected}"
        elif item["type"] == "union_tag_not_found":
            message = "needs a 'name'"
        elif item["type"] == "value_error":
            message = str(item.get("ctx", {}).get("error", message))
            if not loc and ": " in message:  # a model-level check names its own field
                field, message = message.split(": ", 1)
        if "input" in item and item["type"] not in ("missing", "extra_forbidden", "value_error"):
            given = item["input"]
            if isinstance(given, int) and not isinstance(given, bool):
                message = f"{message}, got {shown(given)}"
            elif not isinstance(given, dict | list):
                message = f"{message}, got {given!r}"
        lines.append(f"{field}: {message}")
    return lines
