"""Weather: an EnergyPlus EPW reader, wet-bulb temperature, and a seeded synthetic generator by
climate whose parameters are fitted to real EPW files (`fit_climate`).

Synthetic model, hourly: dry-bulb = annual mean + seasonal harmonic + daily harmonic + AR(1) noise;
dew-point depression (dry-bulb - dew point) the same way; global horizontal irradiance = a clear-sky
estimate x the site's mean clearness; wind speed Rayleigh-distributed around its mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from joulepath.facility.seasonal import HOURS, ar1_noise, fit_harmonics, harmonics


class WeatherError(ValueError):
    """A weather file that cannot be read; says which line and what was expected."""


@dataclass(frozen=True)
class Weather:
    """Hourly weather for one year (8,760 values each). Units in names."""

    site: str
    latitude_deg: float
    longitude_deg: float
    t_drybulb_c: np.ndarray
    t_dewpoint_c: np.ndarray
    pressure_pa: np.ndarray
    ghi_w_m2: np.ndarray  # global horizontal irradiance
    dni_w_m2: np.ndarray  # direct normal
    dhi_w_m2: np.ndarray  # diffuse horizontal
    wind_m_s: np.ndarray
    source: str
    utc_offset_h: float = 0.0

    @property
    def rh_pct(self) -> np.ndarray:
        return relative_humidity_pct(self.t_drybulb_c, self.t_dewpoint_c)

    @property
    def t_wetbulb_c(self) -> np.ndarray:
        return wet_bulb_c(self.t_drybulb_c, self.rh_pct)


def relative_humidity_pct(t_c: np.ndarray, t_dew_c: np.ndarray) -> np.ndarray:
    """RH from dry-bulb and dew point with the Magnus formula (Alduchov & Eskridge 1996 constants)."""
    a, b = 17.625, 243.04
    rh = 100.0 * np.exp(a * t_dew_c / (b + t_dew_c) - a * t_c / (b + t_c))
    result: np.ndarray = np.clip(rh, 1.0, 100.0)
    return result


def wet_bulb_c(t_c: np.ndarray, rh_pct: np.ndarray) -> np.ndarray:
    """Wet-bulb temperature at sea-level pressure, Stull (2011), J. Appl. Meteor. Climatol. 50:2267.
    Stated accuracy -1 to +0.65 K for RH 5-99 % and -20 to 50 deg C."""
    rh = np.clip(rh_pct, 5.0, 99.0)
    tw = (
        t_c * np.arctan(0.151977 * np.sqrt(rh + 8.313659))
        + np.arctan(t_c + rh)
        - np.arctan(rh - 1.676331)
        + 0.00391838 * rh**1.5 * np.arctan(0.023101 * rh)
        - 4.686035
    )
    result: np.ndarray = np.minimum(tw, t_c)
    return result


def read_epw(path: str | Path) -> Weather:
    """Read an EnergyPlus weather file (8 header lines, then 35 fields per hour)."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise WeatherError(f"weather file {path} {problem}; give an EnergyPlus .epw file")
    lines = path.read_text(encoding="latin-1").splitlines()
    loc = lines[0].split(",") if lines else [""]
    if loc[0] != "LOCATION" or len(loc) < 10 or len(lines) < 8 + HOURS:
        raise WeatherError(f"{path}: not an EPW file (needs a LOCATION line and {HOURS} hourly rows)")
    cols = {6: [], 7: [], 9: [], 13: [], 14: [], 15: [], 21: []}  # type: dict[int, list[float]]
    for n, line in enumerate(lines[8 : 8 + HOURS], start=9):
        fields = line.split(",")
        try:
            for c, values in cols.items():
                values.append(float(fields[c]))
        except (IndexError, ValueError) as exc:
            raise WeatherError(f"{path}:{n}: bad hourly row ({exc}); expected 35 comma-separated fields") from None
    arr = {c: np.array(v) for c, v in cols.items()}
    return Weather(
        site=f"{loc[1]}, {loc[2]}, {loc[3]}",
        latitude_deg=float(loc[6]),
        longitude_deg=float(loc[7]),
        utc_offset_h=float(loc[8]),
        t_drybulb_c=arr[6],
        t_dewpoint_c=np.minimum(arr[7], arr[6]),
        pressure_pa=arr[9],
        ghi_w_m2=arr[13],
        dni_w_m2=arr[14],
        dhi_w_m2=arr[15],
        wind_m_s=arr[21],
        source=f"measured: {path.name} (TMYx)",
    )


