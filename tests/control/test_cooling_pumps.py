"""The MPC's pump action (chilled-water delta T) and the baselines' pump control."""

import numpy as np
import pytest

from joulepath.control import ControlConfig, CoolingMpc, TrimAndRespond, run_controlled_twin
from joulepath.control.cooling import FixedSetpoint
from joulepath.facility import Clock, run_twin
from joulepath.facility.cooling import Setpoints, coil_approach_k, rack_inlet_c
from joulepath.facility.feedback import Forecast, PlantState
from joulepath.facility.presets import MODERN_AIR
from joulepath.facility.weather import get_climate, synthetic_weather

COOL = MODERN_AIR.cooling


def _state(sp: Setpoints) -> PlantState:
    return PlantState(10, 100.0, sp, 24.0, 8e5, 5.0, 1e6)


def test_baselines_pump_as_their_plants_would() -> None:
    fc = Forecast(np.full(4, 8e5), np.full(4, 20.0), np.full(4, 14.0))
    g36 = TrimAndRespond(COOL).decide(_state(Setpoints(20.0, 14.0)), fc)
    fixed = FixedSetpoint(COOL).decide(_state(Setpoints(20.0, 14.0)), fc)
    for sp in (g36, fixed):  # the design delta T: chilled water at the coil's design approach
        assert sp.chw_delta_t_k == COOL.chw_delta_t_design_k
        assert float(np.asarray(sp.supply_air_c)) - float(np.asarray(sp.chilled_water_c)) == pytest.approx(6.0)
    assert g36.pump_dp_reset_flag == 1.0 and fixed.pump_dp_reset_flag == 0.0  # G36 resets DP; fixed holds it


def test_mpc_widens_the_delta_t_when_colder_water_is_free() -> None:
    # cold and dry: the economiser carries the load with margin, so colder water costs nothing and a wider
    # delta T cuts pump power; the chilled water then sits at the coil's limit for that delta T
    mpc = CoolingMpc(MODERN_AIR)
    cold = Forecast(np.full(4, 9e5), np.full(4, 0.0), np.full(4, -2.0))
    prev = Setpoints(22.0, 14.5, tower_approach_k=4.0, chw_delta_t_k=8.5)
    step = mpc.decide(_state(prev), cold)
    dt_k = float(np.asarray(step.chw_delta_t_k))
    assert dt_k > COOL.chw_delta_t_design_k and dt_k in mpc.cfg.chw_delta_t_k
    sa, ratio = float(np.asarray(step.supply_air_c)), float(np.asarray(step.airflow_ratio_frac))
    assert float(np.asarray(step.chilled_water_c)) == pytest.approx(sa - float(coil_approach_k(COOL, dt_k, ratio)))
    assert float(rack_inlet_c(COOL, step)) <= 27.0 - mpc.cfg.margin_k
    # on its own objective the wider delta T beats the design one at the same air side and tower
    cand = mpc.reachable(22.0, 14.5)
    cost = mpc.predicted_cost_w(cold, 1e6, cand)
    same = (cand.supply_air_c[:, 0] == sa) & (cand.airflow_ratio_frac[:, 0] == ratio)
    same &= cand.tower_approach_k[:, 0] == float(np.asarray(step.tower_approach_k))
    design = same & (cand.chw_delta_t_k[:, 0] == COOL.chw_delta_t_design_k)
    assert design.any()
    assert cost[same & (cand.chw_delta_t_k[:, 0] == dt_k)][0] < cost[design][0]


def test_reachable_moves_respect_the_chilled_water_rate_limit() -> None:
    mpc = CoolingMpc(MODERN_AIR)
    cand = mpc.reachable(22.0, 16.0)
    chw = np.asarray(cand.setpoints.chilled_water_c)[:, 0]
    assert (np.abs(chw - 16.0) <= mpc.cfg.max_step_k + 1e-6).all()
    assert (np.abs(cand.supply_air_c[:, 0] - 22.0) <= mpc.cfg.max_step_k + 1e-6).all()
    assert len(np.unique(cand.chw_delta_t_k)) > 1  # a pump move is in reach


def test_mpc_objective_with_the_pump_action_is_the_total_the_twin_reports() -> None:
    # at the design load (the MPC linearises the power chain there; elsewhere its heat is ~1-2 % off)
    hour = 24 * 30 + 10  # a winter morning: the economiser runs
    mpc, clock = CoolingMpc(MODERN_AIR), Clock(3600.0, 1, start_hour_of_year=hour)
    weather = synthetic_weather(get_climate("temperate"), 0)
    cand = mpc.candidates
    board_w = 1e6
    forecast = Forecast(np.full(1, board_w), weather.t_drybulb_c[hour : hour + 1], weather.t_wetbulb_c[hour : hour + 1])
    predicted, pumps_w = mpc.predicted_cost_w(forecast, 1e6), []
    for pick in (int(np.argmax(cand.chw_delta_t_k[:, 0])), int(np.argmin(cand.chw_delta_t_k[:, 0]))):
        n = len(cand.supply_air_c)
        sp = Setpoints(
            *(np.broadcast_to(getattr(cand.setpoints, f), (n, 1))[pick, 0] for f in Setpoints.__dataclass_fields__)
        )
        twin = run_twin(MODERN_AIR, np.full(1, board_w), clock, 1e6, weather, setpoints=sp).series
        cool_inlet = run_twin(
            MODERN_AIR, np.full(1, board_w), clock, 1e6, weather, setpoints=Setpoints(20.0, 14.0)
        ).series
        extra_it_w = float(twin["it_power_w"][0] - cool_inlet["it_power_w"][0])
        assert float(predicted[pick]) == pytest.approx(float(twin["cooling_power_w"][0]) + extra_it_w, rel=0.01)
        pumps_w.append(float(twin["cooling_pump_w"][0]))
    assert pumps_w[0] < 0.9 * pumps_w[1]  # the wide delta T's pumps: the action reaches the twin


def test_pumping_falls_from_fixed_to_g36_to_mpc_over_a_month() -> None:
    clock = Clock(3600.0, 24 * 30, start_hour_of_year=24 * 100)  # April: economiser and chiller hours
    load = 1e6 * (0.7 + 0.15 * np.cos(2 * np.pi * (np.arange(clock.n_steps) % 24 - 15) / 24))
    runs = {
        c: run_controlled_twin(MODERN_AIR, load, clock, ControlConfig(c, interval_s=3600.0))
        for c in ("fixed", "g36", "mpc")
    }
    pumps = {c: float(r.twin.series["cooling_pump_w"].sum()) for c, r in runs.items()}
    assert pumps["mpc"] < pumps["g36"] < pumps["fixed"]
    cooling = {c: float(r.twin.series["cooling_power_w"].sum()) for c, r in runs.items()}
    assert cooling["mpc"] < cooling["g36"]
    assert runs["mpc"].twin.series["inlet_c"].max() <= 27.0
    assert np.nanmax(runs["mpc"].twin.series["sp_chw_delta_t_k"]) > COOL.chw_delta_t_design_k
