"""Variable condenser-water flow: the condensing temperature, the tower, the economiser's exchanger, the
pumps, and energy conservation in a controlled run. The epsilon-NTU answers are checked against the
log-mean temperature difference (Q = UA x LMTD), an independent form of the same exchanger."""

import dataclasses
import math

import numpy as np
import pytest

from joulepath.facility import Clock
from joulepath.facility.cooling import (
    Setpoints,
    chiller_cop,
    condenser_lift_rise_k,
    condenser_pump_power_frac,
    economiser_hx_rise_k,
    run_cooling,
    tower_flow_approach_factor,
)
from joulepath.facility.feedback import Forecast, PlantState, run_controlled
from joulepath.facility.presets import MODERN_AIR

COOL = MODERN_AIR.cooling
DESIGN_W = 1e6
FLOWS = (0.6, 0.7, 0.8, 0.9)


def _lmtd(dt_a_k: float, dt_b_k: float) -> float:
    return dt_a_k if math.isclose(dt_a_k, dt_b_k) else (dt_a_k - dt_b_k) / math.log(dt_a_k / dt_b_k)


def _plant(sp: Setpoints, load_frac: float = 0.7, wet_bulb_c: float = 24.0):  # type: ignore[no-untyped-def]
    heat = np.full(1, load_frac * DESIGN_W)
    return run_cooling(COOL, heat, DESIGN_W, np.full(1, wet_bulb_c + 8.0), np.full(1, wet_bulb_c), sp)


def test_less_condenser_flow_raises_the_condensing_temperature_as_the_exchanger_says() -> None:
    rise = [float(condenser_lift_rise_k(COOL, f)) for f in (*FLOWS, 1.0)]
    assert rise[-1] == 0.0 and (np.diff(rise) < 0).all()
    # condensing refrigerant: Q = UA x LMTD with the water from T_in to T_in + range / f
    range_k, r_w = COOL.cw_range_design_k, COOL.cond_water_resistance_frac
    span_d_k = range_k + COOL.cond_leaving_approach_k  # condensing - entering water at design flow
    ua_d = range_k / _lmtd(span_d_k, COOL.cond_leaving_approach_k)  # per unit of design m cp
    for f, rise_k in zip(FLOWS, rise, strict=False):
        span_k = span_d_k + rise_k
        ua = ua_d / (1 - r_w + r_w * f**-0.8)  # the water film ~ velocity^0.8
        assert ua * _lmtd(span_k, span_k - range_k / f) == pytest.approx(range_k, rel=1e-9)


def test_less_condenser_flow_costs_chiller_power_at_the_same_condenser_water() -> None:
    # economiser off, a setpoint every flow's tower can make: the entering water is the same
    chiller = []
    for f in (*FLOWS, 1.0):
        sp = Setpoints(22.0, 16.0, economiser_flag=0.0, tower_approach_k=4.0, cw_flow_frac=f)
        chiller.append(float(_plant(sp).chiller_w[0]))
        t_cond_c = 24.0 + 4.0 + 2.0 + float(condenser_lift_rise_k(COOL, f))
        assert chiller[-1] == pytest.approx(0.7 * DESIGN_W / float(chiller_cop(14.0, np.array(t_cond_c), 0.5)))
    assert (np.diff(chiller) < 0).all()


def test_less_water_through_the_tower_leaves_colder() -> None:
    factor = [float(tower_flow_approach_factor(COOL, f)) for f in (*FLOWS, 1.0)]
    assert factor[-1] == 1.0 and (np.diff(factor) > 0).all()
    # counterflow on enthalpy, air capacity rate 1 and water m* x f: Q = UA x LMTD, UA ~ L^(1 - n)
    m, n = COOL.tower_water_air_ratio, COOL.tower_ua_airflow_exp
    heat = m * COOL.cw_range_design_k
    approach_d_k = COOL.tower_approach_k
    ua_d = heat / _lmtd(approach_d_k + COOL.cw_range_design_k - heat, approach_d_k)
    for f, ratio in zip(FLOWS, factor, strict=False):
        approach_k = ratio * approach_d_k
        hot_end_k = approach_k + heat / (m * f) - heat  # water in - air out
        assert ua_d * f ** (1 - n) * _lmtd(hot_end_k, approach_k) == pytest.approx(heat, rel=1e-9)
    # at full fan speed the chiller then sees colder water than at design flow: less fan power for a setpoint
    fans = [
        float(_plant(Setpoints(22.0, 16.0, 0.0, 0.0, 1.0, 3.0, cw_flow_frac=f)).heat_rejection_fan_w[0])
        for f in (0.6, 1.0)
    ]
    assert fans[0] < fans[1]


def test_the_economiser_needs_colder_tower_water_with_less_flow() -> None:
    rise = [float(economiser_hx_rise_k(COOL, f)) for f in (*FLOWS, 1.0)]
    assert rise[-1] == 0.0 and (np.diff(rise) < 0).all()
    # chilled water (capacity c, delta T) against condenser water (capacity f): Q = UA x LMTD
    c, dt_k, a_k, r_w = (
        COOL.econ_hx_chw_capacity_frac,
        COOL.chw_delta_t_design_k,
        COOL.econ_hx_approach_k,
        COOL.cond_water_resistance_frac,
    )
    heat = c * dt_k
    ua_d = heat / _lmtd(dt_k + a_k - heat, a_k)  # hot end: chilled water in - condenser water out
    for f, rise_k in zip(FLOWS, rise, strict=False):
        span_k = dt_k + a_k + rise_k  # chilled water in - condenser water in
        ua = ua_d / (1 - r_w + r_w * f**-0.8)
        assert ua * _lmtd(span_k - heat / f, span_k - dt_k) == pytest.approx(heat, rel=1e-9)
    # a day the economiser just carries at design flow: less flow leaves part of it to the chiller
    sp = Setpoints(22.0, 16.0, tower_approach_k=4.0, cw_flow_frac=1.0)
    wet_bulb_c = 16.0 - 0.7 * COOL.tower_approach_k  # tower water (full fans) = chilled water
    free = [
        float(_plant(dataclasses.replace(sp, cw_flow_frac=f), 0.7, wet_bulb_c).free_cooling_frac[0]) for f in (0.6, 1.0)
    ]
    assert free[1] == pytest.approx(1.0) and free[0] < 1.0


