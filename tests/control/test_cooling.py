"""Cooling controllers: the MPC keeps the inlet limit and beats both baselines on the same weather."""

import numpy as np
import pytest

from joulepath.control import CONTROLLERS, ControlConfig, CoolingMpc, MpcConfig, TrimAndRespond, run_controlled_twin
from joulepath.control.cooling import DiurnalPersistence, FixedSetpoint
from joulepath.facility import Clock, run_twin
from joulepath.facility.cooling import Setpoints, rack_inlet_c, run_cooling, tower_approach_k
from joulepath.facility.feedback import Forecast, History, PlantState
from joulepath.facility.presets import HYPERSCALE_LIQUID, MODERN_AIR
from joulepath.facility.weather import get_climate, synthetic_weather

SUMMER = Clock(3600.0, 24 * 60, start_hour_of_year=24 * 150)  # June and July, hourly
LOAD = 1e6 * (0.75 + 0.15 * np.cos(2 * np.pi * (np.arange(SUMMER.n_steps) % 24 - 15) / 24))
HOT = MODERN_AIR.replace(climate="hot-humid")


def _state(inlet_max_c: float, sp: Setpoints | None = None) -> PlantState:
    return PlantState(10, 100.0, sp or Setpoints(20.0, 14.0), inlet_max_c, 8e5, 20.0, 1e6)


def test_mpc_keeps_the_inlet_limit_and_uses_less_cooling_than_both_baselines() -> None:
    runs = {c: run_controlled_twin(HOT, LOAD, SUMMER, ControlConfig(c, interval_s=3600.0)) for c in CONTROLLERS}
    cooling = {c: float(r.twin.series["cooling_power_w"].sum()) for c, r in runs.items()}
    assert cooling["mpc"] < cooling["g36"] < cooling["fixed"]
    assert runs["mpc"].twin.series["inlet_c"].max() <= 27.0
    facility = {c: float(r.twin.series["facility_power_w"].sum()) for c, r in runs.items()}
    assert facility["mpc"] < facility["g36"]  # the saving is not moved into the servers' fans


def test_every_mpc_candidate_respects_the_limit_with_its_margin() -> None:
    mpc = CoolingMpc(MODERN_AIR, MpcConfig(margin_k=0.5))
    assert (rack_inlet_c(MODERN_AIR.cooling, mpc.candidates.setpoints) <= 26.5).all()
    with pytest.raises(ValueError, match="no candidate"):
        CoolingMpc(MODERN_AIR, MpcConfig(inlet_limit_c=15.0))


def test_mpc_counts_server_fans_and_rate_limits_its_moves() -> None:
    hot = Forecast(np.full(4, 9e5), np.full(4, 35.0), np.full(4, 26.0))
    with_fans = CoolingMpc(MODERN_AIR).decide(_state(22.0, Setpoints(26.0, 20.0)), hot)
    without = CoolingMpc(MODERN_AIR, MpcConfig(include_server_fans=False)).decide(
        _state(22.0, Setpoints(26.0, 20.0)), hot
    )
    assert rack_inlet_c(MODERN_AIR.cooling, with_fans) <= rack_inlet_c(MODERN_AIR.cooling, without)
    slow = CoolingMpc(MODERN_AIR, MpcConfig(max_step_k=0.5)).decide(_state(20.0, Setpoints(18.0, 12.0)), hot)
    assert float(np.asarray(slow.supply_air_c)) == pytest.approx(18.5)
    assert float(rack_inlet_c(MODERN_AIR.cooling, slow)) <= 26.7


def test_trim_and_respond_warms_without_requests_and_cools_on_them() -> None:
    g36 = TrimAndRespond(MODERN_AIR.cooling)
    fc = Forecast(np.full(1, np.nan), np.full(1, np.nan), np.full(1, np.nan))
    first = float(np.asarray(g36.decide(_state(20.0), fc).supply_air_c))
    second = float(np.asarray(g36.decide(_state(20.0), fc).supply_air_c))
    assert second == pytest.approx(first + 0.1)
    assert g36.requests(25.4) == 0 and g36.requests(25.6) == 1 and g36.requests(27.6) == 3
    g36.setpoint_c = 22.0
    after = float(np.asarray(g36.decide(_state(27.6), fc).supply_air_c))
    assert after == pytest.approx(22.0 - 0.6)  # three requests, capped at the largest response
    g36.setpoint_c = 18.05
    assert float(np.asarray(g36.decide(_state(27.6), fc).supply_air_c)) == 18.0  # never below its minimum


