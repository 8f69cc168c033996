"""Cooling controllers: the MPC keeps the inlet limit and beats both baselines on the same weather."""

import numpy as np
import pytest

from joulepath.control import CONTROLLERS, ControlConfig, CoolingMpc, MpcConfig, TrimAndRespond, run_controlled_twin
from joulepath.control.cooling import DiurnalPersistence
from joulepath.facility import Clock
from joulepath.facility.cooling import Setpoints, rack_inlet_c
from joulepath.facility.feedback import Forecast, History, PlantState
from joulepath.facility.presets import MODERN_AIR

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