@dataclass(frozen=True)
class Climate:
    """Parameters of the synthetic weather model (fitted by `fit_climate`). Temperatures deg C."""

    name: str
    latitude_deg: float
    t_mean_c: float
    t_seasonal_cos_c: float  # coefficient of cos(2 pi day / 365)
    t_seasonal_sin_c: float
    t_daily_cos_c: float  # coefficient of cos(2 pi hour / 24), local solar-ish time
    t_daily_sin_c: float
    t_noise_c: float  # innovation std of the AR(1) residual
    t_ar1: float
    dep_mean_c: float  # dew-point depression, same harmonics as dry-bulb
    dep_seasonal_cos_c: float
    dep_seasonal_sin_c: float
    dep_daily_cos_c: float
    dep_daily_sin_c: float
    dep_per_t_anomaly: float  # a hot anomaly dries the air: depression rises with the dry-bulb residual
    clearness: float  # mean GHI / clear-sky GHI
    wind_mean_m_s: float


#: Synthetic climates: `fit_climate` applied to the TMYx files in ../shared/data/weather (re-checked by
#: tests/facility/test_weather.py when that folder is present).
CLIMATES: dict[str, Climate] = {
    "hot-dry": Climate(
        name="hot-dry",
        latitude_deg=33.43,
        t_mean_c=24.67,
        t_seasonal_cos_c=-11.42,
        t_seasonal_sin_c=-3.63,
        t_daily_cos_c=-3.16,
        t_daily_sin_c=-4.73,
        t_noise_c=1.36,
        t_ar1=0.92,
        dep_mean_c=21.21,
        dep_seasonal_cos_c=-6.65,
        dep_seasonal_sin_c=1.13,
        dep_daily_cos_c=-3.3,
        dep_daily_sin_c=-5.73,
        dep_per_t_anomaly=0.829,
        clearness=0.96,
        wind_mean_m_s=2.82,
    ),  # fitted to USA_AZ_Phoenix-Sky.Harbor.epw
    "cold": Climate(
        name="cold",
        latitude_deg=41.96,
        t_mean_c=10.76,
        t_seasonal_cos_c=-13.11,
        t_seasonal_sin_c=-4.84,
        t_daily_cos_c=-2.6,
        t_daily_sin_c=-1.69,
        t_noise_c=1.06,
        t_ar1=0.977,
        dep_mean_c=5.89,
        dep_seasonal_cos_c=-1.5,
        dep_seasonal_sin_c=0.66,
        dep_daily_cos_c=-2.32,
        dep_daily_sin_c=-1.42,
        dep_per_t_anomaly=0.119,
        clearness=0.754,
        wind_mean_m_s=4.18,
    ),  # fitted to USA_IL_Chicago.OHare.epw
    "hot-humid": Climate(
        name="hot-humid",
        latitude_deg=32.9,
        t_mean_c=19.81,
        t_seasonal_cos_c=-10.83,
        t_seasonal_sin_c=-3.44,
        t_daily_cos_c=-2.88,
        t_daily_sin_c=-3.08,
        t_noise_c=1.21,
        t_ar1=0.961,
        dep_mean_c=8.7,
        dep_seasonal_cos_c=-1.51,
        dep_seasonal_sin_c=-0.94,
        dep_daily_cos_c=-3.0,
        dep_daily_sin_c=-3.68,
        dep_per_t_anomaly=0.24,
        clearness=0.785,
        wind_mean_m_s=4.9,
    ),  # fitted to USA_TX_Dallas-Fort.Worth.epw
    "temperate": Climate(
        name="temperate",
        latitude_deg=39.08,
        t_mean_c=13.78,
        t_seasonal_cos_c=-11.53,
        t_seasonal_sin_c=-3.6,
        t_daily_cos_c=-2.98,
        t_daily_sin_c=-2.61,
        t_noise_c=1.13,
        t_ar1=0.966,
        dep_mean_c=6.31,
        dep_seasonal_cos_c=-0.5,
        dep_seasonal_sin_c=1.4,
        dep_daily_cos_c=-3.05,
        dep_daily_sin_c=-2.72,
        dep_per_t_anomaly=0.087,
        clearness=0.734,
        wind_mean_m_s=2.73,
    ),  # fitted to USA_VA_Leesburg.Exec.epw
    "mild": Climate(
        name="mild",
        latitude_deg=47.44,
        t_mean_c=11.68,
        t_seasonal_cos_c=-6.97,
        t_seasonal_sin_c=-2.36,
        t_daily_cos_c=-2.08,
        t_daily_sin_c=-2.0,
        t_noise_c=0.95,
        t_ar1=0.962,
        dep_mean_c=5.09,
        dep_seasonal_cos_c=-2.06,
        dep_seasonal_sin_c=0.01,
        dep_daily_cos_c=-1.83,
        dep_daily_sin_c=-1.81,
        dep_per_t_anomaly=0.311,
        clearness=0.68,
        wind_mean_m_s=3.21,
    ),  # fitted to USA_WA_Seattle-Tacoma.epw
}