def test_diurnal_persistence_follows_a_daily_shape() -> None:
    day = 24
    x = 10 + np.sin(2 * np.pi * np.arange(3 * day) / day)
    hist = History(x[: 2 * day], x[: 2 * day], x[: 2 * day], 3600.0)
    fc = DiurnalPersistence().forecast(hist, 4)
    np.testing.assert_allclose(fc.it_board_w, x[2 * day : 2 * day + 4], atol=1e-9)
    early = DiurnalPersistence().forecast(History(x[:3], x[:3], x[:3], 3600.0), 2)
    np.testing.assert_allclose(early.t_wetbulb_c, [x[2], x[2]])


def test_control_config_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown controller"):
        ControlConfig("pid")
    with pytest.raises(ValueError, match="interval_s"):
        ControlConfig(interval_s=0.0)


def _plant(sp: Setpoints, load_frac: float = 0.5, wet_bulb_c: float = 24.0):  # type: ignore[no-untyped-def]
    """The water-cooled plant at one operating point (1 MW design heat), economiser off unless set."""
    return run_cooling(
        MODERN_AIR.cooling, np.full(1, load_frac * 1e6), 1e6, np.full(1, 35.0), np.full(1, wet_bulb_c), sp
    )


def test_condenser_water_reset_trades_chiller_power_for_tower_fans() -> None:
    cool = MODERN_AIR.cooling
    coldest_k = float(tower_approach_k(cool, np.array(0.5), 1.0))  # half load, fans at full speed: 2 K
    assert coldest_k == pytest.approx(cool.tower_approach_k * 0.5)
    runs = [_plant(Setpoints(22.0, 16.0, economiser_flag=0.0, tower_approach_k=k)) for k in (2.0, 3.0, 4.0, 5.0)]
    chiller = [float(r.chiller_w[0]) for r in runs]
    fans = [float(r.heat_rejection_fan_w[0]) for r in runs]
    assert chiller == sorted(chiller) and len(set(chiller)) == 4  # colder condenser water, less lift
    assert fans == sorted(fans, reverse=True) and len(set(fans)) == 4  # ... bought with tower-fan power
    assert fans[0] == pytest.approx(cool.tower_fan_w_per_w * 1e6)  # full speed at the coldest it can make


def test_the_tower_never_makes_water_colder_than_wet_bulb_plus_its_approach() -> None:
    cool = MODERN_AIR.cooling
    at_limit = _plant(Setpoints(22.0, 16.0, economiser_flag=0.0, tower_approach_k=2.0))
    for asked_k in (0.0, 0.5, 1.5):  # colder than the tower can make: no more saving, fans stay at full speed
        below = _plant(Setpoints(22.0, 16.0, economiser_flag=0.0, tower_approach_k=asked_k))
        assert below.chiller_w[0] == pytest.approx(at_limit.chiller_w[0])
        assert below.heat_rejection_fan_w[0] == pytest.approx(at_limit.heat_rejection_fan_w[0])
    lazy = _plant(Setpoints(22.0, 16.0, economiser_flag=0.0, tower_approach_k=30.0))  # fans at their floor
    assert lazy.heat_rejection_fan_w[0] == pytest.approx(cool.tower_fan_w_per_w * 1e6 * cool.tower_fan_min_frac**3)
    # without a setpoint the plant keeps the fixed-rule tower (design approach, fans in proportion to heat)
    assert np.isnan(Setpoints().tower_approach_k)


def test_warmer_chilled_water_never_costs_more_so_the_coil_limit_is_the_choice() -> None:
    # the MPC sets chilled water at supply air - coil approach: a colder one only adds lift and loses
    # economiser hours in this plant (no latent load is modelled)
    for wet_bulb_c in (5.0, 12.0, 24.0):
        totals = [
            float(_plant(Setpoints(22.0, chw, tower_approach_k=4.0), 0.7, wet_bulb_c).total_w[0])
            for chw in (16.0, 14.0, 12.0)
        ]
        assert totals == sorted(totals)


