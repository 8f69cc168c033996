"""Cooling-plant controllers for the twin's feedback loop (`facility.feedback.run_controlled`).

- `FixedSetpoint`: 18 C supply air, chilled water at the coil's limit below it (12 C), airflow matched to
  the servers, variable-speed pumps on a fixed differential-pressure (DP) setpoint (a plant that just meets
  ASHRAE 90.1's variable-flow rule): the ASHRAE-style fixed baseline SustainDC compares against.
- `TrimAndRespond`: the trim-and-respond set-point reset of ASHRAE Guideline 36 (section 5.1.14 in the
  2018 edition) on the supply-air setpoint, driven by rack-inlet "requests": warm by `trim_k` each
  interval without requests, cool by `respond_k` per request (at most `max_respond_k`); chilled water
  follows the supply air at the coil's limit (as a G36 plant reset on the coils' requests would, at
  best: generous to the baseline), and the pumps' DP setpoint is reset with the valves (G36's pump
  sequence): the pumps deliver the flow the coils need at the design delta T, power ~ flow^3.
- `CoolingMpc`: model-predictive control. Each interval it scores every candidate setpoint within one
  rate-limited move (supply air x airflow ratio x economiser mode x condenser-water approach x
  chilled-water delta T, i.e. pump flow, x condenser-water flow; chilled water at the coil's limit for
  that delta T) held over the forecast horizon (move blocking) on the twin's own cooling model
  (`facility.cooling.run_cooling`, the same function the twin runs) plus the server-fan power a warmer
  inlet costs, keeps those whose rack inlet stays at or below 27 C minus a margin, and applies the
  cheapest.

Both baselines run the condenser water at design flow (constant-speed condenser pumps, or a fixed speed
per stage, are the common plant; ASHRAE Guideline 36 does not reset condenser-water flow for a standard
plant) and the condenser-water reset of common practice: the tower's leaving water follows the wet bulb
at the tower's design approach (4 K), as far as the tower can make it (e.g. EnergyPlus's
SetpointManager:FollowOutdoorAirTemperature on the wet bulb; ASHRAE 90.1 Appendix G's baseline floats
cruder, from 21 C). Of the fixed approaches 0-5 K this one used the least cooling for G36 (Dallas, checked
in benchmarks/RESULTS.md). G36-2021's own plant sequences are not transcribed here. The MPC chooses the
approach instead (colder water: less chiller lift, more tower-fan power).

The inlet constraint depends on the setpoints (supply air, recirculation), the objective on the
forecast load and wet bulb (chiller lift, economiser hours, fan power), so the forecast decides where the
optimum sits between cooling energy and server-fan energy. Chilled water is never set colder than the
coil needs at the chosen loop delta T: colder water than that only adds lift and loses economiser hours
(no latent load is modelled; tested). The delta T is the pump action: a wider one needs less flow (pump
power ~ flow^3, DP reset as G36) but colder water for the same supply air (the coil's approach grows as
its water flow falls, `facility.cooling.coil_approach_k`), so it trades pumps for chiller lift and
economiser hours. The condenser-water flow is the second pump action: less flow saves condenser pump power
(the open tower's static head stays) for a higher condensing temperature (a longer range), colder tower
water, and an economiser that needs colder tower water (`facility.cooling`, module docstring). For a
liquid loop the MPC also picks the facility water at or below its class limit (dry coolers vs
evaporative trim), and its CDU flow (`Setpoints.cdu_flow_frac`: the secondary loop's flow over what the
liquid heat needs at the design delta T, i.e. a wider loop delta T): less flow saves CDU pump power (the
affinity law) and warms the accelerators (`facility.cooling.chip_case_c`: a longer coolant rise, less
convection in the cold plate), so a candidate is kept only if the predicted case temperature at the
forecast load, the hottest interval of the horizon, stays at or below the chip's limit minus
`MpcConfig.chip_margin_k`. The twin's dry coolers see only the facility-water supply, so the hotter return
earns nothing there. Air plants have no cold plates: their CDU flow grid is (1.0,) and no chip check runs.
The baselines keep the design CDU flow: the CDU pumps then hold the design delta T (flow follows heat),
the constant-delta-T sequence CDUs offer; Guideline 36 has no CDU sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from joulepath.facility.cooling import (
    ASHRAE_INLET_MAX_C,
    CoolingConfig,
    Setpoints,
    coil_approach_k,
    rack_inlet_c,
    run_cooling,
    server_fan_factor,
    server_fan_frac,
)
from joulepath.facility.feedback import Forecast, History, PlantState
from joulepath.facility.power_chain import run_chain
from joulepath.facility.twin import HEATED_STAGES, FacilityConfig


def _setpoints(
    cooling: CoolingConfig,
    supply_air_c: float,
    airflow: float = 1.0,
    econ: float = 1.0,
    tower_approach_k: float | None = None,
    facility_water_c: float | None = None,
    chw_delta_t_k: float | None = None,
    pump_dp_reset_flag: float = 1.0,
    cw_flow_frac: float = 1.0,
    cdu_flow_frac: float = 1.0,
) -> Setpoints:
    """Supply air with the chilled water as warm as the coil allows at the loop's `chw_delta_t_k`
    (default: the design delta T); condenser water at wet bulb + `tower_approach_k` (default: the tower's
    design approach, the standard wet-bulb reset); facility water at `facility_water_c` (default: the
    liquid loop's class limit); pumps' DP setpoint reset with the valves unless `pump_dp_reset_flag` is 0;
    condenser water at `cw_flow_frac` of design flow (default: design, constant-speed condenser pumps); the
    CDU at `cdu_flow_frac` of the flow its heat needs at the design delta T (default: design)."""
    dt_k = cooling.chw_delta_t_design_k if chw_delta_t_k is None else chw_delta_t_k
    chw_c = supply_air_c - float(coil_approach_k(cooling, dt_k, airflow))
    approach_k = cooling.tower_approach_k if tower_approach_k is None else tower_approach_k
    fw_c = cooling.facility_water_supply_c if facility_water_c is None else facility_water_c
    return Setpoints(
        supply_air_c, chw_c, fw_c, econ, airflow, approach_k, dt_k, pump_dp_reset_flag, cw_flow_frac, cdu_flow_frac
    )


@dataclass(frozen=True)
class FixedSetpoint:
    """A fixed supply-air setpoint (the baseline)."""

    cooling: CoolingConfig
    supply_air_c: float = 18.0
    tower_approach_k: float | None = None  # condenser water at wet bulb + this; None: the design approach
    pump_dp_reset_flag: float = 0.0  # a fixed DP setpoint: no resets anywhere in this plant
    name: str = "fixed-18C"

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        c = self
        return _setpoints(
            c.cooling, c.supply_air_c, tower_approach_k=c.tower_approach_k, pump_dp_reset_flag=c.pump_dp_reset_flag
        )


@dataclass(frozen=True)
class TrimRespondConfig:
    """G36 trim-and-respond parameters (K per interval; requests from the hottest rack inlet)."""

    initial_c: float = 18.0
    min_c: float = 18.0
    max_c: float = 27.0
    trim_k: float = 0.1
    respond_k: float = -0.2
    max_respond_k: float = -0.6
    ignored_requests: int = 0
    request_inlet_c: float = 25.5  # one request above this, one more per K above it
    tower_approach_k: float | None = None  # condenser water at wet bulb + this; None: the design approach
    pump_dp_reset_flag: float = 1.0  # G36's pump DP reset with the valves (flow the coils need, power ~ flow^3)


class TrimAndRespond:
    """ASHRAE Guideline 36 style trim-and-respond on the supply-air setpoint (feedback only, no forecast)."""

    def __init__(self, cooling: CoolingConfig, cfg: TrimRespondConfig | None = None) -> None:
        self.cooling, self.cfg = cooling, cfg or TrimRespondConfig()
        self.setpoint_c = self.cfg.initial_c
        self.name = "g36-trim-respond"

    def requests(self, inlet_max_c: float) -> int:
        """Requests the racks send: none below the threshold, then one per started K above it."""
        over_k = inlet_max_c - self.cfg.request_inlet_c
        return 0 if over_k <= 0 else 1 + int(over_k)

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        c = self.cfg
        excess = self.requests(state.inlet_max_c) - c.ignored_requests
        step_k = max(c.respond_k * excess, c.max_respond_k) if excess > 0 else c.trim_k
        self.setpoint_c = float(np.clip(self.setpoint_c + step_k, c.min_c, c.max_c))
        return _setpoints(
            self.cooling, self.setpoint_c, tower_approach_k=c.tower_approach_k, pump_dp_reset_flag=c.pump_dp_reset_flag
        )


@dataclass(frozen=True)
class MpcConfig:
    """Candidate grid, constraint and move limits of the cooling MPC."""

    inlet_limit_c: float = ASHRAE_INLET_MAX_C
    margin_k: float = 0.3  # kept below the limit for model error
    supply_air_c: tuple[float, ...] = tuple(np.round(np.arange(18.0, 27.01, 0.25), 2))
    airflow_ratio_frac: tuple[float, ...] = (0.85, 0.9, 0.95, 1.0)
    # economiser on only: in this plant model free cooling never costs more than the chiller (the tower
    # fans and pumps run either way), so "off" is dominated; add 0.0 for a plant with a changeover cost
    economiser_flag: tuple[float, ...] = (1.0,)
    # condenser water above the wet bulb (K); below what the tower can make it runs its fans at full speed
    # (water-cooled plants only; a dry-cooler plant keeps its fixed rule)
    # (seven values until the pump action came; four, with three delta Ts below, keep the 1-minute year
    # in its time budget. Seven and four delta Ts: 0.2-0.3 % more cooling at 1-minute steps in Dallas and
    # Phoenix, 0.1-0.35 % less at 1-hour steps in Dallas and Seattle, 20 % more CPU)
    tower_approach_k: tuple[float, ...] = (1.5, 3.5, 4.0, 5.0)
    # facility water below the liquid loop's class limit (K; never above it: the class is what the cold
    # plates are rated for). Colder water moves heat from the dry coolers (more fan power, no water) to
    # the evaporative trim (less fan power, more water); liquid plants only
    facility_water_below_class_k: tuple[float, ...] = (0.0, 4.0)
    # chilled-water loop delta T (K), i.e. pump flow: the design 6.7 K and wider (less flow, colder water);
    # never narrower: at full load that would ask the pumps for more than their design flow
    chw_delta_t_k: tuple[float, ...] = (6.7, 8.5, 10.5)
    # condenser-water flow per running pump over design (water-cooled plants): less flow saves pump power
    # (open tower: the static head stays) for a higher condensing temperature and a hungrier economiser,
    # partly offset by colder tower water; never below the chiller's minimum (`cw_min_flow_frac`). Design
    # first, so that a tie keeps it. (Five flows, 0.1 apart: 0.1-0.2 % less cooling at 1-hour steps in
    # Dallas and Phoenix, for ~25 % more CPU)
    cw_flow_frac: tuple[float, ...] = (1.0, 0.8, 0.6)
    # CDU secondary flow over what the liquid heat needs at the loop's design delta T (cold plates only;
    # air plants collapse it to (1.0,)): less flow saves CDU pump power and warms the chips. Design first,
    # so that a tie keeps it
    cdu_flow_frac: tuple[float, ...] = (1.0, 0.8, 0.6, 0.5)
    chip_margin_k: float = 3.0  # kept below the chip's case limit (model error, chips above the mean load)
    max_step_k: float = 1.0  # supply-air and chilled-water change per interval (chilled-water reset rate limit)
    include_server_fans: bool = True  # count the server-fan power a warmer inlet costs

    def __post_init__(self) -> None:
        if not self.chw_delta_t_k or min(self.chw_delta_t_k) <= 0:
            raise ValueError(f"chw_delta_t_k must be positive loop delta Ts (K), got {self.chw_delta_t_k}")
        if not self.cw_flow_frac or not all(0 < f <= 1 for f in self.cw_flow_frac):
            raise ValueError(f"cw_flow_frac must be shares of design flow in (0, 1], got {self.cw_flow_frac}")
        if not self.cdu_flow_frac or not all(0 < f <= 1 for f in self.cdu_flow_frac):
            raise ValueError(f"cdu_flow_frac must be shares of design flow in (0, 1], got {self.cdu_flow_frac}")
        if self.chip_margin_k < 0:
            raise ValueError(f"chip_margin_k must be >= 0, got {self.chip_margin_k}")
        if self.max_step_k <= 0:
            raise ValueError("max_step_k must be > 0")


@dataclass
class _Candidates:
    """The feasible candidate setpoints as (n, 1) columns, for broadcasting against the horizon."""

    supply_air_c: np.ndarray
    airflow_ratio_frac: np.ndarray
    economiser_flag: np.ndarray
    tower_approach_k: np.ndarray
    facility_water_c: np.ndarray
    chw_delta_t_k: np.ndarray
    cw_flow_frac: np.ndarray
    cdu_flow_frac: np.ndarray
    setpoints: Setpoints
    inlet_c: np.ndarray  # rack inlet at each candidate
    fan_factor: np.ndarray  # server-fan power factor at each candidate's inlet
    it_factor: np.ndarray  # IT power per W of board power: 1 + server fans at that inlet


def _columns(
    cool: CoolingConfig,
    sa: np.ndarray,
    ratio: np.ndarray,
    econ: np.ndarray,
    tower: np.ndarray,
    fw: np.ndarray,
    dt: np.ndarray,
    cw: np.ndarray,
    cdu: np.ndarray,
) -> _Candidates:
    """Candidates from (n, 1) columns: chilled water at the coil's limit below the supply air for the
    loop's delta T; pumps on G36's DP reset."""
    sp = Setpoints(sa, sa - coil_approach_k(cool, dt, ratio), fw, econ, ratio, tower, dt, 1.0, cw, cdu)
    inlet_c = rack_inlet_c(cool, sp)
    fan_factor = server_fan_factor(cool, inlet_c)
    it_factor = 1.0 + server_fan_frac(cool) * fan_factor
    return _Candidates(sa, ratio, econ, tower, fw, dt, cw, cdu, sp, inlet_c, fan_factor, it_factor)


def _take(cool: CoolingConfig, cand: _Candidates, rows: np.ndarray) -> _Candidates:
    """The candidates where `rows` (a boolean mask) is true."""
    cols = (
        cand.supply_air_c,
        cand.airflow_ratio_frac,
        cand.economiser_flag,
        cand.tower_approach_k,
        cand.facility_water_c,
        cand.chw_delta_t_k,
        cand.cw_flow_frac,
        cand.cdu_flow_frac,
    )
    return _columns(cool, *(c[rows] for c in cols))


class CoolingMpc:
    """Move-blocking MPC of the cooling setpoints on the twin's cooling model (see the module docstring)."""

    def __init__(self, facility: FacilityConfig, cfg: MpcConfig | None = None) -> None:
        self.facility, self.cfg = facility, cfg or MpcConfig()
        self.name = "mpc"
        self.candidates = self._feasible_candidates()
        # by the supply air and chilled water in force: the moves in reach
        self._reachable: dict[tuple[float, float], _Candidates] = {}
        self._design: tuple[float, float, float] | None = None  # (design board W, heat per board W, design heat W)

    def _feasible_candidates(self) -> _Candidates:
        cool, c = self.facility.cooling, self.cfg
        approaches = c.tower_approach_k if cool.water_cooled else (float("nan"),)
        below_k = c.facility_water_below_class_k if cool.liquid_fraction > 0 else (0.0,)
        fw = tuple(cool.facility_water_supply_c - k for k in below_k)
        # a dry-cooler plant has no condenser-water setpoint; below the chiller's minimum the twin runs the
        # minimum, so such candidates would only repeat it
        cw_flows = (max(f, cool.cw_min_flow_frac) for f in c.cw_flow_frac) if cool.water_cooled else (1.0,)
        cw = tuple(dict.fromkeys(cw_flows))
        cdu = tuple(dict.fromkeys(c.cdu_flow_frac)) if _cold_plates(cool) else (1.0,)
        axes = (c.supply_air_c, c.airflow_ratio_frac, c.economiser_flag, approaches, fw, c.chw_delta_t_k, cw, cdu)
        grid = np.meshgrid(*axes)
        every = _columns(cool, *(a.ravel()[:, None] for a in grid))
        inlet = every.inlet_c[:, 0]  # the condenser water, the pumps and the CDU do not reach the inlet
        ok = inlet <= c.inlet_limit_c - c.margin_k
        if not ok.any():
            raise ValueError("no candidate setpoint keeps the rack inlet below the limit")
        return _take(cool, every, ok)

    def reachable(self, supply_air_c: float, chilled_water_c: float | None = None) -> _Candidates:
        """The feasible candidates within one rate-limited move of `supply_air_c` and `chilled_water_c`
        (default: the coil's limit at the design delta T; cached: the grid is fixed, so the MPC scores only
        the moves it may apply, about a sixth of the grid)."""
        cool, step_k = self.facility.cooling, self.cfg.max_step_k + 1e-6
        chw_c = supply_air_c - cool.coil_approach_k if chilled_water_c is None else chilled_water_c
        key = (round(supply_air_c, 3), round(chw_c, 3))
        if key not in self._reachable:
            cand = self.candidates
            sa_near = np.abs(cand.supply_air_c[:, 0] - supply_air_c) <= step_k
            chw_gap = np.abs(np.asarray(cand.setpoints.chilled_water_c)[:, 0] - chw_c)
            near = sa_near & (chw_gap <= step_k)
            if not near.any() and sa_near.any():  # chilled water off the grid (the hold's): the nearest
                near = sa_near & (chw_gap <= chw_gap[sa_near].min() + step_k)
            if not near.any():  # supply air off the grid too: every candidate, the move clipped when applied
                near[:] = True
            self._reachable[key] = _take(self.facility.cooling, self.candidates, near)
        return self._reachable[key]

    def _design_point(self, design_board_w: float) -> tuple[float, float, float]:
        """Heat in the white space per W of board power (+ fans) at design, and the design heat: the power
        chain linearised at its design point (the MPC's reduced model of it)."""
        if self._design is None or self._design[0] != design_board_w:
            fans = server_fan_frac(self.facility.cooling)
            chain = run_chain(
                self.facility.topology, np.array([design_board_w * (1 + fans)]), design_board_w * (1 + fans)
            )
            heated = sum(v[0] for k, v in chain.stage_loss_w.items() if any(h in k for h in HEATED_STAGES))
            design_heat_w = float(chain.it_power_w[0] + heated)
            self._design = (design_board_w, design_heat_w / (design_board_w * (1 + fans)), float(chain.it_power_w[0]))
        return self._design

    def predicted_cost_w(
        self, forecast: Forecast, design_board_w: float, candidates: _Candidates | None = None
    ) -> np.ndarray:
        """Mean predicted cooling + extra server-fan power (W) of each candidate (default: every feasible
        one) over the horizon: (n,). The same total the twin reports: cooling plus what the server fans
        add to the IT load."""
        return self._predict(forecast, design_board_w, candidates)[0]

    def predicted_chip_case_c(
        self, forecast: Forecast, design_board_w: float, candidates: _Candidates | None = None
    ) -> np.ndarray | None:
        """Hottest predicted accelerator case temperature (C) of each candidate over the horizon: (n,);
        None for a plant without cold plates."""
        return self._predict(forecast, design_board_w, candidates)[1]

    def _predict(
        self, forecast: Forecast, design_board_w: float, candidates: _Candidates | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean cost W, hottest chip case C or None) of each candidate over the horizon, from one run of
        the cooling model."""
        _, heat_per_w, design_it_w = self._design_point(design_board_w)
        cand, cool = candidates or self.candidates, self.facility.cooling
        board = forecast.it_board_w[None, :] * heat_per_w  # (1, H): heat per W of IT power
        heat = board * cand.it_factor  # (n, H)
        t_out_c, t_wet_c = forecast.t_outdoor_c[None, :], forecast.t_wetbulb_c[None, :]
        c = run_cooling(cool, heat, design_it_w, t_out_c, t_wet_c, cand.setpoints, cand.inlet_c)
        cost = c.total_w
        if self.cfg.include_server_fans:  # what the server fans add above a cool inlet, per W as the heat
            cost = cost + board * (cand.it_factor - (1.0 + server_fan_frac(cool)))
        chip = None if c.chip_case_c is None else c.chip_case_c.max(axis=1)  # (n,): the hottest interval
        return cost.mean(axis=1), chip

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        if not np.isfinite(forecast.it_board_w).all():  # nothing observed yet: hold
            return state.setpoints
        prev = state.setpoints
        prev_sa = float(np.asarray(prev.supply_air_c))
        cand = self.reachable(prev_sa, float(np.asarray(prev.chilled_water_c)))
        cost, chip = self._predict(forecast, state.design_board_w, cand)
        if chip is None:
            best = int(np.argmin(cost))
        else:  # the chips' limit is a hard constraint; if nothing meets it, the coolest chip
            ok = chip <= self.facility.cooling.chip_case_max_c - self.cfg.chip_margin_k
            best = int(np.argmin(np.where(ok, cost, np.inf))) if ok.any() else int(np.argmin(chip))
        target = float(cand.supply_air_c[best, 0])
        sa = min(max(target, prev_sa - self.cfg.max_step_k), prev_sa + self.cfg.max_step_k)
        ratio, econ = float(cand.airflow_ratio_frac[best, 0]), float(cand.economiser_flag[best, 0])
        # the condenser and facility water move at once (tower fans, dry coolers)
        tower, fw = float(cand.tower_approach_k[best, 0]), float(cand.facility_water_c[best, 0])
        dt = float(cand.chw_delta_t_k[best, 0])  # the pump speeds follow at once
        cw, cdu = float(cand.cw_flow_frac[best, 0]), float(cand.cdu_flow_frac[best, 0])
        step = _setpoints(self.facility.cooling, sa, ratio, econ, tower, fw, dt, cw_flow_frac=cw, cdu_flow_frac=cdu)
        # a candidate applied as it is was feasible already; only a clipped move needs the check
        if sa != target and rack_inlet_c(self.facility.cooling, step) > self.cfg.inlet_limit_c - self.cfg.margin_k:
            prev_ratio = float(np.asarray(prev.airflow_ratio_frac))  # a clipped move off the grid
            step = _setpoints(
                self.facility.cooling, sa, prev_ratio, econ, tower, fw, dt, cw_flow_frac=cw, cdu_flow_frac=cdu
            )
        return step


def _cold_plates(cool: CoolingConfig) -> bool:
    """Whether the plant cools chips through cold plates (and so has a CDU flow to choose)."""
    return cool.kind == "liquid" and cool.liquid_fraction > 0


@dataclass(frozen=True)
class DiurnalPersistence:
    """Forecaster for the loop: the last interval's value plus yesterday's change over the same hours
    (persistence with a daily shape); plain persistence until a day has been seen."""

    name: str = "diurnal-persistence"

    def forecast(self, history: History, horizon_intervals: int) -> Forecast:
        day = round(86400.0 / history.interval_s)
        series = (history.it_board_w, history.t_outdoor_c, history.t_wetbulb_c)
        return Forecast(*(_diurnal(x, day, horizon_intervals) for x in series))


def _diurnal(x: np.ndarray, day: int, horizon: int) -> np.ndarray:
    """x[-1] + (x one day before the horizon - x one day before now), per horizon interval."""
    if len(x) == 0:
        return np.full(horizon, np.nan)
    if len(x) <= day:
        return np.full(horizon, x[-1])
    n = len(x)
    ahead = x[n - day : n - day + horizon]  # yesterday, the same intervals as the horizon
    if len(ahead) < horizon:
        ahead = np.pad(ahead, (0, horizon - len(ahead)), mode="edge")
    result: np.ndarray = x[-1] + (ahead - x[n - day - 1])
    return result