def get_climate(name: str) -> Climate:
    if name not in CLIMATES:
        raise WeatherError(f"unknown climate {name!r}; known: {', '.join(sorted(CLIMATES))}")
    return CLIMATES[name]


def clear_sky_ghi_w_m2(latitude_deg: float, n: int = HOURS) -> np.ndarray:
    """Haurwitz clear-sky GHI from a simple solar-position model (declination, hour angle); W/m2."""
    h = np.arange(n) + 0.5
    day = h / 24.0
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + day) / 365.0)
    hour_angle = np.radians(15.0 * ((h % 24) - 12.0))
    lat = np.radians(latitude_deg)
    cos_zenith = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    cz = np.clip(cos_zenith, 0.0, None)
    ghi: np.ndarray = np.where(cz > 0, 1098.0 * cz * np.exp(-0.059 / np.maximum(cz, 1e-3)), 0.0)
    return ghi


def fit_climate(weather: Weather, name: str) -> Climate:
    """Least-squares fit of the synthetic model to a year of measured weather."""
    t = fit_harmonics(weather.t_drybulb_c)
    dep = weather.t_drybulb_c - weather.t_dewpoint_c
    cd, *_ = np.linalg.lstsq(np.column_stack([harmonics(HOURS), t.residual]), dep, rcond=None)
    clear = clear_sky_ghi_w_m2(weather.latitude_deg)
    return Climate(
        name=name,
        latitude_deg=round(weather.latitude_deg, 2),
        t_mean_c=round(float(t.coef[0]), 2),
        t_seasonal_cos_c=round(float(t.coef[1]), 2),
        t_seasonal_sin_c=round(float(t.coef[2]), 2),
        t_daily_cos_c=round(float(t.coef[3]), 2),
        t_daily_sin_c=round(float(t.coef[4]), 2),
        t_noise_c=round(t.innovation_sd, 2),
        t_ar1=round(t.ar1, 3),
        dep_mean_c=round(float(cd[0]), 2),
        dep_seasonal_cos_c=round(float(cd[1]), 2),
        dep_seasonal_sin_c=round(float(cd[2]), 2),
        dep_daily_cos_c=round(float(cd[3]), 2),
        dep_daily_sin_c=round(float(cd[4]), 2),
        dep_per_t_anomaly=round(float(cd[5]), 3),
        clearness=round(float(weather.ghi_w_m2.sum() / clear.sum()), 3),
        wind_mean_m_s=round(float(weather.wind_m_s.mean()), 2),
    )


def synthetic_weather(climate: Climate, seed: int = 0) -> Weather:
    """A seeded synthetic year for `climate` (same seed, same weather)."""
    rng = np.random.default_rng(seed)
    x = harmonics(HOURS)
    coef = [
        climate.t_mean_c,
        climate.t_seasonal_cos_c,
        climate.t_seasonal_sin_c,
        climate.t_daily_cos_c,
        climate.t_daily_sin_c,
    ]
    noise = ar1_noise(rng, HOURS, climate.t_noise_c, climate.t_ar1)
    t = x @ np.array(coef) + noise
    dep_coef = [
        climate.dep_mean_c,
        climate.dep_seasonal_cos_c,
        climate.dep_seasonal_sin_c,
        climate.dep_daily_cos_c,
        climate.dep_daily_sin_c,
    ]
    dep = np.clip(x @ np.array(dep_coef) + climate.dep_per_t_anomaly * noise, 0.5, None)
    ghi = clear_sky_ghi_w_m2(climate.latitude_deg) * climate.clearness
    return Weather(
        site=f"synthetic {climate.name}",
        latitude_deg=climate.latitude_deg,
        longitude_deg=0.0,
        t_drybulb_c=t,
        t_dewpoint_c=t - dep,
        pressure_pa=np.full(HOURS, 101_325.0),
        ghi_w_m2=ghi,
        dni_w_m2=ghi * 0.75,  # a rough direct share for clear-ish skies; only the synthetic default uses it
        dhi_w_m2=ghi * 0.25,
        wind_m_s=rng.rayleigh(climate.wind_mean_m_s / np.sqrt(np.pi / 2), HOURS),
        source=f"synthetic: climate {climate.name!r} (fitted to TMYx data), seed {seed}",
    )
