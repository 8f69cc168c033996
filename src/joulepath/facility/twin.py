"""The facility twin: board power of the IT fleet in, power at the meter out, step by step.

Flow per run (all vectorised over the horizon):
  IT boards (+ server fans, by cooling design) -> power chain (PSU inside IT; UPS, PDU, transformer
  outside) -> heat in the white space -> cooling (weather-dependent) -> + auxiliaries = facility power
  -> on-site supply and battery -> grid import -> carbon (hourly intensity) and cost (tariff).
Conservation: facility = IT + chain losses + cooling + auxiliaries at every step (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from joulepath.facility.cooling import (
    ASHRAE_INLET_MAX_C,
    ASHRAE_INLET_MIN_C,
    CoolingConfig,
    Setpoints,
    rack_inlet_c,
    rack_warning,
    run_cooling,
    server_fan_factor,
    server_fan_frac,
)
from joulepath.facility.core import Clock, Component, hourly_to_clock, simulate
from joulepath.facility.grid import DemandResponse, GridSignal, Tariff, get_grid_profile, read_eia_csv, synthetic_grid
from joulepath.facility.power_chain import run_chain
from joulepath.facility.supply import (
    SmrConfig,
    SolarConfig,
    StorageConfig,
    WindConfig,
    dispatch,
    smr_w,
    solar_ac_w,
    wind_w,
)
from joulepath.facility.weather import Weather, get_climate, read_epw, synthetic_weather

HEATED_STAGES = ("ups", "pdu", "busway")  # losses released inside the cooled building
#: Controlled setpoints as input series (one value per step), in `Setpoints` field order.
SETPOINT_SERIES = (
    "sp_supply_air_c",
    "sp_chilled_water_c",
    "sp_facility_water_c",
    "sp_economiser_flag",
    "sp_airflow_ratio_frac",
    "sp_tower_approach_k",
    "sp_chw_delta_t_k",
    "sp_pump_dp_reset_flag",
    "sp_cw_flow_frac",
    "sp_cdu_flow_frac",
)

#: A controller's battery dispatch as an input series (W per step: + discharge, - charge, NaN the rule).
STORAGE_COMMAND_SERIES = "storage_command_w"


def setpoints_of(s: Mapping[str, np.ndarray]) -> Setpoints | None:
    """The per-step setpoints among the series, or None for the design's fixed ones."""
    if SETPOINT_SERIES[0] not in s:
        return None
    return Setpoints(*(s[name] for name in SETPOINT_SERIES))


