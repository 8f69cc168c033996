"""The twin with feedback: a controller sets the cooling setpoints between control intervals.

Loop, per control interval (default 15 one-minute steps):
  past intervals' means (load, weather)  -> Forecaster.forecast -> Forecast (the coming intervals)
  PlantState (last setpoints, hottest rack inlet, last load and weather) + Forecast
      -> Controller.decide -> Setpoints for the coming interval
  the interval's rack inlet temperatures (vectorised over its steps) -> the next PlantState

The cooling model holds no state from one step to the next, so what a setpoint does inside its interval
depends only on that interval. The energy accounting therefore runs once, vectorised over the whole
horizon, through `run_twin` with the per-step setpoint series: the same numbers a step-by-step run gives
(tested), with the same conservation (facility = IT + chain + cooling + auxiliaries at every step).
A controller never sees the future: the forecaster gets only the intervals already simulated.

    >>> from joulepath.facility.presets import MODERN_AIR
    >>> class Fixed:
    ...     name = "fixed-18"
    ...     def decide(self, state, forecast): return Setpoints(18.0, 12.0)
    >>> clock = Clock(60.0, 60 * 24)
    >>> r = run_controlled(MODERN_AIR, np.full(clock.n_steps, 1e6), clock, Fixed())
    >>> r.twin.metrics.inlet_violation_steps, len(r.decisions)
    (0, 96)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from joulepath.facility.cooling import Setpoints, fixed_setpoints, rack_inlet_c
from joulepath.facility.core import Clock, hourly_to_clock
from joulepath.facility.grid import GridSignal
from joulepath.facility.twin import FacilityConfig, TwinResult, load_grid, load_weather, run_twin
from joulepath.facility.weather import Weather


@dataclass(frozen=True)
class History:
    """Per-interval means of what has been observed so far (index i = interval i; only the past)."""

    it_board_w: np.ndarray
    t_outdoor_c: np.ndarray
    t_wetbulb_c: np.ndarray
    interval_s: float


@dataclass(frozen=True)
class Forecast:
    """Expected means over the coming intervals (index 0 = the interval about to start)."""

    it_board_w: np.ndarray
    t_outdoor_c: np.ndarray
    t_wetbulb_c: np.ndarray


@dataclass(frozen=True)
class PlantState:
    """What a controller observes at the start of interval `interval`."""

    interval: int
    hour_of_year: float  # at the start of the coming interval
    setpoints: Setpoints  # in force during the last interval
    inlet_max_c: float  # hottest rack inlet over the last interval
    it_board_w: float  # mean over the last interval
    t_wetbulb_c: float  # mean over the last interval
    design_board_w: float


class Controller(Protocol):
    """Sets the cooling setpoints for the coming interval."""

    @property
    def name(self) -> str: ...

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints: ...


class Forecaster(Protocol):
    """Forecasts the coming intervals from the past ones."""

    def forecast(self, history: History, horizon_intervals: int) -> Forecast: ...


@dataclass(frozen=True)
class Persistence:
    """The last interval's values held over the horizon (the simplest forecaster; a baseline)."""

    def forecast(self, history: History, horizon_intervals: int) -> Forecast:
        def hold(x: np.ndarray) -> np.ndarray:
            return np.full(horizon_intervals, x[-1] if len(x) else np.nan)

        return Forecast(hold(history.it_board_w), hold(history.t_outdoor_c), hold(history.t_wetbulb_c))


@dataclass
class ControlledRun:
    """A controlled twin run: the twin's result (with the setpoint series) and each interval's decision."""

    twin: TwinResult
    decisions: list[Setpoints]
    controller: str
    interval_steps: int
    inlet_observed_c: np.ndarray  # per step, as the loop saw it (equals the twin's inlet unless overloaded)


def interval_means(values: np.ndarray, interval_steps: int) -> np.ndarray:
    """Mean of each whole or final partial interval."""
    n = len(values)
    edges = np.arange(0, n, interval_steps)
    return np.add.reduceat(values, edges) / np.diff(np.append(edges, n))


def _decide_loop(
    cfg: FacilityConfig,
    history: History,
    clock: Clock,
    controller: Controller,
    forecaster: Forecaster,
    design_board_w: float,
    horizon_intervals: int,
) -> tuple[list[Setpoints], np.ndarray]:
    """The feedback loop: decisions per interval and the rack inlet the plant showed at every step."""
    k_steps = round(history.interval_s / clock.dt_s)
    n_int = len(history.it_board_w)
    inlet = np.empty(clock.n_steps)
    sp = fixed_setpoints(cfg.cooling)
    inlet_max, decisions = float(rack_inlet_c(cfg.cooling, sp)), []
    for k in range(n_int):
        past = History(history.it_board_w[:k], history.t_outdoor_c[:k], history.t_wetbulb_c[:k], history.interval_s)
        state = PlantState(
            k,
            (clock.start_hour_of_year + k * history.interval_s / 3600.0) % 8760.0,
            sp,
            inlet_max,
            float(history.it_board_w[k - 1]) if k else float(history.it_board_w[0]),
            float(history.t_wetbulb_c[k - 1]) if k else float(history.t_wetbulb_c[0]),
            design_board_w,
        )
        sp = controller.decide(state, forecaster.forecast(past, horizon_intervals))
        seg = rack_inlet_c(cfg.cooling, sp)  # the plant inside the interval (uniform: no overload term)
        inlet[k * k_steps : (k + 1) * k_steps] = seg
        inlet_max = float(np.max(seg))
        decisions.append(sp)
    return decisions, inlet


def setpoint_series(decisions: list[Setpoints], interval_steps: int, n_steps: int) -> Setpoints:
    """Each interval's setpoints held over its steps: one value per step."""

    def per_step(field: str) -> np.ndarray:
        values = np.array([float(getattr(d, field)) for d in decisions])  # one value per interval
        return np.repeat(values, interval_steps)[:n_steps]

    return Setpoints(*(per_step(f) for f in Setpoints.__dataclass_fields__))


def run_controlled(
    cfg: FacilityConfig,
    it_board_w: np.ndarray,
    clock: Clock,
    controller: Controller,
    forecaster: Forecaster | None = None,
    interval_steps: int = 15,
    horizon_intervals: int = 4,
    design_board_w: float | None = None,
    weather: Weather | None = None,
    grid: GridSignal | None = None,
) -> ControlledRun:
    """Run the twin with `controller` in the loop every `interval_steps` steps (1-minute steps and 15-step
    intervals: 35,040 decisions a year). Forecasts cover `horizon_intervals` intervals (default persistence)."""
    if len(it_board_w) != clock.n_steps:
        raise ValueError(f"it_board_w has {len(it_board_w)} values; the clock has {clock.n_steps} steps")
    weather = weather or load_weather(cfg)
    grid = grid or load_grid(cfg, weather)
    design = float(design_board_w or np.max(it_board_w))
    history = History(
        interval_means(np.asarray(it_board_w, dtype=float), interval_steps),
        interval_means(hourly_to_clock(weather.t_drybulb_c, clock), interval_steps),
        interval_means(hourly_to_clock(weather.t_wetbulb_c, clock), interval_steps),
        interval_steps * clock.dt_s,
    )
    decisions, inlet = _decide_loop(
        cfg, history, clock, controller, forecaster or Persistence(), design, horizon_intervals
    )
    sp = setpoint_series(decisions, interval_steps, clock.n_steps)
    twin = run_twin(cfg, it_board_w, clock, design, weather, grid, setpoints=sp)
    return ControlledRun(twin, decisions, controller.name, interval_steps, inlet)