def test_condenser_pumps_follow_the_affinity_law_with_a_static_head_and_a_floor() -> None:
    s = COOL.cw_static_head_frac
    for f in FLOWS:
        assert float(condenser_pump_power_frac(COOL, f)) == pytest.approx(f * (s + (1 - s) * f * f))
    assert float(condenser_pump_power_frac(COOL, 1.0)) == 1.0
    floor = COOL.pump_min_speed_frac
    assert float(condenser_pump_power_frac(COOL, 0.1)) == pytest.approx(float(condenser_pump_power_frac(COOL, floor)))
    # in the plant: the staged condenser pumps (a W per W of heat at design flow) scale by that fraction
    staged_w = (1 - COOL.chw_pump_share) * COOL.pump_w_per_w * 0.7 * DESIGN_W
    sp = Setpoints(22.0, 16.0, economiser_flag=0.0, tower_approach_k=4.0)
    design_w = float(_plant(sp).pump_w[0])
    for f in (0.6, 0.8):
        pumps_w = float(_plant(dataclasses.replace(sp, cw_flow_frac=f)).pump_w[0])
        assert design_w - pumps_w == pytest.approx(staged_w * (1 - float(condenser_pump_power_frac(COOL, f))))
    # the chiller's minimum flow: asked for less, the plant runs its minimum
    below = _plant(dataclasses.replace(sp, cw_flow_frac=0.3))
    at_min = _plant(dataclasses.replace(sp, cw_flow_frac=COOL.cw_min_flow_frac))
    assert float(below.total_w[0]) == float(at_min.total_w[0])


def test_design_flow_is_today_s_model_exactly() -> None:
    # per-step arrays mixing flows: the design-flow steps match a run without the flow, to the bit
    n = 6
    wet_bulb_c = np.linspace(4.0, 26.0, n)
    heat = np.full(n, 0.7 * DESIGN_W)
    base = Setpoints(22.0, 16.0, tower_approach_k=3.0, chw_delta_t_k=8.5)
    flows = np.array([1.0, 0.6, 1.0, 0.8, np.nan, 1.0])  # NaN: design flow
    mixed = run_cooling(COOL, heat, DESIGN_W, wet_bulb_c + 8, wet_bulb_c, dataclasses.replace(base, cw_flow_frac=flows))
    design = run_cooling(COOL, heat, DESIGN_W, wet_bulb_c + 8, wet_bulb_c, base)
    at_design = np.isnan(flows) | (flows == 1.0)
    for part in ("chiller_w", "pump_w", "heat_rejection_fan_w", "free_cooling_frac"):
        np.testing.assert_array_equal(getattr(mixed, part)[at_design], getattr(design, part)[at_design])
    assert (mixed.pump_w[~at_design] < design.pump_w[~at_design]).all()
    # without a condenser-water setpoint (the fixed-rule tower) the flow does not act
    fixed_rule = Setpoints(22.0, 16.0)
    plain, asked = _plant(fixed_rule), _plant(dataclasses.replace(fixed_rule, cw_flow_frac=0.6))
    assert float(plain.total_w[0]) == float(asked.total_w[0])


@dataclasses.dataclass
class FlowStepper:
    """Walks the condenser flow, the tower setpoint and the supply air every interval."""

    name: str = "flow-stepper"
    calls: int = 0

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        self.calls += 1
        sa = 18.0 + self.calls % 8
        flow = (1.0, 0.8, 0.6, 0.7, float("nan"))[self.calls % 5]
        tower_k = float("nan") if self.calls % 7 == 0 else 1.5 + self.calls % 4
        return Setpoints(sa, sa - 7.0, 30.0, 1.0, 0.95, tower_k, 6.7 + self.calls % 3, 1.0, flow)


def test_energy_is_conserved_with_variable_condenser_flow() -> None:
    clock = Clock(60.0, 60 * 24 * 3, start_hour_of_year=24 * 120)  # spring: economiser and chiller hours
    load = 1e6 * (0.6 + 0.3 * np.sin(np.arange(clock.n_steps) / 200.0) ** 2)
    s = run_controlled(MODERN_AIR, load, clock, FlowStepper()).twin.series
    parts = s["it_power_w"] + s["chain_loss_w"] + s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"]
    parts = parts + s["heat_rejection_fan_w"] + s["aux_power_w"]
    np.testing.assert_allclose(parts, s["facility_power_w"], rtol=1e-12)
    np.testing.assert_allclose(
        s["cooling_power_w"], s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"] + s["heat_rejection_fan_w"]
    )
    flows = s["sp_cw_flow_frac"]
    assert len(np.unique(flows[np.isfinite(flows)])) == 4 and np.isnan(flows).any()
    assert (s["cooling_pump_w"] > 0).all() and np.isfinite(s["cooling_power_w"]).all()