@dataclass(frozen=True)
class FacilityConfig:
    """One facility design and site. Weather/grid: a file, or a synthetic profile by name."""

    name: str = "modern-air"
    cooling: CoolingConfig = field(default_factory=CoolingConfig)
    topology: str = "ac-415v"
    aux_frac: float = 0.01  # lighting, offices, security: of design IT power, constant
    climate: str = "temperate"
    weather_file: Path | None = None
    grid_region: str = "pjm"
    grid_file: Path | None = None
    tariff: Tariff = field(default_factory=Tariff)
    solar: SolarConfig = field(default_factory=SolarConfig)
    wind: WindConfig = field(default_factory=WindConfig)
    smr: SmrConfig = field(default_factory=SmrConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    demand_response: DemandResponse = field(default_factory=DemandResponse)
    rack_kw: float = 40.0
    seed: int = 0

    def replace(self, **changes: object) -> FacilityConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TwinMetrics:
    """Totals over the horizon. Energies in J, water in L, carbon in g, cost in USD."""

    it_energy_j: float
    facility_energy_j: float  # at the meter (before on-site supply)
    energy_by_subsystem_j: dict[str, float]
    pue: float
    wue_l_per_kwh: float
    tue: float
    water_l: float
    grid_energy_j: float
    onsite_energy_j: float
    carbon_g: float
    cost_usd: float
    peak_grid_w: float
    peak_facility_w: float
    inlet_violation_steps: int
    free_cooling_frac: float
    provenance: str


@dataclass
class TwinResult:
    config: FacilityConfig
    clock: Clock
    series: dict[str, np.ndarray]
    metrics: TwinMetrics
    warnings: list[str] = field(default_factory=list)
    weather_source: str = ""
    grid_source: str = ""


def load_weather(cfg: FacilityConfig) -> Weather:
    return read_epw(cfg.weather_file) if cfg.weather_file else synthetic_weather(get_climate(cfg.climate), cfg.seed)


def load_grid(cfg: FacilityConfig, weather: Weather) -> GridSignal:
    if cfg.grid_file:
        return read_eia_csv(cfg.grid_file, weather.utc_offset_h, cfg.tariff)
    return synthetic_grid(get_grid_profile(cfg.grid_region), cfg.seed, cfg.tariff)


@dataclass(frozen=True)
class WeatherInputs:
    """Outdoor conditions on the clock."""

    weather: Weather
    name: str = "weather"

    def run(self, s: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]:
        return {
            "t_outdoor_c": hourly_to_clock(self.weather.t_drybulb_c, clock),
            "t_wetbulb_c": hourly_to_clock(self.weather.t_wetbulb_c, clock),
        }


@dataclass(frozen=True)
class ItAndPowerChain:
    """Server fans (set by the cooling design) and the power chain from boards to the grid side."""

    cfg: FacilityConfig
    design_board_w: float
    name: str = "it-and-power-chain"

    def run(self, s: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]:
        fans: np.ndarray | float = server_fan_frac(self.cfg.cooling)
        board = s["it_board_w"]
        sp = setpoints_of(s)
        if sp is not None:  # controlled: server fans speed up on a warm inlet (the setpoints' inlet; an
            # overloaded plant's extra warming is left out here, which keeps this step free of a loop)
            fans = fans * server_fan_factor(self.cfg.cooling, rack_inlet_c(self.cfg.cooling, sp))
        chain = run_chain(
            self.cfg.topology, board * (1 + fans), self.design_board_w * (1 + server_fan_frac(self.cfg.cooling))
        )
        heated = sum(
            (v for k, v in chain.stage_loss_w.items() if any(h in k for h in HEATED_STAGES)), np.zeros(clock.n_steps)
        )
        return {
            "server_fan_w": board * fans,
            "it_power_w": chain.it_power_w,
            "chain_loss_w": chain.facility_loss_w,
            "it_conversion_loss_w": chain.it_conversion_loss_w,
            "heat_load_w": chain.it_power_w + heated,
        }


@dataclass(frozen=True)
class Cooling:
    """The cooling plant, sized for the design heat, against the weather (and, with cold plates, the
    accelerators' case temperature, `chip_case_c`)."""

    cfg: FacilityConfig
    design_board_w: float
    name: str = "cooling"

    def run(self, s: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]:
        fans = server_fan_frac(self.cfg.cooling)
        design_it = run_chain(
            self.cfg.topology, np.array([self.design_board_w * (1 + fans)]), self.design_board_w * (1 + fans)
        ).it_power_w[0]
        heat, t_out, t_wet = s["heat_load_w"], s["t_outdoor_c"], s["t_wetbulb_c"]
        c = run_cooling(self.cfg.cooling, heat, float(design_it), t_out, t_wet, setpoints_of(s))
        chip = {} if c.chip_case_c is None else {"chip_case_c": c.chip_case_c}  # cold plates only
        cdu = {} if c.cdu_pump_w is None else {"cdu_pump_w": c.cdu_pump_w}  # part of cooling_pump_w
        return (
            {
                "crah_fan_w": c.crah_fan_w,
                "chiller_w": c.chiller_w,
                "cooling_pump_w": c.pump_w,
                "heat_rejection_fan_w": c.heat_rejection_fan_w,
                "cooling_power_w": c.total_w,
                "inlet_c": c.inlet_c,
                "free_cooling_frac": c.free_cooling_frac,
                "water_l": c.water_l_per_s * clock.dt_s,
            }
            | chip
            | cdu
        )


@dataclass(frozen=True)
class FacilityTotal:
    """Auxiliaries, and the sum that the meter sees."""

    cfg: FacilityConfig
    design_board_w: float
    name: str = "facility-total"

    def run(self, s: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]:
        aux = np.full(clock.n_steps, self.cfg.aux_frac * self.design_board_w * (1 + server_fan_frac(self.cfg.cooling)))
        return {
            "aux_power_w": aux,
            "facility_power_w": s["it_power_w"] + s["chain_loss_w"] + s["cooling_power_w"] + aux,
        }


def onsite_w(cfg: FacilityConfig, weather: Weather, clock: Clock) -> np.ndarray:
    """On-site generation per step (W): solar AC + wind + SMR."""
    solar = hourly_to_clock(solar_ac_w(cfg.solar, weather), clock)
    result: np.ndarray = solar + hourly_to_clock(wind_w(cfg.wind, weather), clock) + smr_w(cfg.smr, clock.hour_of_year)
    return result


@dataclass(frozen=True)
class SupplyAndGrid:
    """On-site generation, the battery, grid import, and its carbon and cost."""

    cfg: FacilityConfig
    weather: Weather
    grid: GridSignal
    name: str = "supply-and-grid"

    def run(self, s: Mapping[str, np.ndarray], clock: Clock) -> dict[str, np.ndarray]:
        cfg = self.cfg
        onsite = onsite_w(cfg, self.weather, clock)
        price = hourly_to_clock(self.grid.price_usd_per_kwh, clock)
        dr = (hourly_to_clock(cfg.demand_response.active_hourly(), clock) > 0.5).astype(float)
        d = dispatch(
            s["facility_power_w"],
            onsite,
            price,
            dr,
            cfg.demand_response.max_import_w,
            cfg.storage,
            clock.dt_s,
            s.get(STORAGE_COMMAND_SERIES),  # a controller's dispatch where one acts (facility.feedback)
        )
        intensity = hourly_to_clock(self.grid.carbon_g_per_kwh, clock)
        grid_kwh = d.grid_import_w * clock.dt_s / 3.6e6
        return {
            "grid_import_w": d.grid_import_w,
            "onsite_used_w": d.onsite_used_w,
            "curtailed_w": d.curtailed_w,
            "storage_charge_w": d.charge_w,
            "storage_discharge_w": d.discharge_w,
            "storage_soc_wh": d.soc_wh,
            "carbon_intensity_g_per_kwh": intensity,
            "carbon_g": grid_kwh * intensity,
            "price_usd_per_kwh": price,
            "cost_usd": grid_kwh * price,
        }


#: How a load series shorter than the facility horizon fills it: `repeat` plays it back to back at its
#: own time scale; `daily` stretches it to one day (its shape becomes a daily load curve) and repeats that.
LOAD_SHAPES = ("repeat", "daily")


def load_on_clock(power_w: np.ndarray, step_s: float, clock: Clock, shape: str = "repeat") -> np.ndarray:
    """A power series (W, one value per `step_s`) tiled onto the twin's clock, one mean power per clock
    step. Energy is conserved: each clock step gets the exact energy of the (repeated) series over its
    interval, so over whole periods the mean power equals the series' mean.

    >>> load_on_clock(np.array([1.0, 3.0]), 1800.0, Clock(3600.0, 2)).tolist()
    [2.0, 2.0]
    >>> load_on_clock(np.array([1.0, 3.0]), 60.0, Clock(3600.0 * 12, 2), "daily").tolist()
    [1.0, 3.0]
    """
    if shape not in LOAD_SHAPES:
        raise ValueError(f"unknown load shape {shape!r}; allowed: {', '.join(LOAD_SHAPES)}")
    power_w = np.asarray(power_w, dtype=float)
    if len(power_w) == 0 or step_s <= 0:
        raise ValueError("the load series needs at least one value and a step > 0 s")
    period_s = step_s * len(power_w)
    scale = 86400.0 / period_s if shape == "daily" else 1.0  # stretch: every instant lasts `scale` times longer
    cum_j = np.concatenate([[0.0], np.cumsum(power_w) * step_s * scale])  # energy from the period's start
    knots_s = np.arange(len(power_w) + 1) * step_s * scale

    def energy_to(t_s: np.ndarray) -> np.ndarray:
        periods, into = np.divmod(t_s, knots_s[-1])
        return periods * cum_j[-1] + np.interp(into, knots_s, cum_j)

    edges_s = np.arange(clock.n_steps + 1) * clock.dt_s
    return np.diff(energy_to(edges_s)) / clock.dt_s


def run_twin(
    cfg: FacilityConfig,
    it_board_w: np.ndarray,
    clock: Clock,
    design_board_w: float | None = None,
    weather: Weather | None = None,
    grid: GridSignal | None = None,
    setpoints: Setpoints | None = None,
    storage_command_w: np.ndarray | None = None,
) -> TwinResult:
    """Simulate the facility for `it_board_w` (DC power of the servers' boards, W, one value per step).
    `design_board_w` sizes the plant (default: the peak of `it_board_w`). `setpoints` (scalars or one
    value per step, e.g. from `facility.feedback.run_controlled`) replace the design's fixed cooling rules;
    `storage_command_w` (one value per step, `supply.dispatch`'s `command_w`) the battery's rule."""
    if len(it_board_w) != clock.n_steps:
        raise ValueError(f"it_board_w has {len(it_board_w)} values; the clock has {clock.n_steps} steps")
    weather = weather or load_weather(cfg)
    grid = grid or load_grid(cfg, weather)
    design = float(design_board_w or np.max(it_board_w))
    components: list[Component] = [
        WeatherInputs(weather),
        ItAndPowerChain(cfg, design),
        Cooling(cfg, design),
        FacilityTotal(cfg, design),
        SupplyAndGrid(cfg, weather, grid),
    ]
    inputs = {"it_board_w": it_board_w}
    if setpoints is not None:
        inputs |= {
            name: np.asarray(getattr(setpoints, f.name))
            for name, f in zip(SETPOINT_SERIES, dataclasses.fields(setpoints), strict=True)
        }
    if storage_command_w is not None:
        if len(storage_command_w) != clock.n_steps:
            raise ValueError(f"storage_command_w has {len(storage_command_w)} values; the clock has {clock.n_steps}")
        inputs[STORAGE_COMMAND_SERIES] = np.asarray(storage_command_w, dtype=float)
    s = simulate(clock, components, inputs)
    warnings = [w for w in [rack_warning(cfg.cooling, cfg.rack_kw)] if w]
    return TwinResult(cfg, clock, dict(s), _metrics(cfg, clock, s), warnings, weather.source, grid.source)


def _metrics(cfg: FacilityConfig, clock: Clock, s: Mapping[str, np.ndarray]) -> TwinMetrics:
    dt = clock.dt_s
    it_j = float(s["it_power_w"].sum() * dt)
    fac_j = float(s["facility_power_w"].sum() * dt)
    by = {
        k.removesuffix("_w"): float(s[k].sum() * dt)
        for k in ("chain_loss_w", "crah_fan_w", "chiller_w", "cooling_pump_w", "heat_rejection_fan_w", "aux_power_w")
    }
    compute_j = float(s["it_board_w"].sum() * dt)  # boards without fans and PSU losses: TUE's denominator
    water = float(s["water_l"].sum())
    months = clock.horizon_s / (30.44 * 86400)
    peak_grid = float(s["grid_import_w"].max())
    cost = float(s["cost_usd"].sum()) + cfg.tariff.demand_charge_usd_per_kw_month * peak_grid / 1e3 * max(months, 1.0)
    inlet = s["inlet_c"]
    return TwinMetrics(
        it_energy_j=it_j,
        facility_energy_j=fac_j,
        energy_by_subsystem_j=by,
        pue=fac_j / it_j,
        wue_l_per_kwh=water / (it_j / 3.6e6),
        tue=fac_j / compute_j,
        water_l=water,
        grid_energy_j=float(s["grid_import_w"].sum() * dt),
        onsite_energy_j=float(s["onsite_used_w"].sum() * dt),
        carbon_g=float(s["carbon_g"].sum()),
        cost_usd=cost,
        peak_grid_w=peak_grid,
        peak_facility_w=float(s["facility_power_w"].max()),
        inlet_violation_steps=int(((inlet < ASHRAE_INLET_MIN_C) | (inlet > ASHRAE_INLET_MAX_C)).sum()),
        free_cooling_frac=float(np.average(s["free_cooling_frac"], weights=np.maximum(s["it_power_w"], 1e-9))),
        provenance=f"estimated: facility twin ({cfg.name}: {cfg.cooling.kind} cooling, {cfg.topology})",
    )
