import dataclasses

import numpy as np
import pytest

from joulepath.facility import Clock, CoolingConfig, FacilityConfig, run_twin
from joulepath.facility.cooling import rack_warning
from joulepath.facility.grid import DemandResponse
from joulepath.facility.power_chain import run_chain
from joulepath.facility.presets import ENTERPRISE_AIR, HYPERSCALE_LIQUID, MODERN_AIR, PRESETS
from joulepath.facility.supply import SmrConfig, SolarConfig, StorageConfig, WindConfig

CLOCK = Clock.year(3600)
LOAD = 1e6 * (0.7 + 0.3 * np.sin(np.arange(CLOCK.n_steps) / 24.0) ** 2)  # a varying 1 MW-class load
ALL_ON = MODERN_AIR.replace(
    solar=SolarConfig(capacity_w=4e5),
    wind=WindConfig(capacity_w=2e5),
    smr=SmrConfig(capacity_w=3e5),
    storage=StorageConfig(energy_wh=2e6, power_w=3e5, peak_shave_w=1.2e6),
    demand_response=DemandResponse(events=((4000.0, 6.0),), max_import_w=5e5),
)


@pytest.mark.parametrize("cfg", [*PRESETS.values(), ALL_ON], ids=[*PRESETS, "all-on"])
def test_energy_is_conserved_at_every_step(cfg: FacilityConfig) -> None:
    s = run_twin(cfg, LOAD, CLOCK).series
    parts = s["it_power_w"] + s["chain_loss_w"] + s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"]
    parts = parts + s["heat_rejection_fan_w"] + s["aux_power_w"]
    np.testing.assert_allclose(parts, s["facility_power_w"], rtol=1e-12)
    supply = s["grid_import_w"] + s["onsite_used_w"] + s["storage_discharge_w"] - s["storage_charge_w"]
    np.testing.assert_allclose(supply, s["facility_power_w"], rtol=1e-9, atol=1e-6)
    assert (s["grid_import_w"] >= -1e-6).all()


def test_metrics_are_consistent() -> None:
    r = run_twin(MODERN_AIR, LOAD, CLOCK)
    m, s = r.metrics, r.series
    assert 1.0 < m.pue < 2.0 and m.tue > m.pue
    assert m.carbon_g == pytest.approx(
        float((s["grid_import_w"] * 3600 / 3.6e6 * s["carbon_intensity_g_per_kwh"]).sum())
    )
    assert m.wue_l_per_kwh == pytest.approx(m.water_l / (m.it_energy_j / 3.6e6))
    assert m.energy_by_subsystem_j["chain_loss"] + m.it_energy_j < m.facility_energy_j
    assert m.provenance.startswith("estimated")


def test_liquid_and_economisers_beat_legacy_air() -> None:
    ent, hyp = run_twin(ENTERPRISE_AIR, LOAD, CLOCK).metrics, run_twin(HYPERSCALE_LIQUID, LOAD, CLOCK).metrics
    assert hyp.pue < 1.15 < 1.45 < ent.pue


def test_cold_climate_free_cools_more_than_hot() -> None:
    cold = run_twin(MODERN_AIR.replace(climate="cold"), LOAD, CLOCK).metrics
    hot = run_twin(MODERN_AIR.replace(climate="hot-humid"), LOAD, CLOCK).metrics
    assert cold.free_cooling_frac > hot.free_cooling_frac and cold.pue < hot.pue


def test_liquid_removes_server_fans_from_it_power() -> None:
    air = run_twin(MODERN_AIR, LOAD, CLOCK).metrics
    liquid = run_twin(
        MODERN_AIR.replace(cooling=CoolingConfig(kind="liquid", liquid_fraction=0.8)), LOAD, CLOCK
    ).metrics
    assert liquid.it_energy_j < air.it_energy_j * 0.95


def test_hvdc_chain_loses_less_than_ac() -> None:
    board = np.full(10, 1e6)
    ac, dc = run_chain("ac-415v", board, 1e6), run_chain("hvdc-800v", board, 1e6)
    assert (dc.grid_side_w < ac.grid_side_w).all() and (ac.it_power_w > board).all()
    with pytest.raises(ValueError, match="unknown power topology"):
        run_chain("ac-999v", board, 1e6)


def test_supply_storage_and_demand_response() -> None:
    s = run_twin(ALL_ON, LOAD, CLOCK).series
    soc = s["storage_soc_wh"]
    assert soc.min() >= 0.1 * 2e6 - 1e-6 and soc.max() <= 0.9 * 2e6 + 1e-6
    event = (CLOCK.hour_of_year >= 4000) & (CLOCK.hour_of_year < 4006)
    assert s["storage_discharge_w"][event].sum() > 0
    assert s["onsite_used_w"].sum() > 0
    plain = run_twin(MODERN_AIR, LOAD, CLOCK).series
    assert s["grid_import_w"].sum() < plain["grid_import_w"].sum()


