"""The grid: hourly carbon intensity (EIA Hourly Electric Grid Monitor layout, or a synthetic profile
fitted to it), an electricity tariff, and demand-response events.

Carbon is always energy drawn from the grid x that hour's intensity, never a constant.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from joulepath.facility.seasonal import HOURS, ar1_noise, fit_harmonics, harmonics


class GridError(ValueError):
    """A grid file that cannot be read."""


@dataclass(frozen=True)
class GridProfile:
    """Synthetic carbon-intensity model: harmonics (as the weather's) plus AR(1) noise, g CO2/kWh."""

    name: str
    mean_g_per_kwh: float
    seasonal_cos: float
    seasonal_sin: float
    daily_cos: float  # hour of day in UTC, as the EIA data
    daily_sin: float
    noise_g_per_kwh: float
    ar1: float


#: Fitted by `fit_grid_profile` to the EIA 2022 hourly files in ../shared/data/carbon (tests re-check).
GRID_PROFILES: dict[str, GridProfile] = {
    "azps": GridProfile(
        name="azps",
        mean_g_per_kwh=575.04,
        seasonal_cos=7.98,
        seasonal_sin=-42.33,
        daily_cos=-46.9,
        daily_sin=32.45,
        noise_g_per_kwh=16.81,
        ar1=0.944,
    ),  # AZPS_2022_hourly.csv: mean 575 g/kWh; 0 empty hours interpolated
    "bpat": GridProfile(
        name="bpat",
        mean_g_per_kwh=54.71,
        seasonal_cos=10.03,
        seasonal_sin=-17.99,
        daily_cos=-2.54,
        daily_sin=-0.02,
        noise_g_per_kwh=2.37,
        ar1=0.987,
    ),  # BPAT_2022_hourly.csv: mean 55 g/kWh; 0 empty hours interpolated
    "erco": GridProfile(
        name="erco",
        mean_g_per_kwh=347.2,
        seasonal_cos=-10.85,
        seasonal_sin=-41.75,
        daily_cos=17.14,
        daily_sin=0.0,
        noise_g_per_kwh=15.81,
        ar1=0.973,
    ),  # ERCO_2022_hourly.csv: mean 347 g/kWh; 0 empty hours interpolated
    "miso": GridProfile(
        name="miso",
        mean_g_per_kwh=440.57,
        seasonal_cos=-21.86,
        seasonal_sin=-5.21,
        daily_cos=11.02,
        daily_sin=-10.56,
        noise_g_per_kwh=7.63,
        ar1=0.987,
    ),  # MISO_2022_hourly.csv: mean 441 g/kWh; 3 empty hours interpolated
    "pjm": GridProfile(
        name="pjm",
        mean_g_per_kwh=362.6,
        seasonal_cos=-3.17,
        seasonal_sin=1.33,
        daily_cos=5.61,
        daily_sin=-5.13,
        noise_g_per_kwh=9.44,
        ar1=0.959,
    ),  # PJM_2022_hourly.csv: mean 363 g/kWh; 23 empty hours interpolated
}


@dataclass(frozen=True)
class Tariff:
    """Time-of-use energy price and a monthly demand charge. The defaults are an assumption: an
    illustrative US commercial TOU tariff, not any utility's."""

    off_peak_usd_per_kwh: float = 0.07
    mid_peak_usd_per_kwh: float = 0.10  # 07:00-16:00 and 21:00-23:00
    on_peak_usd_per_kwh: float = 0.15  # 16:00-21:00
    demand_charge_usd_per_kw_month: float = 15.0
    source: str = "assumed: illustrative US commercial time-of-use tariff"

    def hourly_usd_per_kwh(self) -> np.ndarray:
        hod = np.arange(HOURS) % 24
        price = np.full(HOURS, self.off_peak_usd_per_kwh)
        price[((hod >= 7) & (hod < 16)) | ((hod >= 21) & (hod < 23))] = self.mid_peak_usd_per_kwh
        price[(hod >= 16) & (hod < 21)] = self.on_peak_usd_per_kwh
        return price


@dataclass(frozen=True)
class DemandResponse:
    """Events during which grid import must stay under `max_import_w` (utility request)."""

    events: tuple[tuple[float, float], ...] = ()  # (start hour of year, duration h)
    max_import_w: float = 0.0

    def active_hourly(self) -> np.ndarray:
        flag = np.zeros(HOURS)
        for start, duration in self.events:
            lo, hi = int(start), int(np.ceil(start + duration))
            flag[lo:hi] = 1.0
        return flag


@dataclass(frozen=True)
class GridSignal:
    """One year of hourly grid signals (local time)."""

    region: str
    carbon_g_per_kwh: np.ndarray
    price_usd_per_kwh: np.ndarray
    source: str
    mix_mw: dict[str, np.ndarray] = field(default_factory=dict)


EIA_FUELS = ("WND", "SUN", "WAT", "OIL", "NG", "COL", "NUC", "OTH")


def read_eia_csv(path: str | Path, utc_offset_h: float = 0.0, tariff: Tariff | None = None) -> GridSignal:
    """Read `timestamp,WND,SUN,WAT,OIL,NG,COL,NUC,OTH,avg_CI` (UTC, 8,760 rows); shift to local time."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise GridError(f"grid file {path} {problem}; give an EIA hourly CSV (timestamp,...,avg_CI)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("avg_CI", *EIA_FUELS) if c not in (reader.fieldnames or [])]
        if missing:
            raise GridError(f"{path}: missing column(s) {missing}")
        rows = list(reader)
    if len(rows) < HOURS:
        raise GridError(f"{path}: {len(rows)} rows; a year needs {HOURS}")
    try:
        ci = np.array([float(r["avg_CI"]) if r["avg_CI"].strip() else np.nan for r in rows[:HOURS]])
        mix = {f: np.array([float(r[f] or 0) for r in rows[:HOURS]]) for f in EIA_FUELS}
    except (ValueError, AttributeError, TypeError) as exc:  # a short row leaves None where a number should be
        raise GridError(f"{path}: bad number or missing column in a row ({exc})") from None
    gaps = np.isnan(ci)
    if gaps.mean() > 0.05:
        raise GridError(f"{path}: {gaps.sum()} of {HOURS} hours lack avg_CI; too many to interpolate")
    if gaps.any():  # EIA files have a few empty hours: interpolate linearly, and say so in the source
        idx = np.arange(HOURS)
        ci[gaps] = np.interp(idx[gaps], idx[~gaps], ci[~gaps])
    shift = round(utc_offset_h)
    return GridSignal(
        region=path.stem.split("_")[0],
        carbon_g_per_kwh=np.roll(ci, shift),
        price_usd_per_kwh=(tariff or Tariff()).hourly_usd_per_kwh(),
        source=f"measured: {path.name} (EIA Hourly Electric Grid Monitor; {int(gaps.sum())} empty hours interpolated)",
        mix_mw={f: np.roll(v, shift) for f, v in mix.items()},
    )


def fit_grid_profile(signal: GridSignal, name: str) -> GridProfile:
    """Least-squares fit of the synthetic profile to a measured year."""
    f = fit_harmonics(signal.carbon_g_per_kwh)
    c = [round(float(v), 2) for v in f.coef]
    return GridProfile(
        name=name,
        mean_g_per_kwh=c[0],
        seasonal_cos=c[1],
        seasonal_sin=c[2],
        daily_cos=c[3],
        daily_sin=c[4],
        noise_g_per_kwh=round(f.innovation_sd, 2),
        ar1=round(f.ar1, 3),
    )


def synthetic_grid(profile: GridProfile, seed: int = 0, tariff: Tariff | None = None) -> GridSignal:
    """A seeded synthetic year of carbon intensity for `profile` (floored at 0)."""
    noise = ar1_noise(np.random.default_rng(seed), HOURS, profile.noise_g_per_kwh, profile.ar1)
    coef = np.array(
        [profile.mean_g_per_kwh, profile.seasonal_cos, profile.seasonal_sin, profile.daily_cos, profile.daily_sin]
    )
    return GridSignal(
        region=profile.name,
        carbon_g_per_kwh=np.clip(harmonics() @ coef + noise, 0.0, None),
        price_usd_per_kwh=(tariff or Tariff()).hourly_usd_per_kwh(),
        source=f"synthetic: grid profile {profile.name!r} (fitted to EIA 2022), seed {seed}",
    )


def get_grid_profile(name: str) -> GridProfile:
    if name not in GRID_PROFILES:
        raise GridError(f"unknown grid region {name!r}; known: {', '.join(sorted(GRID_PROFILES))}")
    return GRID_PROFILES[name]