def test_mpc_sets_a_liquid_loop_s_facility_water_at_or_below_its_class() -> None:
    # warm and fairly dry: W32 water keeps the dry coolers partly on (0.02 W/W of fans); 28 C water hands
    # the heat to the evaporative trim (0.008 W/W) -- less power, more water. The MPC, minimising power,
    # takes the colder water; it never goes above the class the cold plates are rated for.
    cool = HYPERSCALE_LIQUID.cooling

    def total_w(fw_c: float) -> float:
        sp = Setpoints(26.0, 18.0, fw_c, tower_approach_k=4.0)
        return float(run_cooling(cool, np.full(1, 8e5), 1e6, np.full(1, 27.0), np.full(1, 20.0), sp).total_w[0])

    assert total_w(28.0) < total_w(32.0)
    mpc = CoolingMpc(HYPERSCALE_LIQUID)
    assert (mpc.candidates.facility_water_c <= cool.facility_water_supply_c).all()
    step = mpc.decide(
        PlantState(10, 100.0, Setpoints(26.0, 20.0, 32.0), 26.0, 8e5, 20.0, 1e6),
        Forecast(np.full(4, 8e5), np.full(4, 27.0), np.full(4, 20.0)),
    )
    assert float(np.asarray(step.facility_water_c)) < cool.facility_water_supply_c
    assert CoolingMpc(MODERN_AIR).candidates.facility_water_c.max() == MODERN_AIR.cooling.facility_water_supply_c


def test_baselines_use_the_standard_wet_bulb_reset_and_the_mpc_chooses_its_own() -> None:
    cool = MODERN_AIR.cooling
    fc = Forecast(np.full(4, 5e5), np.full(4, 35.0), np.full(4, 24.0))  # half load, humid: chiller only
    assert TrimAndRespond(cool).decide(_state(20.0), fc).tower_approach_k == cool.tower_approach_k
    assert FixedSetpoint(cool).decide(_state(20.0), fc).tower_approach_k == cool.tower_approach_k
    mpc = CoolingMpc(MODERN_AIR)
    prev = Setpoints(22.0, 16.0, tower_approach_k=4.0)
    step = mpc.decide(_state(22.0, prev), fc)
    assert float(rack_inlet_c(cool, step)) <= 27.0 - mpc.cfg.margin_k
    chosen_k = float(np.asarray(step.tower_approach_k))
    assert chosen_k in mpc.cfg.tower_approach_k and chosen_k != cool.tower_approach_k
    # the choice beats the standard reset at the same air-side setpoints on the MPC's own objective
    cand = mpc.reachable(22.0)
    same_air = (cand.supply_air_c[:, 0] == float(np.asarray(step.supply_air_c))) & (
        cand.airflow_ratio_frac[:, 0] == float(np.asarray(step.airflow_ratio_frac))
    )
    cost = mpc.predicted_cost_w(fc, 1e6, cand)
    standard = same_air & (cand.tower_approach_k[:, 0] == cool.tower_approach_k)
    assert cost[same_air & (cand.tower_approach_k[:, 0] == chosen_k)][0] < cost[standard][0]
    assert (cand.supply_air_c >= 21.0 - 1e-9).all() and (cand.supply_air_c <= 23.0 + 1e-9).all()  # in reach


def test_mpc_objective_is_the_total_the_twin_reports() -> None:
    # one hour at the design load: the MPC's predicted cooling + extra server-fan power is the twin's
    # cooling plus what the warmer inlet adds to the IT load (the same function, the same setpoints)
    hour = 24 * 200 + 15  # a July afternoon: the chiller runs, so the condenser setpoint counts
    mpc, clock = CoolingMpc(MODERN_AIR), Clock(3600.0, 1, start_hour_of_year=hour)
    weather = synthetic_weather(get_climate("hot-humid"), 0)
    cand = mpc.candidates
    pick = int(np.argmax(cand.fan_factor[:, 0]))  # the warmest inlet: the server fans count
    sa, ratio, tower = (float(x[pick, 0]) for x in (cand.supply_air_c, cand.airflow_ratio_frac, cand.tower_approach_k))
    sp = Setpoints(sa, sa - 6.0, 32.0, 1.0, ratio, tower)
    forecast = Forecast(np.full(1, 1e6), weather.t_drybulb_c[hour : hour + 1], weather.t_wetbulb_c[hour : hour + 1])
    predicted_w = float(mpc.predicted_cost_w(forecast, 1e6)[pick])
    warm = run_twin(MODERN_AIR, np.full(1, 1e6), clock, 1e6, weather, setpoints=sp).series
    cool_inlet = run_twin(MODERN_AIR, np.full(1, 1e6), clock, 1e6, weather, setpoints=Setpoints(20.0, 14.0)).series
    extra_it_w = float(warm["it_power_w"][0] - cool_inlet["it_power_w"][0])
    assert extra_it_w > 0.005 * 1e6 and warm["chiller_w"][0] > 0  # the fans speed up, the chiller runs
    assert predicted_w == pytest.approx(float(warm["cooling_power_w"][0]) + extra_it_w, rel=0.01)