def test_solar_capacity_factor_is_plausible() -> None:
    site = MODERN_AIR.replace(climate="hot-dry", solar=SolarConfig(capacity_w=1e6))
    s = run_twin(site, LOAD, CLOCK).series
    cf = s["onsite_used_w"].mean() / 1e6
    assert 0.15 < cf < 0.30  # Phoenix-like fixed-tilt PV: NREL PVWatts gives ~0.2-0.25 AC


def test_smr_refuelling_outage() -> None:
    site = MODERN_AIR.replace(smr=SmrConfig(capacity_w=5e5))
    s = run_twin(site, LOAD, CLOCK).series
    outage = (CLOCK.hour_of_year >= 4800) & (CLOCK.hour_of_year < 5280)
    assert s["onsite_used_w"][outage].max() == 0 and s["onsite_used_w"][~outage].min() > 0


def test_rack_density_warning() -> None:
    assert "NVL72" in (rack_warning(CoolingConfig(kind="air"), 120.0) or "")
    assert rack_warning(CoolingConfig(kind="liquid", liquid_fraction=0.8), 120.0) is None
    r = run_twin(MODERN_AIR.replace(rack_kw=120.0), LOAD, CLOCK)
    assert r.warnings


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="clock has"):
        run_twin(MODERN_AIR, LOAD[:10], CLOCK)
    with pytest.raises(ValueError, match="liquid_fraction"):
        CoolingConfig(liquid_fraction=1.5)
    with pytest.raises(ValueError, match="unknown climate"):
        run_twin(MODERN_AIR.replace(climate="martian"), LOAD, CLOCK)
    assert dataclasses.replace(MODERN_AIR.cooling, kind="immersion").kind == "immersion"


def test_a_daily_peak_is_not_its_flat_average_and_it_energy_is_conserved() -> None:
    """The twin sees the load's shape: a trace stretched to a daily curve (peak in the afternoon) gives
    a different facility energy and peak than the same energy held flat."""
    from joulepath.facility import load_on_clock

    trace_w = 1e6 * (1.0 + 0.8 * np.sin(np.linspace(0, np.pi, 60)) ** 4)  # ten minutes, 10 s bins, one peak
    clock = Clock.year(3600)
    daily = load_on_clock(trace_w, 10.0, clock, "daily")
    flat = load_on_clock(trace_w, 10.0, clock, "repeat")
    np.testing.assert_allclose(flat, trace_w.mean(), rtol=1e-9)  # ten-minute shape, hourly steps: its mean
    assert daily.sum() == pytest.approx(flat.sum(), rel=1e-9)  # the same IT energy over the year
    assert daily.max() > 1.3 * daily.min()
    a, b = run_twin(MODERN_AIR, daily, clock), run_twin(MODERN_AIR, flat, clock)
    assert a.metrics.it_energy_j != pytest.approx(0)
    assert float(a.series["it_board_w"].sum()) == pytest.approx(float(b.series["it_board_w"].sum()), rel=1e-9)
    assert a.metrics.facility_energy_j != pytest.approx(b.metrics.facility_energy_j, rel=1e-4)
    assert a.series["facility_power_w"].max() > 1.2 * b.series["facility_power_w"].max()


def test_load_on_clock_conserves_energy_for_any_step() -> None:
    from joulepath.facility import load_on_clock

    rng = np.random.default_rng(0)
    trace_w = rng.uniform(0, 5e5, 37)
    clock = Clock(600.0, 6 * 24 * 7)  # a week at 10-minute steps, the trace 37 x 13 s long
    daily = load_on_clock(trace_w, 13.0, clock, "daily")  # seven whole days: exactly the trace's mean
    assert daily.mean() == pytest.approx(trace_w.mean(), rel=1e-9)
    repeat = load_on_clock(trace_w, 13.0, clock, "repeat")  # 1,257.4 periods: the part period shifts it a little
    assert repeat.mean() == pytest.approx(trace_w.mean(), rel=1e-3)
    step = load_on_clock(trace_w, 13.0, Clock(13.0, 74), "repeat")  # the trace's own step: itself, twice
    np.testing.assert_allclose(step, np.tile(trace_w, 2), rtol=1e-9)
    with pytest.raises(ValueError, match="unknown load shape"):
        load_on_clock(trace_w, 13.0, clock, "stretch")
