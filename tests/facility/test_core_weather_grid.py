import subprocess
import sys

import numpy as np
import pytest

from joulepath.facility.core import Clock, Constant, hourly_to_clock, simulate
from joulepath.facility.grid import (
    GRID_PROFILES,
    GridError,
    Tariff,
    fit_grid_profile,
    read_eia_csv,
    synthetic_grid,
)
from joulepath.facility.weather import (
    CLIMATES,
    WeatherError,
    fit_climate,
    read_epw,
    synthetic_weather,
    wet_bulb_c,
)

from ..conftest import SHARED_DATA, shared_file

EPW = {
    "hot-dry": "USA_AZ_Phoenix-Sky.Harbor.epw",
    "cold": "USA_IL_Chicago.OHare.epw",
    "hot-humid": "USA_TX_Dallas-Fort.Worth.epw",
    "temperate": "USA_VA_Leesburg.Exec.epw",
    "mild": "USA_WA_Seattle-Tacoma.epw",
}


def test_core_runs_components_and_guards_names() -> None:
    clock = Clock(dt_s=60, n_steps=10)
    out = simulate(clock, [Constant("it_power_w", 5.0)])
    assert out["it_power_w"].tolist() == [5.0] * 10
    with pytest.raises(ValueError, match="unit suffix"):
        simulate(clock, [Constant("it_power", 5.0)])
    with pytest.raises(ValueError, match="already written"):
        simulate(clock, [Constant("it_power_w", 1.0), Constant("it_power_w", 2.0)])


def test_hourly_interpolation_wraps() -> None:
    hourly = np.arange(8760, dtype=float)
    clock = Clock(dt_s=1800, n_steps=4, start_hour_of_year=8759.0)
    assert hourly_to_clock(hourly, clock).tolist() == [8759.0, 4379.5, 0.0, 0.5]


def test_wet_bulb_matches_stull_reference() -> None:
    # Stull (2011): T = 20 C, RH = 50 % gives Tw = 13.7 C
    assert wet_bulb_c(np.array([20.0]), np.array([50.0]))[0] == pytest.approx(13.7, abs=0.1)


def test_epw_reader_and_climate_fits_match_the_shipped_presets() -> None:
    for name, fname in EPW.items():
        weather = read_epw(shared_file(f"weather/{fname}"))
        assert len(weather.t_drybulb_c) == 8760 and weather.source.startswith("measured")
        assert fit_climate(weather, name) == CLIMATES[name]


def test_bad_epw_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.epw"
    bad.write_text("not,an,epw\n")
    with pytest.raises(WeatherError, match="not an EPW"):
        read_epw(bad)
    with pytest.raises(WeatherError, match="does not exist"):
        read_epw(tmp_path / "none.epw")


def test_synthetic_weather_is_seeded_and_plausible() -> None:
    a, b = synthetic_weather(CLIMATES["mild"], 1), synthetic_weather(CLIMATES["mild"], 1)
    np.testing.assert_array_equal(a.t_drybulb_c, b.t_drybulb_c)
    assert abs(a.t_drybulb_c.mean() - CLIMATES["mild"].t_mean_c) < 1.0
    assert (a.t_wetbulb_c <= a.t_drybulb_c + 1e-9).all()
    hot = synthetic_weather(CLIMATES["hot-dry"], 1)
    assert hot.t_drybulb_c.mean() > a.t_drybulb_c.mean() + 8


def test_eia_reader_fits_and_gaps() -> None:
    for region in GRID_PROFILES:
        signal = read_eia_csv(shared_file(f"carbon/{region.upper()}_2022_hourly.csv"))
        assert len(signal.carbon_g_per_kwh) == 8760 and not np.isnan(signal.carbon_g_per_kwh).any()
        assert fit_grid_profile(signal, region) == GRID_PROFILES[region]
    assert "interpolated" in read_eia_csv(SHARED_DATA / "carbon" / "PJM_2022_hourly.csv").source


def test_bad_grid_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "g.csv"
    bad.write_text("timestamp,avg_CI\n2022-01-01,100\n")
    with pytest.raises(GridError, match="missing column"):
        read_eia_csv(bad)


def test_synthetic_grid_and_tariff() -> None:
    clean = synthetic_grid(GRID_PROFILES["bpat"], 0)
    dirty = synthetic_grid(GRID_PROFILES["azps"], 0)
    assert clean.carbon_g_per_kwh.mean() < 100 < 400 < dirty.carbon_g_per_kwh.mean()
    price = Tariff().hourly_usd_per_kwh()
    assert price[17] > price[10] > price[3]


def test_facility_does_not_import_torch() -> None:
    code = "import sys, joulepath.facility, joulepath.facility.supply; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
