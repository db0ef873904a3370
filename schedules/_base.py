"""The base of every schedule family: declared parameters, validation, warmup.

A family is a subclass of `Schedule` that declares its parameters once, in `PARAMS`. That
declaration is the single source of truth for validation here and for the sweep config,
which builds and checks its search space from the same `Param` objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from schedules._torch import ScheduleLR

_REQUIRED: Any = object()


class ScheduleError(ValueError):
    """An unknown family, or a parameter outside its allowed range.

    The message always names the parameter (as ``family.param``) and what is allowed.
    """


@dataclass(frozen=True)
class Param:
    """One parameter of a family and the values it may take.

    Attributes:
        kind: ``float``, ``int``, ``str`` or ``bool``.
        doc: one line for tables and error messages.
        low, high: bounds for numbers (``None`` means unbounded).
        low_open, high_open: whether the bound itself is excluded.
        choices: allowed values of a ``str`` parameter.
        default: the value when none is given; absent means required.
        log: whether a search over this parameter is naturally on a log scale.
    """

    kind: type
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    default: Any = _REQUIRED
    log: bool = False

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def allowed(self) -> str:
        """Describe the allowed values, e.g. ``a float in (0, 1]``."""
        if self.kind is str:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        kind = "an integer" if self.kind is int else "a number"
        if self.low is None and self.high is None:
            return kind
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{kind} in {left}{lo}, {hi}{right}"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is allowed (after `coerce`)."""
        if value is None:
            return self.default is None
        if self.kind is str:
            return value in self.choices
        if self.kind is bool:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False  # an int is finite, and may be too large to become a float
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (
            self.high is not None
            and (value > self.high or (self.high_open and value == self.high))
        )

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this parameter's kind, or raise `TypeError`.

        Integral floats are accepted for integers (YAML and samplers produce them);
        booleans are never numbers here.
        """
        if value is None and self.default is None:
            return None
        if self.kind is str:
            if isinstance(value, str):
                return value
        elif isinstance(value, bool):
            if self.kind is bool:
                return value
            pass
        elif self.kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif isinstance(value, int | float):
            try:
                return float(value)
            except OverflowError:  # an integer past the largest float
                pass
        raise TypeError(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


class Schedule:
    """A learning-rate schedule family with validated parameters.

    Subclasses set `name`, `PARAMS` and, for closed forms, `_factor`; adaptive families
    (whose lr depends on training) set ``closed_form = False`` and override the state hooks.
    Every family shares `lr` (α0, the peak learning rate) and `warmup_steps` (linear warmup
    from 0 to the family's value at its own step 0; the family then runs at ``t - warmup``).

    A `Schedule` is immutable and holds no training state; `attach` creates the stateful torch
    scheduler. It is safe to share between threads.
    """

    name: ClassVar[str]
    doc: ClassVar[str]
    formula: ClassVar[str]
    closed_form: ClassVar[bool] = True
    metric_driven: ClassVar[bool] = False  # fed a validation metric via scheduler.step(m)
    PARAMS: ClassVar[Mapping[str, Param]] = {}
    # The parameters that act only from `stable_steps` on (a cooldown's): trials that differ
    # only in these train the same steps until then, so they can branch from one trunk.
    COOLDOWN: ClassVar[tuple[str, ...]] = ()
    COMMON: ClassVar[Mapping[str, Param]] = {
        "lr": Param(float, "peak learning rate α0", low=0.0, low_open=True, log=True),
        "warmup_steps": Param(int, "linear warmup steps before the family starts", 0, default=0),
    }

    lr: float
    warmup_steps: int

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against `params_spec` and store them as attributes.

        Raises:
            ScheduleError: a parameter is unknown, missing, of the wrong type or out of range.
        """
        spec = self.params_spec()
        for key in params:
            if key not in spec:
                raise ScheduleError(
                    f"{self.name}.{key}: unknown parameter; allowed: {', '.join(spec)}"
                )
        resolved: dict[str, Any] = {}
        for key, param in spec.items():
            if key not in params:
                if param.required:
                    raise ScheduleError(f"{self.name}.{key}: required ({param.allowed()})")
                resolved[key] = param.default
                continue
            try:
                value = param.coerce(params[key])
            except TypeError:
                raise ScheduleError(
                    f"{self.name}.{key}: must be {param.allowed()}, got {params[key]!r}"
                ) from None
            if not param.contains(value):
                raise ScheduleError(f"{self.name}.{key}: must be {param.allowed()}, got {value!r}")
            resolved[key] = value
        self.params: dict[str, Any] = resolved
        for key, value in resolved.items():
            setattr(self, key, value)
        self._check()

    @classmethod
    def params_spec(cls) -> dict[str, Param]:
        """Every parameter this family accepts: the common ones, then the family's own."""
        return {**cls.COMMON, **cls.PARAMS}

    def _check(self) -> None:
        """Cross-parameter checks; raise `ScheduleError` naming the parameter."""

    def _check_min_lr(self) -> None:
        min_lr: float = self.params["min_lr"]
        if min_lr > self.lr:
            raise ScheduleError(
                f"{self.name}.min_lr: must be a number in [0, lr={self.lr!r}], got {min_lr!r}"
            )

    @property
    def stable_steps(self) -> float | None:
        """How many optimizer steps this schedule holds `lr` after its warmup: every step
        ``t < stable_steps`` has the lr of the ``constant`` family with the same lr and
        warmup. None for a family without a cooldown (`COOLDOWN`)."""
        return None

    def _factor(self, t: int) -> float:
        """The family's multiplier of `lr` at its own step ``t >= 0`` (closed forms only)."""
        raise NotImplementedError

    def lr_at(self, t: int) -> float:
        """The learning rate for optimizer step ``t`` (counting from 0).

        Raises:
            ScheduleError: ``t`` is negative, or the family is adaptive (its lr depends on
                training; use `attach`).
        """
        if not self.closed_form:
            raise ScheduleError(
                f"{self.name}: adaptive schedule, its lr depends on training; "
                "use attach(optimizer)"
            )
        return self.lr * self._warmed(t, self._factor)

    def nominal_lr_at(self, t: int) -> float:
        """`lr_at` for closed forms; for adaptive families the lr before training moves it
        (warmup, then α0): what a preview can honestly draw."""
        if self.closed_form:
            return self.lr_at(t)
        return self.lr * self._warmed(t, lambda _: 1.0)

    def _warmed(self, t: int, factor: Any) -> float:
        if t < 0:
            raise ScheduleError(f"{self.name}: step t must be >= 0, got {t}")
        if t < self.warmup_steps:
            return float(t / self.warmup_steps * factor(0))
        return float(factor(t - self.warmup_steps))

    # Hooks for adaptive families. Their state is a dict of plain Python values, so that a
    # scheduler's state_dict() holds nothing but numbers and lists (loadable with
    # torch.load(weights_only=True)).

    def initial_state(self) -> dict[str, Any]:
        """A fresh training state for an attached scheduler."""
        return {}

    def observe_step(
        self, state: dict[str, Any], t: int, optimizer: torch.optim.Optimizer
    ) -> None:
        """Called after optimizer step ``t`` (family time), before the next lr is computed."""

    def observe_metric(self, state: dict[str, Any], metric: float) -> None:
        """Called with a validation metric; only metric-driven families accept it."""
        raise ScheduleError(f"{self.name}: takes no metric; only 'plateau' is metric-driven")

    def state_factor(self, state: dict[str, Any], t: int) -> float:
        """The multiplier of `lr` at family step ``t`` given the training state."""
        return self._factor(t)

    def lr_in_state(self, state: dict[str, Any], t: int) -> float:
        """The learning rate at optimizer step ``t`` given the training state."""
        return self.lr * self._warmed(t, lambda u: self.state_factor(state, u))

    def attach(self, optimizer: torch.optim.Optimizer) -> ScheduleLR:
        """Drive ``optimizer``'s learning rate (every param group) with this schedule.

        Call ``scheduler.step()`` once after every ``optimizer.step()``. The scheduler's
        ``state_dict()`` resumes exactly.
        """
        from schedules._torch import ScheduleLR

        return ScheduleLR(optimizer, self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"build({self.name!r}, {args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Schedule) and other.name == self.name and other.params == self.params
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))


# Parameters several families share, declared once.
TOTAL_STEPS = Param(int, "steps over which the family decays (after warmup)", low=1)
MIN_LR = Param(float, "learning rate the decay ends at", low=0.0, default=0.0)
