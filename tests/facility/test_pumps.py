"""Variable-flow pumping: affinity laws, the VFD floor, flow from heat and delta T, the coil's approach."""

import dataclasses

import numpy as np
import pytest

from joulepath.facility import Clock
from joulepath.facility.cooling import (
    CoolingConfig,
    Setpoints,
    coil_approach_k,
    pump_power_frac,
    rack_inlet_c,
    run_cooling,
)
from joulepath.facility.feedback import Forecast, PlantState, run_controlled
from joulepath.facility.presets import HYPERSCALE_LIQUID, MODERN_AIR

COOL = MODERN_AIR.cooling
DESIGN_W = 1e6


def _pumps_w(load_frac: float, sp: Setpoints, cool: CoolingConfig = COOL) -> float:
    """Pump power (W) of the plant at one operating point (1 MW design heat, a cool dry day)."""
    heat = np.full(1, load_frac * DESIGN_W)
    return float(run_cooling(cool, heat, DESIGN_W, np.full(1, 20.0), np.full(1, 14.0), sp).pump_w[0])


def test_pump_power_follows_the_affinity_law_above_the_vfd_floor() -> None:
    flows = np.array([0.4, 0.6, 0.8, 1.0])
    reset = pump_power_frac(COOL, flows, 1.0)
    np.testing.assert_allclose(reset, flows**3)  # DP reset: head ~ flow^2, power ~ flow^3
    held = pump_power_frac(COOL, flows, 0.0)
    assert (held[:-1] > reset[:-1]).all() and held[-1] == pytest.approx(1.0)  # a fixed DP setpoint costs more
    assert float(pump_power_frac(COOL, np.array(0.5), 0.0)) <= 0.30 + 1e-3  # ASHRAE 90.1 6.5.4.2: <= 30 % at 50 %
    # below the VFD's minimum speed the pump runs at that speed (the rest bypasses): power stops falling
    floor = COOL.pump_min_speed_frac**3
    np.testing.assert_allclose(pump_power_frac(COOL, np.array([0.0, 0.1, COOL.pump_min_speed_frac]), 1.0), floor)


def test_chilled_water_flow_follows_heat_over_delta_t() -> None:
    dt_k = COOL.chw_delta_t_design_k
    chw_design_w = COOL.chw_pump_share * COOL.pump_w_per_w * DESIGN_W
    staged_w_per_w = (1.0 - COOL.chw_pump_share) * COOL.pump_w_per_w  # condenser water: staged with the heat
    for load in (0.5, 0.8, 1.0):
        expected = chw_design_w * load**3 + staged_w_per_w * load * DESIGN_W
        assert _pumps_w(load, Setpoints(22.0, 16.0, chw_delta_t_k=dt_k)) == pytest.approx(expected)
    # a delta T 1.6 x the design needs 1 / 1.6 of the flow: the chilled-water pumps draw 1 / 1.6^3
    wide = _pumps_w(0.8, Setpoints(22.0, 14.0, chw_delta_t_k=1.6 * dt_k)) - staged_w_per_w * 0.8 * DESIGN_W
    assert wide == pytest.approx(chw_design_w * (0.8 / 1.6) ** 3)
    # at a light load the pumps sit at their floor whatever the delta T
    light = [_pumps_w(0.2, Setpoints(22.0, 14.0, chw_delta_t_k=k)) for k in (dt_k, 10.0)]
    assert light[0] == pytest.approx(light[1])
    # without a delta T the fixed rule: a W per W of heat (what the uncontrolled twin runs)
    assert _pumps_w(0.5, Setpoints(22.0, 16.0)) == pytest.approx(COOL.pump_w_per_w * 0.5 * DESIGN_W)


