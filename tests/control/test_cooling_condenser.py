"""The MPC's condenser-water flow action; the baselines keep design flow."""

import numpy as np
import pytest

from joulepath.control import CoolingMpc, MpcConfig, TrimAndRespond
from joulepath.control.cooling import DiurnalPersistence, FixedSetpoint
from joulepath.facility import Clock, run_twin
from joulepath.facility.cooling import Setpoints
from joulepath.facility.feedback import Forecast, PlantState, run_controlled
from joulepath.facility.presets import MODERN_AIR
from joulepath.facility.weather import get_climate, synthetic_weather

COOL = MODERN_AIR.cooling


def _state(sp: Setpoints) -> PlantState:
    return PlantState(10, 100.0, sp, 24.0, 8e5, 5.0, 1e6)


def _flow(sp: Setpoints) -> float:
    return float(np.asarray(sp.cw_flow_frac))


def test_baselines_keep_the_design_condenser_flow() -> None:
    fc = Forecast(np.full(4, 8e5), np.full(4, 20.0), np.full(4, 14.0))
    for ctl in (TrimAndRespond(COOL), FixedSetpoint(COOL)):
        assert _flow(ctl.decide(_state(Setpoints(20.0, 14.0)), fc)) == 1.0


def test_mpc_cuts_condenser_flow_when_the_economiser_has_margin_and_keeps_it_at_high_lift() -> None:
    mpc = CoolingMpc(MODERN_AIR)
    prev = Setpoints(22.0, 14.5, tower_approach_k=4.0, chw_delta_t_k=8.5)
    cold = Forecast(np.full(4, 9e5), np.full(4, 0.0), np.full(4, -2.0))  # free cooling with margin
    assert _flow(mpc.decide(_state(prev), cold)) == min(mpc.cfg.cw_flow_frac)
    humid = Forecast(np.full(4, 9e5), np.full(4, 35.0), np.full(4, 26.0))  # chiller alone, high lift
    step = mpc.decide(_state(prev), humid)
    assert _flow(step) == 1.0
    # on its own objective less flow costs more there, at the same other setpoints
    cand = mpc.reachable(22.0, 14.5)
    cost = mpc.predicted_cost_w(humid, 1e6, cand)
    same = np.ones(len(cost), dtype=bool)
    for col in ("supply_air_c", "airflow_ratio_frac", "tower_approach_k", "chw_delta_t_k"):
        same &= getattr(cand, col)[:, 0] == float(np.asarray(getattr(step, col)))
    by_flow = {float(f): float(cost[same & (cand.cw_flow_frac[:, 0] == f)][0]) for f in mpc.cfg.cw_flow_frac}
    assert by_flow[1.0] < by_flow[0.8] < by_flow[0.6]


def test_flows_below_the_chillers_minimum_are_not_candidates() -> None:
    mpc = CoolingMpc(MODERN_AIR, MpcConfig(cw_flow_frac=(1.0, 0.5, 0.6, 0.8)))
    assert set(np.unique(mpc.candidates.cw_flow_frac)) == {COOL.cw_min_flow_frac, 0.8, 1.0}


def test_mpc_objective_with_the_condenser_flow_is_the_total_the_twin_reports() -> None:
    hour = 24 * 200 + 15  # a summer afternoon: the chiller runs
    mpc, clock = CoolingMpc(MODERN_AIR), Clock(3600.0, 1, start_hour_of_year=hour)
    weather = synthetic_weather(get_climate("temperate"), 0)
    forecast = Forecast(np.full(1, 1e6), weather.t_drybulb_c[hour : hour + 1], weather.t_wetbulb_c[hour : hour + 1])
    cand, predicted = mpc.candidates, mpc.predicted_cost_w(forecast, 1e6)
    cool_inlet = run_twin(MODERN_AIR, np.full(1, 1e6), clock, 1e6, weather, setpoints=Setpoints(20.0, 14.0)).series
    pumps_w = {}
    for flow in (0.6, 1.0):
        pick = int(np.flatnonzero(cand.cw_flow_frac[:, 0] == flow)[0])
        n = len(cand.supply_air_c)
        fields = Setpoints.__dataclass_fields__
        sp = Setpoints(*(np.broadcast_to(getattr(cand.setpoints, f), (n, 1))[pick, 0] for f in fields))
        twin = run_twin(MODERN_AIR, np.full(1, 1e6), clock, 1e6, weather, setpoints=sp).series
        extra_it_w = float(twin["it_power_w"][0] - cool_inlet["it_power_w"][0])
        assert float(predicted[pick]) == pytest.approx(float(twin["cooling_power_w"][0]) + extra_it_w, rel=0.01)
        pumps_w[flow] = float(twin["cooling_pump_w"][0])
    assert pumps_w[0.6] < 0.9 * pumps_w[1.0]  # the action reaches the twin


def test_the_condenser_flow_lever_cuts_pumping_and_cooling_over_a_month() -> None:
    clock = Clock(3600.0, 24 * 30, start_hour_of_year=24 * 100)  # April: economiser and chiller hours
    load = 1e6 * (0.7 + 0.15 * np.cos(2 * np.pi * (np.arange(clock.n_steps) % 24 - 15) / 24))
    s = {
        name: run_controlled(MODERN_AIR, load, clock, CoolingMpc(MODERN_AIR, cfg), DiurnalPersistence(), 1).twin.series
        for name, cfg in (("chosen", MpcConfig()), ("design", MpcConfig(cw_flow_frac=(1.0,))))
    }
    assert s["chosen"]["cooling_pump_w"].sum() < 0.9 * s["design"]["cooling_pump_w"].sum()
    assert s["chosen"]["cooling_power_w"].sum() < s["design"]["cooling_power_w"].sum()
    assert s["chosen"]["sp_cw_flow_frac"].min() < 1.0 and (s["design"]["sp_cw_flow_frac"] == 1.0).all()
    assert s["chosen"]["inlet_c"].max() <= 27.0
