"""The MPC's CDU flow action under the chips' case limit; the baselines keep the design CDU flow."""

import dataclasses

import numpy as np
import pytest

from joulepath.control import CoolingMpc, MpcConfig, TrimAndRespond
from joulepath.control.cooling import DiurnalPersistence, FixedSetpoint
from joulepath.facility import Clock
from joulepath.facility.cooling import Setpoints
from joulepath.facility.feedback import Forecast, PlantState, run_controlled
from joulepath.facility.presets import HYPERSCALE_LIQUID, MODERN_AIR

COOL = HYPERSCALE_LIQUID.cooling
# a W45 loop with GB200-class (1.2 kW) accelerators: the lowest flows would overheat them at high load
HOT_CHIPS = HYPERSCALE_LIQUID.replace(
    climate="hot-dry", cooling=dataclasses.replace(COOL, facility_water_supply_c=45.0, chip_power_w=1200.0)
)


def _state(sp: Setpoints) -> PlantState:
    return PlantState(10, 100.0, sp, 24.0, 8e5, 20.0, 1e6)


def _cdu(sp: Setpoints) -> float:
    return float(np.asarray(sp.cdu_flow_frac))


def test_mpc_config_refuses_bad_cdu_flow_grids() -> None:
    for bad in ((), (1.0, 0.0), (1.2, 0.8), (1.0, -0.5)):
        with pytest.raises(ValueError, match="cdu_flow_frac"):
            MpcConfig(cdu_flow_frac=bad)
    with pytest.raises(ValueError, match="chip_margin_k"):
        MpcConfig(chip_margin_k=-1.0)


def test_air_plants_have_no_cdu_action_and_liquid_plants_the_grid() -> None:
    assert set(np.unique(CoolingMpc(MODERN_AIR).candidates.cdu_flow_frac)) == {1.0}
    liquid = CoolingMpc(HYPERSCALE_LIQUID)
    assert set(np.unique(liquid.candidates.cdu_flow_frac)) == set(MpcConfig().cdu_flow_frac)
    fc = Forecast(np.full(4, 8e5), np.full(4, 30.0), np.full(4, 18.0))
    assert liquid.predicted_chip_case_c(fc, 1e6) is not None
    assert CoolingMpc(MODERN_AIR).predicted_chip_case_c(fc, 1e6) is None
    for ctl in (TrimAndRespond(COOL), FixedSetpoint(COOL)):  # the baselines: design flow (constant delta T)
        assert _cdu(ctl.decide(_state(Setpoints(24.0, 17.0)), fc)) == 1.0


def test_mpc_takes_less_cdu_flow_when_the_chips_allow_and_design_flow_on_a_tie() -> None:
    mpc = CoolingMpc(HYPERSCALE_LIQUID)
    prev = Setpoints(26.0, 19.0, 32.0, tower_approach_k=4.0, chw_delta_t_k=6.7)
    busy = Forecast(np.full(4, 9e5), np.full(4, 30.0), np.full(4, 18.0))
    step = mpc.decide(_state(prev), busy)
    assert _cdu(step) == min(mpc.cfg.cdu_flow_frac)  # W32 and 700 W chips: the limit is far
    chip = mpc.predicted_chip_case_c(busy, 1e6, mpc.reachable(26.0, 19.0))
    assert chip is not None and chip.max() <= COOL.chip_case_max_c - mpc.cfg.chip_margin_k
    # so light a load that every flow asked sits at the CDU's turndown: the same cost, design flow kept
    idle = Forecast(np.full(4, 1e5), np.full(4, 30.0), np.full(4, 18.0))
    assert _cdu(mpc.decide(_state(prev), idle)) == 1.0


def test_mpc_keeps_the_chip_limit_where_low_flow_would_break_it() -> None:
    mpc = CoolingMpc(HOT_CHIPS)
    prev = Setpoints(26.0, 19.0, 45.0, tower_approach_k=4.0, chw_delta_t_k=6.7)
    full = Forecast(np.full(4, 1e6), np.full(4, 40.0), np.full(4, 20.0))
    cand = mpc.reachable(26.0, 19.0)
    chip = mpc.predicted_chip_case_c(full, 1e6, cand)
    assert chip is not None
    limit_c = HOT_CHIPS.cooling.chip_case_max_c - mpc.cfg.chip_margin_k
    assert (chip[cand.cdu_flow_frac[:, 0] == 0.5] > limit_c).any()  # the lowest flow is out at full load
    step = mpc.decide(_state(prev), full)
    assert 0.5 < _cdu(step) < 1.0  # the lowest flow the chips allow


def test_a_hot_year_keeps_every_chip_below_its_limit_and_the_lever_saves_pumping() -> None:
    # July at 1-hour steps in a hot-dry climate, W45 water and 1.2 kW chips; the MPC sees only forecasts
    clock = Clock(3600.0, 24 * 31, start_hour_of_year=24 * 181)
    load = 1e6 * np.clip(0.8 + 0.2 * np.cos(2 * np.pi * (np.arange(clock.n_steps) % 24 - 15) / 24), 0.3, 1.0)

    def run(mpc: CoolingMpc) -> dict[str, np.ndarray]:
        return run_controlled(HOT_CHIPS, load, clock, mpc, DiurnalPersistence(), 1).twin.series

    limit_c = HOT_CHIPS.cooling.chip_case_max_c
    chosen, design = run(CoolingMpc(HOT_CHIPS)), run(CoolingMpc(HOT_CHIPS, MpcConfig(cdu_flow_frac=(1.0,))))
    assert chosen["chip_case_c"].max() <= limit_c
    assert chosen["sp_cdu_flow_frac"].min() < 1.0 and (design["sp_cdu_flow_frac"] == 1.0).all()
    assert chosen["cooling_pump_w"].sum() < 0.95 * design["cooling_pump_w"].sum()
    assert chosen["cooling_power_w"].sum() < design["cooling_power_w"].sum()
    # the check can fail: an MPC blind to the limit (told the chips stand 200 C) overheats them
    blind_cfg = HOT_CHIPS.replace(cooling=dataclasses.replace(HOT_CHIPS.cooling, chip_case_max_c=200.0))
    blind = run(CoolingMpc(blind_cfg))
    assert blind["chip_case_c"].max() > limit_c