def test_less_water_through_the_coil_needs_colder_water_for_the_same_supply_air() -> None:
    dt_k = COOL.chw_delta_t_design_k
    assert float(coil_approach_k(COOL, dt_k, 1.0)) == pytest.approx(COOL.coil_approach_k)
    approaches = [float(coil_approach_k(COOL, k, 1.0)) for k in (dt_k, 8.0, 9.5, 11.0)]
    assert approaches == sorted(approaches) and len(set(approaches)) == 4
    assert float(coil_approach_k(COOL, float("nan"), 0.85)) == COOL.coil_approach_k  # the fixed rule
    assert float(coil_approach_k(COOL, dt_k, 0.85)) > COOL.coil_approach_k  # less, hotter air: a bigger approach
    vector = coil_approach_k(COOL, np.array([[dt_k], [11.0]]), np.array([[1.0], [1.0]]))
    np.testing.assert_allclose(np.asarray(vector)[:, 0], [approaches[0], approaches[-1]])
    # chilled water too warm for the delta T: the coil cannot make the supply air, the inlet warms
    sp = Setpoints(22.0, 16.0, chw_delta_t_k=11.0)
    assert float(rack_inlet_c(COOL, sp)) == pytest.approx(16.0 + approaches[-1] + 0.05 / 0.95 * 12.0)


def test_liquid_loop_pumps_run_at_the_flow_its_heat_needs() -> None:
    cool = HYPERSCALE_LIQUID.cooling
    fixed_rule = _pumps_w(0.5, Setpoints(26.0, 20.0), cool)
    variable = _pumps_w(0.5, Setpoints(26.0, 20.0, chw_delta_t_k=cool.chw_delta_t_design_k), cool)
    cdu_w = cool.cdu_pump_w_per_w * DESIGN_W * cool.liquid_fraction * 0.5**3
    air_w = cool.chw_pump_share * cool.pump_w_per_w * DESIGN_W * (1 - cool.liquid_fraction) * 0.5**3
    staged_w = (1 - cool.chw_pump_share) * cool.pump_w_per_w * DESIGN_W * (1 - cool.liquid_fraction) * 0.5
    assert variable == pytest.approx(cdu_w + air_w + staged_w)
    assert variable < fixed_rule


@dataclasses.dataclass
class PumpStepper:
    """Walks the delta T, the DP reset and the supply air every interval; some intervals keep the fixed rule."""

    name: str = "pump-stepper"
    calls: int = 0

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        self.calls += 1
        dt_k = float("nan") if self.calls % 4 == 0 else 6.7 + self.calls % 5
        sa = 18.0 + self.calls % 8
        return Setpoints(sa, sa - 8.0, 30.0, 1.0, 0.9 + 0.05 * (self.calls % 3), 4.0, dt_k, float(self.calls % 2))


@pytest.mark.parametrize("cfg", [MODERN_AIR, HYPERSCALE_LIQUID], ids=["air", "liquid"])
def test_energy_is_conserved_with_variable_flow_pumping(cfg) -> None:  # type: ignore[no-untyped-def]
    clock = Clock(60.0, 60 * 24 * 3, start_hour_of_year=24 * 200)
    load = 1e6 * (0.6 + 0.3 * np.sin(np.arange(clock.n_steps) / 200.0) ** 2)
    s = run_controlled(cfg, load, clock, PumpStepper()).twin.series
    parts = s["it_power_w"] + s["chain_loss_w"] + s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"]
    parts = parts + s["heat_rejection_fan_w"] + s["aux_power_w"]
    np.testing.assert_allclose(parts, s["facility_power_w"], rtol=1e-12)
    assert np.isnan(s["sp_chw_delta_t_k"]).any() and len(np.unique(s["sp_pump_dp_reset_flag"])) == 2
    assert (s["cooling_pump_w"] > 0).all()
    # the pumps follow the setpoints the twin was given: per W of IT load, a wider loop delta T (less flow)
    # draws less pump power than the design delta T under the same DP rule
    per_w = s["cooling_pump_w"] / s["it_power_w"]
    for flag in (0.0, 1.0):
        same = s["sp_pump_dp_reset_flag"] == flag
        narrow = same & np.isclose(s["sp_chw_delta_t_k"], 6.7)
        wide = same & np.isclose(s["sp_chw_delta_t_k"], 10.7)
        assert narrow.any() and wide.any() and per_w[wide].mean() < per_w[narrow].mean()
