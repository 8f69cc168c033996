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

Supply side (optional, `supply=`): a `SupplyController` acts at the same intervals on the battery and
on admission. Its `SupplyActions` command the battery (W, + discharge / - charge; NaN: the site's own
dispatch rule) and cap the IT board power admitted; `deferrable_frac` of each interval's offered load
is deferrable work that waits in a first-in-first-out backlog until admitted. Work that would be late if
it waited one more interval (due `deadline_s` after it arrived) is admitted whatever the cap says, up to the plant's
design board power (a scheduler's deadline guard); what still finishes late is counted, never hidden.
The battery command (finite W: with a supply controller the battery is the controller's, the site's
rule does not run) is clipped per interval to its power, its state-of-charge bounds and the net demand
it may serve (`supply.battery_step`, the same step the twin's dispatch takes; the net demand bound is the
admitted board power less on-site generation, never more than the twin's net) and held evenly over the
interval's steps, so the twin's dispatch follows it exactly and the supply controller sees the state of
charge the twin will have (tested, with and without solar). Conserved: the offered board energy = the
admitted + what is left in the backlog at the end (tested); work still waiting past its deadline at the
end is reported (`SupplyRun.overdue_at_end_j`).

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

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from joulepath.facility.cooling import Setpoints, fixed_setpoints, rack_inlet_c
from joulepath.facility.core import Clock, hourly_to_clock
from joulepath.facility.grid import GridSignal
from joulepath.facility.supply import battery_step
from joulepath.facility.twin import FacilityConfig, TwinResult, load_grid, load_weather, onsite_w, run_twin
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


@dataclass(frozen=True)
class SupplyActions:
    """What a supply controller sets for the coming interval."""

    battery_w: float = 0.0  # + discharge, - charge, 0 hold (W, finite)
    admit_board_w: float = float("inf")  # ceiling on the interval's mean IT board power (deferrable waits)


@dataclass(frozen=True)
class SupplyState:
    """What a supply controller observes at the start of interval `interval`. The grid's carbon
    intensity and price are the coming interval's (published in real time); the rest is the loop's."""

    interval: int
    hour_of_year: float
    carbon_g_per_kwh: float
    price_usd_per_kwh: float
    offered_board_w: float  # mean offered IT board power over the last interval (NaN before the first)
    backlog_j: float  # deferrable board energy waiting
    oldest_wait_s: float  # how long the oldest waiting work has waited (0 when none waits)
    deadline_s: float
    soc_wh: float  # the battery's state of charge (0 without a battery)
    design_board_w: float


class SupplyController(Protocol):
    """Commands the battery and admission for the coming interval."""

    @property
    def name(self) -> str: ...

    def decide(self, state: SupplyState, forecast: Forecast) -> SupplyActions: ...


@dataclass
class SupplyRun:
    """The supply side of a controlled run (all in board joules and W; per interval unless named)."""

    controller: str
    offered_board_w: np.ndarray  # per step, before admission
    actions: list[SupplyActions]
    soc_wh: np.ndarray  # the loop's state of charge at each interval's end
    backlog_j: np.ndarray  # at each interval's end
    late_j: float  # deferrable energy admitted after its deadline
    overdue_at_end_j: float  # deferrable energy still waiting at the end whose deadline had passed
    deferrable_frac: float
    deadline_s: float
    max_wait_s: float = 0.0  # the longest any admitted work waited
    notes: list[str] = field(default_factory=list)


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
    supply: SupplyRun | None = None  # the supply side, where a supply controller acted


def interval_means(values: np.ndarray, interval_steps: int) -> np.ndarray:
    """Mean of each whole or final partial interval."""
    n = len(values)
    edges = np.arange(0, n, interval_steps)
    return np.add.reduceat(values, edges) / np.diff(np.append(edges, n))


class _SupplyLoop:
    """The supply side inside the feedback loop: a FIFO backlog of deferrable work and the battery."""

    def __init__(
        self,
        cfg: FacilityConfig,
        controller: SupplyController,
        offered_w: np.ndarray,
        clock: Clock,
        interval_steps: int,
        grid: GridSignal,
        design_board_w: float,
        deferrable_frac: float,
        deadline_s: float,
        weather: Weather,
    ) -> None:
        self.cfg, self.controller, self.clock, self.k_steps = cfg, controller, clock, interval_steps
        self.offered = np.asarray(offered_w, dtype=float)
        self.onsite = onsite_w(cfg, weather, clock)
        self.admitted = self.offered.copy()
        self.command = np.full(clock.n_steps, np.nan)
        self.design, self.frac, self.deadline_s = design_board_w, deferrable_frac, deadline_s
        self.carbon = interval_means(hourly_to_clock(grid.carbon_g_per_kwh, clock), interval_steps)
        self.price = interval_means(hourly_to_clock(grid.price_usd_per_kwh, clock), interval_steps)
        st = cfg.storage
        self.battery = st.energy_wh > 0 and st.power_w > 0
        self.level = (st.soc_min_frac + st.soc_max_frac) / 2 * st.energy_wh if self.battery else 0.0
        self.queue: deque[list[float]] = deque()  # [arrival time s, joules left], oldest first
        self.actions: list[SupplyActions] = []
        n_int = len(self.carbon)
        self.soc, self.backlog = np.zeros(n_int), np.zeros(n_int)
        self.late_j, self.max_wait_s, self.waiting_j = 0.0, 0.0, 0.0

    def step(self, k: int, forecast: Forecast) -> float:
        """Decide and apply interval `k`; returns its admitted mean board power."""
        lo = k * self.k_steps
        hi = min(lo + self.k_steps, self.clock.n_steps)
        span_s = (hi - lo) * self.clock.dt_s
        t0 = lo * self.clock.dt_s
        state = SupplyState(
            k,
            (self.clock.start_hour_of_year + t0 / 3600.0) % 8760.0,
            float(self.carbon[k]),
            float(self.price[k]),
            float(self.offered[lo - self.k_steps : lo].mean()) if k else float("nan"),
            self.waiting_j,
            t0 - self.queue[0][0] if self.queue else 0.0,
            self.deadline_s,
            self.level,
            self.design,
        )
        act = self.controller.decide(state, forecast)
        if not act.admit_board_w >= 0:  # NaN too
            raise ValueError(f"{self.controller.name}: admit_board_w must be >= 0 W, got {act.admit_board_w}")
        if self.battery and not np.isfinite(act.battery_w):
            raise ValueError(
                f"{self.controller.name}: battery_w must be a finite W figure (+ discharge, - charge, 0 hold), "
                f"got {act.battery_w}; the site's own dispatch rule needs the facility power the loop has not got"
            )
        self.actions.append(act)
        offered = self.offered[lo:hi]
        interactive = offered * (1.0 - self.frac)
        arriving_j = float(offered.sum() * self.frac * self.clock.dt_s)
        if arriving_j > 0:
            self.queue.append([t0, arriving_j])
            self.waiting_j += arriving_j
        headroom = np.maximum(self.design - interactive, 0.0)  # the plant's room, per step
        room_j = float(headroom.sum() * self.clock.dt_s)
        cap_j = max(float((min(act.admit_board_w, self.design) * (hi - lo) - interactive.sum()) * self.clock.dt_s), 0.0)
        # due before the next interval ends: served now, it finishes in time
        due_j = 0.0
        for arrived, joules in self.queue:  # oldest first: the due ones lead
            if arrived + self.deadline_s >= t0 + 2 * span_s:
                break
            due_j += joules
        grant = min(room_j, max(cap_j, due_j))
        admitted_j = 0.0
        while self.queue and admitted_j < grant:
            arrived, joules = self.queue[0]
            take = min(joules, grant - admitted_j)
            admitted_j += take
            self.max_wait_s = max(self.max_wait_s, t0 - arrived)
            if t0 + span_s > arrived + self.deadline_s:
                self.late_j += take * min(1.0, (t0 + span_s - arrived - self.deadline_s) / span_s)
            if take >= joules:
                self.queue.popleft()
            else:
                self.queue[0][1] = joules - take
        if admitted_j > 0:  # spread where the plant has room: never past its design board power
            self.admitted[lo:hi] = interactive + headroom * (admitted_j / room_j)
        else:
            self.admitted[lo:hi] = interactive
        if self.battery:
            dt_h = span_s / 3600.0  # the interval's energy in one step, then spread evenly over its steps
            # the facility draws at least its boards: boards less on-site generation bound the twin's net demand
            net = max(float((self.admitted[lo:hi] - self.onsite[lo:hi]).min()), 0.0)
            charge, discharge, self.level = battery_step(self.level, act.battery_w, net, self.cfg.storage, dt_h)
            self.command[lo:hi] = discharge - charge
        self.waiting_j -= admitted_j
        self.soc[k], self.backlog[k] = self.level, max(self.waiting_j, 0.0)
        return float(self.admitted[lo:hi].mean())

    def result(self) -> SupplyRun:
        end_s = self.clock.n_steps * self.clock.dt_s
        overdue = sum(j for arrived, j in self.queue if arrived + self.deadline_s < end_s)
        notes = [] if self.battery else ["no battery at this site: battery commands had nothing to act on"]
        return SupplyRun(
            self.controller.name,
            self.offered,
            self.actions,
            self.soc,
            self.backlog,
            self.late_j,
            overdue,
            self.frac,
            self.deadline_s,
            self.max_wait_s,
            notes,
        )


def _decide_loop(
    cfg: FacilityConfig,
    history: History,
    clock: Clock,
    controller: Controller,
    forecaster: Forecaster,
    design_board_w: float,
    horizon_intervals: int,
    supply: _SupplyLoop | None = None,
) -> tuple[list[Setpoints], np.ndarray]:
    """The feedback loop: decisions per interval and the rack inlet the plant showed at every step. With
    a supply loop, each interval's admitted board power replaces the offered one in `history` before the
    cooling controller sees it (in the next interval)."""
    k_steps = round(history.interval_s / clock.dt_s)
    n_int = len(history.it_board_w)
    inlet = np.empty(clock.n_steps)
    sp = fixed_setpoints(cfg.cooling)
    inlet_max, decisions = float(rack_inlet_c(cfg.cooling, sp)), []
    for k in range(n_int):
        past = History(history.it_board_w[:k], history.t_outdoor_c[:k], history.t_wetbulb_c[:k], history.interval_s)
        forecast = forecaster.forecast(past, horizon_intervals)  # only the past: shared by both controllers
        if supply is not None:
            history.it_board_w[k] = supply.step(k, forecast)
        state = PlantState(
            k,
            (clock.start_hour_of_year + k * history.interval_s / 3600.0) % 8760.0,
            sp,
            inlet_max,
            float(history.it_board_w[k - 1]) if k else float(history.it_board_w[0]),
            float(history.t_wetbulb_c[k - 1]) if k else float(history.t_wetbulb_c[0]),
            design_board_w,
        )
        sp = controller.decide(state, forecast)
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
    supply: SupplyController | None = None,
    deferrable_frac: float = 0.0,
    deadline_s: float = 86400.0,
) -> ControlledRun:
    """Run the twin with `controller` in the loop every `interval_steps` steps (1-minute steps and 15-step
    intervals: 35,040 decisions a year). Forecasts cover `horizon_intervals` intervals (default persistence).
    `supply`: a supply controller acting on the battery and on admission at the same intervals, with
    `deferrable_frac` of the offered load deferrable for up to `deadline_s` (module docstring)."""
    if len(it_board_w) != clock.n_steps:
        raise ValueError(f"it_board_w has {len(it_board_w)} values; the clock has {clock.n_steps} steps")
    if not 0.0 <= deferrable_frac <= 1.0:
        raise ValueError(f"deferrable_frac must be in [0, 1], got {deferrable_frac}")
    if deadline_s < interval_steps * clock.dt_s:
        raise ValueError(f"deadline_s ({deadline_s:g} s) must be at least one control interval")
    weather = weather or load_weather(cfg)
    grid = grid or load_grid(cfg, weather)
    design = float(design_board_w or np.max(it_board_w))
    history = History(
        interval_means(np.asarray(it_board_w, dtype=float), interval_steps),
        interval_means(hourly_to_clock(weather.t_drybulb_c, clock), interval_steps),
        interval_means(hourly_to_clock(weather.t_wetbulb_c, clock), interval_steps),
        interval_steps * clock.dt_s,
    )
    side = None
    if supply is not None:
        side = _SupplyLoop(
            cfg, supply, it_board_w, clock, interval_steps, grid, design, deferrable_frac, deadline_s, weather
        )
    decisions, inlet = _decide_loop(
        cfg, history, clock, controller, forecaster or Persistence(), design, horizon_intervals, side
    )
    sp = setpoint_series(decisions, interval_steps, clock.n_steps)
    board = it_board_w if side is None else side.admitted
    command = None if side is None else side.command
    twin = run_twin(cfg, board, clock, design, weather, grid, setpoints=sp, storage_command_w=command)
    return ControlledRun(
        twin, decisions, controller.name, interval_steps, inlet, None if side is None else side.result()
    )
