"""The facility side of a plan: rack layout against the cooling design, the design power against the
feed, and a year of the facility twin for a fleet's daily board-power curve.

The twin costs ~4 ms per simulated year at hourly steps once weather and grid are built (measured on
this project's 2-core machine), so every feasible candidate gets its own twin year; weather and grid
are built once per site and reused.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from joulepath.facility import Clock, FacilityConfig, TwinResult, get_preset, load_on_clock, run_twin
from joulepath.facility.grid import GridSignal, Tariff
from joulepath.facility.twin import load_grid, load_weather
from joulepath.facility.weather import Weather
from joulepath.plan.inputs import Prices, RackClass, Site

#: Accelerators per rack for a 72-device scale-up domain (one NVL72-class rack).
NVL_RACK_DEVICES = 72
#: Accelerators per server for 8-device scale-up domains (HGX / OAM boards).
SERVER_DEVICES = 8


@dataclass(frozen=True)
class RackLayout:
    """How a fleet's devices land in racks of the site's cooling class."""

    rack_form: str  # "nvl72" | "8-gpu servers"
    rack_class: str  # "air" | "liquid"
    devices_per_rack: int
    racks: int
    rack_kw: float  # IT power of one full rack at the power ceiling


def rack_layout(
    n_devices: int, scale_up_domain: int, device_w: float, host_w: float, cooling_kind: str, site: Site, prices: Prices
) -> RackLayout | str:
    """The layout, or the reason none fits (rack density vs cooling or vs the site's rack feed)."""
    rack_class = "air" if cooling_kind == "air" else "liquid"
    rc: RackClass = prices.racks[rack_class]
    limit_kw = min(rc.max_kw, site.rack_kw_max)
    per_device_kw = (device_w + host_w) / 1e3
    if scale_up_domain >= NVL_RACK_DEVICES:
        kw = NVL_RACK_DEVICES * per_device_kw
        if kw > limit_kw:
            return f"rack density: an NVL72 rack draws {kw:.0f} kW; {rack_class} racks here carry {limit_kw:.0f} kW"
        return RackLayout("nvl72", rack_class, NVL_RACK_DEVICES, math.ceil(n_devices / NVL_RACK_DEVICES), kw)
    server_kw = SERVER_DEVICES * per_device_kw
    servers = int(limit_kw // server_kw)
    if servers < 1:
        return f"rack density: one 8-device server draws {server_kw:.1f} kW; {rack_class} racks carry {limit_kw:.0f} kW"
    per_rack = servers * SERVER_DEVICES
    return RackLayout("8-gpu servers", rack_class, per_rack, math.ceil(n_devices / per_rack), servers * server_kw)


@functools.cache
def _weather_and_grid(climate: str, grid_region: str, tariff: Tariff) -> tuple[Weather, GridSignal]:
    cfg = FacilityConfig(climate=climate, grid_region=grid_region, tariff=tariff)
    weather = load_weather(cfg)
    return weather, load_grid(cfg, weather)


def facility_config(preset: str, site: Site, tariff: Tariff, rack_kw: float) -> FacilityConfig:
    """The cooling preset placed on the site (climate, grid, tariff, rack density)."""
    return get_preset(preset).replace(
        climate=site.climate, grid_region=site.grid_region, tariff=tariff, rack_kw=rack_kw
    )


@functools.cache
def design_ratio(preset: str, climate: str, grid_region: str) -> float:
    """Peak facility power over board power for a plant running flat out at design load all year: what
    the feed must carry per board watt (estimated: facility twin)."""
    site = Site(climate=climate, grid_region=grid_region)
    cfg = facility_config(preset, site, Tariff(), 40.0)
    weather, grid = _weather_and_grid(climate, grid_region, Tariff())
    clock = Clock.year(3600.0)
    twin = run_twin(cfg, np.full(clock.n_steps, 1e6), clock, 1e6, weather, grid)
    return twin.metrics.peak_facility_w / 1e6


def twin_year(
    cfg: FacilityConfig, board_w_per_bin: np.ndarray, bin_s: float, design_board_w: float, step_s: float, days: float
) -> TwinResult:
    """The twin over `days` at `step_s` for a daily board-power curve (energy conserved onto the clock)."""
    clock = Clock(step_s, max(1, round(days * 86400 / step_s)))
    board = load_on_clock(board_w_per_bin, bin_s, clock, "daily")
    weather, grid = _weather_and_grid(cfg.climate, cfg.grid_region, cfg.tariff)
    return run_twin(cfg, board, clock, design_board_w, weather, grid)
