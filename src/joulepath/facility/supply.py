"""On-site supply: solar PV (pvlib, from the weather's irradiance), wind (a generic power curve),
a small modular reactor (firm, with a refuelling outage) and a battery (state of charge in bounds).
Each returns hourly or per-step power in W; `dispatch` settles the balance with the grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from joulepath.facility.weather import Weather


@dataclass(frozen=True)
class SolarConfig:
    capacity_w: float = 0.0  # DC nameplate
    tilt_deg: float | None = None  # None: latitude tilt
    inverter_efficiency: float = 0.96  # pvlib PVWatts default nominal
    gamma_pdc_per_k: float = -0.004  # PVWatts temperature coefficient
    losses_frac: float = 0.14  # PVWatts default system losses (soiling, wiring, mismatch...)


def solar_ac_w(cfg: SolarConfig, weather: Weather) -> np.ndarray:
    """Hourly AC output with pvlib: solar position, plane-of-array irradiance (isotropic sky), SAPM
    cell temperature, PVWatts DC and inverter models (NREL PVWatts v5)."""
    if cfg.capacity_w <= 0:
        return np.zeros(len(weather.ghi_w_m2))
    import pandas as pd
    import pvlib

    tz = f"Etc/GMT{-int(weather.utc_offset_h):+d}" if weather.utc_offset_h else "UTC"
    times = pd.date_range("2021-01-01 00:30", periods=len(weather.ghi_w_m2), freq="h", tz=tz)
    pos = pvlib.solarposition.get_solarposition(times, weather.latitude_deg, weather.longitude_deg)
    tilt = abs(weather.latitude_deg) if cfg.tilt_deg is None else cfg.tilt_deg
    azimuth = 180.0 if weather.latitude_deg >= 0 else 0.0
    poa = pvlib.irradiance.get_total_irradiance(
        tilt, azimuth, pos["apparent_zenith"], pos["azimuth"], weather.dni_w_m2, weather.ghi_w_m2, weather.dhi_w_m2
    )["poa_global"].fillna(0.0)
    params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
    cell_c = pvlib.temperature.sapm_cell(poa, weather.t_drybulb_c, weather.wind_m_s, **params)
    dc = pvlib.pvsystem.pvwatts_dc(poa, cell_c, cfg.capacity_w, cfg.gamma_pdc_per_k) * (1 - cfg.losses_frac)
    ac = pvlib.inverter.pvwatts(dc, cfg.capacity_w * cfg.inverter_efficiency, cfg.inverter_efficiency)
    result: np.ndarray = np.clip(np.asarray(ac, dtype=float), 0.0, None)
    return result


@dataclass(frozen=True)
class WindConfig:
    capacity_w: float = 0.0
    cut_in_m_s: float = 3.0
    rated_m_s: float = 12.0
    cut_out_m_s: float = 25.0
    hub_height_m: float = 100.0
    shear_exponent: float = 0.14  # 1/7 power law, open terrain
    availability: float = 0.97


def wind_w(cfg: WindConfig, weather: Weather) -> np.ndarray:
    """Hourly output of a generic pitch-regulated turbine fleet from 10 m wind speed (assumed curve)."""
    if cfg.capacity_w <= 0:
        return np.zeros(len(weather.wind_m_s))
    v = weather.wind_m_s * (cfg.hub_height_m / 10.0) ** cfg.shear_exponent
    frac = np.clip((v**3 - cfg.cut_in_m_s**3) / (cfg.rated_m_s**3 - cfg.cut_in_m_s**3), 0.0, 1.0)
    frac = np.where((v < cfg.cut_in_m_s) | (v > cfg.cut_out_m_s), 0.0, frac)
    result: np.ndarray = cfg.capacity_w * cfg.availability * frac
    return result


@dataclass(frozen=True)
class SmrConfig:
    """A small modular reactor as firm supply."""

    capacity_w: float = 0.0
    capacity_factor: float = 0.95  # outside refuelling; US fleet ~0.93 (EIA) including outages
    refuel_start_hour: float = 24 * 200.0
    refuel_duration_h: float = 24 * 20.0  # NuScale-class 24-month cycle: a ~20-day outage in the year it falls


def smr_w(cfg: SmrConfig, hours: np.ndarray) -> np.ndarray:
    if cfg.capacity_w <= 0:
        return np.zeros_like(hours)
    outage = (hours >= cfg.refuel_start_hour) & (hours < cfg.refuel_start_hour + cfg.refuel_duration_h)
    result: np.ndarray = np.where(outage, 0.0, cfg.capacity_w * cfg.capacity_factor)
    return result


@dataclass(frozen=True)
class StorageConfig:
    """A battery: energy, power, efficiencies (Li-ion ~88 % round trip; NREL ATB), SoC bounds."""

    energy_wh: float = 0.0
    power_w: float = 0.0
    charge_efficiency: float = 0.938
    discharge_efficiency: float = 0.938
    soc_min_frac: float = 0.1
    soc_max_frac: float = 0.9
    peak_shave_w: float | None = None  # discharge to keep grid import at or below this
    charge_below_usd_per_kwh: float = 0.08  # charge from the grid when cheaper than this
    discharge_above_usd_per_kwh: float = 0.12  # arbitrage: discharge when dearer than this (on-peak)


@dataclass(frozen=True)
class Dispatch:
    """The supply balance per step (W): grid_import + onsite_used + discharge - charge = demand."""

    grid_import_w: np.ndarray
    onsite_used_w: np.ndarray
    curtailed_w: np.ndarray
    charge_w: np.ndarray
    discharge_w: np.ndarray
    soc_wh: np.ndarray


def battery_step(
    level_wh: float, want_w: float, net_w: float, storage: StorageConfig, dt_h: float
) -> tuple[float, float, float]:
    """One step of the battery: `want_w` > 0 discharges, < 0 charges, each clipped to the rated power,
    the state-of-charge bounds and (discharge) the net demand `net_w` (no export). Returns charge W,
    discharge W and the new level (Wh)."""
    lo, hi = storage.soc_min_frac * storage.energy_wh, storage.soc_max_frac * storage.energy_wh
    if want_w > 0:
        out = max(min(want_w, storage.power_w, (level_wh - lo) * storage.discharge_efficiency / dt_h, net_w), 0.0)
        return 0.0, out, level_wh - out * dt_h / storage.discharge_efficiency
    inflow = max(min(-want_w, storage.power_w, (hi - level_wh) / (storage.charge_efficiency * dt_h)), 0.0)
    return inflow, 0.0, level_wh + inflow * dt_h * storage.charge_efficiency


def dispatch(
    demand_w: np.ndarray,
    onsite_w: np.ndarray,
    price: np.ndarray,
    dr_active: np.ndarray,
    dr_max_import_w: float,
    storage: StorageConfig,
    dt_s: float,
    command_w: np.ndarray | None = None,
) -> Dispatch:
    """Greedy rule-based dispatch: on-site power first; surplus charges the battery (else curtailed);
    the battery discharges during demand-response events, above the peak-shave target, and in on-peak
    hours; it charges from the grid in off-peak hours. State of charge stays within bounds.

    `command_w` (one value per step; a controller's dispatch, `facility.feedback`): where finite, it
    replaces the rule for that step: > 0 asks the battery to discharge that much, < 0 to charge that
    much (from on-site surplus first, then the grid), 0 to hold; each is clipped to the battery's
    power, its state-of-charge bounds and (discharge) the site's net demand. NaN: the rule. A command
    overrides the rule's demand-response import limit too (the controller owns the battery then)."""
    onsite_used = np.minimum(onsite_w, demand_w)
    surplus = onsite_w - onsite_used
    net = demand_w - onsite_used
    n = len(demand_w)
    charge, discharge, soc = np.zeros(n), np.zeros(n), np.zeros(n)
    if storage.energy_wh <= 0 or storage.power_w <= 0:
        return Dispatch(net, onsite_used, surplus, charge, discharge, soc)
    dt_h = dt_s / 3600.0
    lo, hi = storage.soc_min_frac * storage.energy_wh, storage.soc_max_frac * storage.energy_wh
    level = (lo + hi) / 2
    shave = storage.peak_shave_w if storage.peak_shave_w is not None else np.inf
    cheap = price < storage.charge_below_usd_per_kwh
    expensive = price > storage.discharge_above_usd_per_kwh
    command = np.full(n, np.nan) if command_w is None else np.asarray(command_w, dtype=float)
    if len(command) != n:
        raise ValueError(f"command_w has {len(command)} values; the demand has {n} steps")
    for i in range(n):  # sequential by nature: each step's state of charge depends on the last
        want = command[i]
        if not np.isfinite(want):  # the rule
            if dr_active[i] > 0:
                want = max(net[i] - dr_max_import_w, 0.0)
            elif net[i] > shave:
                want = net[i] - shave
            elif expensive[i]:
                want = net[i]
            else:
                want = 0.0
            if want <= 0:  # charge from on-site surplus, and from the grid when it is cheap
                want = -(surplus[i] + (storage.power_w if cheap[i] else 0.0))
        charge[i], discharge[i], level = battery_step(level, want, net[i], storage, dt_h)
        soc[i] = level
    from_surplus = np.minimum(charge, surplus)
    curtailed = surplus - from_surplus
    grid = net - discharge + (charge - from_surplus)
    return Dispatch(grid, onsite_used + from_surplus, curtailed, charge, discharge, soc)
