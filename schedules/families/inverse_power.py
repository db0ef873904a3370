from __future__ import annotations

from schedules._base import Param, Schedule, ScheduleError


class InversePower(Schedule):
    """α0(1 + t/T)^−γ: Keras `InverseTimeDecay` at γ = 1, HF `inverse_sqrt` at γ = ½.

    The timescale T defaults to `total_steps`; one of the two must be given.
    """

    name = "inverse_power"
    doc = "inverse power decay (1 + t/timescale)^−γ"
    formula = "α0·(1 + t/timescale)^−γ"
    PARAMS = {
        "power": Param(float, "exponent γ", low=0.0, low_open=True, default=1.0),
        "timescale": Param(
            float,
            "steps for the lr to fall by 2^γ (default: total_steps)",
            low=0.0,
            low_open=True,
            default=None,
            log=True,
        ),
        "total_steps": Param(int, "run length, the default timescale", low=1, default=None),
    }
    power: float
    timescale: float | None
    total_steps: int | None

    def _check(self) -> None:
        if self.timescale is None and self.total_steps is None:
            raise ScheduleError(
                f"{self.name}.timescale: required when total_steps is not given "
                f"({self.PARAMS['timescale'].allowed()})"
            )

    def _factor(self, t: int) -> float:
        timescale = self.timescale if self.timescale is not None else self.total_steps
        assert timescale is not None  # _check guarantees one of the two
        return float((1.0 + t / timescale) ** -self.power)
