"""Cold plates and the CDU's flow: the chip's case temperature, the CDU pumps' affinity law, the design flow
as today's model to the bit, and energy conservation in a controlled liquid run."""

import dataclasses

import numpy as np
import pytest

from joulepath.facility import Clock, run_twin
from joulepath.facility.cooling import (
    CoolingConfig,
    Setpoints,
    cdu_secondary_flow_frac,
    chip_case_c,
    pump_power_frac,
    run_cooling,
)
from joulepath.facility.feedback import Forecast, PlantState, run_controlled
from joulepath.facility.presets import HYPERSCALE_LIQUID, IMMERSION, MODERN_AIR

COOL = HYPERSCALE_LIQUID.cooling
DESIGN_W = 1e6
FLOWS = (0.9, 0.8, 0.6, 0.5)


def _plant(sp: Setpoints, load_frac: float = 0.8, cool: CoolingConfig = COOL):  # type: ignore[no-untyped-def]
    """The liquid plant at one operating point (1 MW design heat, a warm dry afternoon)."""
    heat = np.full(1, load_frac * DESIGN_W)
    return run_cooling(cool, heat, DESIGN_W, np.full(1, 30.0), np.full(1, 18.0), sp)


def test_design_cdu_flow_is_today_s_model_exactly() -> None:
    # per-step arrays mixing flows: the design-flow steps match a run without the action, to the bit
    n = 6
    dry_c = np.linspace(5.0, 38.0, n)
    heat = np.linspace(0.35, 1.0, n) * DESIGN_W
    base = Setpoints(26.0, 19.0, 30.0, tower_approach_k=3.0, chw_delta_t_k=8.5, cw_flow_frac=0.8)
    flows = np.array([1.0, 0.5, 1.0, 0.8, np.nan, 0.6])  # NaN: design flow
    mixed = run_cooling(COOL, heat, DESIGN_W, dry_c, dry_c - 8, dataclasses.replace(base, cdu_flow_frac=flows))
    design = run_cooling(COOL, heat, DESIGN_W, dry_c, dry_c - 8, base)
    at_design = np.isnan(flows) | (flows == 1.0)
    for part in ("crah_fan_w", "chiller_w", "pump_w", "heat_rejection_fan_w", "water_l_per_s", "chip_case_c"):
        np.testing.assert_array_equal(getattr(mixed, part)[at_design], getattr(design, part)[at_design])
    assert (mixed.pump_w[~at_design] < design.pump_w[~at_design]).all()
    assert (mixed.chip_case_c[~at_design] > design.chip_case_c[~at_design]).all()
    # without a chilled-water delta T (the fixed-rule pumps) the CDU flow does not act; nor without cold plates
    for cool, sp in ((COOL, Setpoints(26.0, 19.0, 30.0)), (MODERN_AIR.cooling, base), (IMMERSION.cooling, base)):
        plain, asked = _plant(sp, cool=cool), _plant(dataclasses.replace(sp, cdu_flow_frac=0.5), cool=cool)
        assert float(plain.total_w[0]) == float(asked.total_w[0])
        assert plain.chip_case_c is None or float(plain.chip_case_c[0]) == float(asked.chip_case_c[0])
    assert _plant(base, cool=MODERN_AIR.cooling).chip_case_c is None


def test_less_cdu_flow_cuts_the_secondary_pumps_by_the_affinity_law() -> None:
    liquid_design_w = COOL.cdu_pump_w_per_w * COOL.liquid_fraction * DESIGN_W  # CDU + facility-water pumps
    secondary_w = COOL.cdu_secondary_pump_share * liquid_design_w
    for reset in (1.0, 0.0):
        sp = Setpoints(26.0, 19.0, 30.0, chw_delta_t_k=COOL.chw_delta_t_design_k, pump_dp_reset_flag=reset)
        design = _plant(sp)
        design_w = float(design.pump_w[0])
        for f in FLOWS:
            less = _plant(dataclasses.replace(sp, cdu_flow_frac=f))
            saved_w = design_w - float(less.pump_w[0])
            # the saving is the CDU's (the series the twin reports as part of the pumps)
            assert float(design.cdu_pump_w[0] - less.cdu_pump_w[0]) == pytest.approx(saved_w)
            if reset:  # DP reset with the valves: power ~ flow^3, the liquid load at 0.8 of design
                assert saved_w == pytest.approx(secondary_w * (0.8**3 - (0.8 * f) ** 3))
            else:  # a held DP setpoint keeps `pump_fixed_dp_frac` of the head
                held = COOL.pump_fixed_dp_frac

                def power(q: float, held: float = held) -> float:
                    return q * (held + (1 - held) * q * q)

                assert saved_w == pytest.approx(secondary_w * (power(0.8) - power(0.8 * f)))
    # the CDU's turndown: asked for less, it runs its minimum flow (the chip then sees that flow too)
    sp = Setpoints(26.0, 19.0, 30.0, chw_delta_t_k=COOL.chw_delta_t_design_k, cdu_flow_frac=0.2)
    at_min = dataclasses.replace(sp, cdu_flow_frac=COOL.cdu_min_flow_frac / 0.5)
    low, floor = _plant(sp, 0.5), _plant(at_min, 0.5)
    assert float(low.pump_w[0]) == pytest.approx(float(floor.pump_w[0]))
    assert float(low.chip_case_c[0]) == pytest.approx(float(floor.chip_case_c[0]))
    assert float(cdu_secondary_flow_frac(COOL, 0.5, 0.2)) == COOL.cdu_min_flow_frac
    assert float(pump_power_frac(COOL, np.array(0.8), 1.0)) == pytest.approx(0.8**3)


def test_the_chip_warms_as_the_flow_falls_and_with_the_facility_water() -> None:
    # at design flow and full load: facility water + CDU approach + chip power x the inlet-referenced
    # resistance (the published figure): W32 -> 32 + 3 + 700 x 0.025 = 52.5 C
    assert float(chip_case_c(COOL, 1.0, 32.0)) == pytest.approx(32.0 + 3.0 + 700.0 * 0.025)
    temps = [float(chip_case_c(COOL, 1.0, 32.0, f)) for f in (1.0, *FLOWS)]
    assert (np.diff(temps) > 0).all()
    # half the flow: the plate's rise doubles (+ half the design rise at the mean) and the convective
    # resistance grows by 2^exp; the conduction part stays
    r_mean = COOL.cold_plate_r_k_per_w - COOL.cdu_delta_t_design_k / (2 * COOL.chip_power_w)
    r_conv = COOL.cold_plate_conv_frac * r_mean
    extra_k = COOL.cdu_delta_t_design_k / 2 + COOL.chip_power_w * r_conv * (2**COOL.cold_plate_flow_exp - 1)
    assert temps[-1] == pytest.approx(temps[0] + extra_k)
    # the facility water passes straight through (a held setpoint: the CDU's approach on top)
    for f in (1.0, 0.5):
        assert float(chip_case_c(COOL, 0.7, 45.0, f)) - float(chip_case_c(COOL, 0.7, 32.0, f)) == pytest.approx(13.0)
    # a lighter load: a cooler chip at the same flow fraction (less power, the same rise per kW)
    assert float(chip_case_c(COOL, 0.5, 32.0)) < float(chip_case_c(COOL, 1.0, 32.0))
    # a faster-falling resistance (turbulent plates) makes less flow cost more
    turbulent = dataclasses.replace(COOL, cold_plate_flow_exp=0.8)
    assert float(chip_case_c(turbulent, 1.0, 32.0, 0.5)) > temps[-1]
    with pytest.raises(ValueError, match="cold_plate_r"):
        CoolingConfig(kind="liquid", liquid_fraction=0.7, cold_plate_r_k_per_w=0.005)


def test_the_twin_reports_the_chip_temperature_for_cold_plates_only() -> None:
    clock = Clock(3600.0, 24 * 3)
    load = np.linspace(0.4e6, 1e6, clock.n_steps)
    liquid = run_twin(HYPERSCALE_LIQUID, load, clock, 1e6).series
    assert "chip_case_c" not in run_twin(MODERN_AIR, load, clock, 1e6).series
    chip = liquid["chip_case_c"]
    assert (np.diff(chip) > 0).all()  # the load rises, so does the chip
    assert chip.max() == pytest.approx(float(chip_case_c(COOL, liquid["heat_load_w"][-1] / _design_it_w(), 32.0)))


def _design_it_w() -> float:
    """The design IT power the twin sizes the plant for (1 MW of boards through the power chain)."""
    from joulepath.facility.cooling import server_fan_frac
    from joulepath.facility.power_chain import run_chain

    fans = server_fan_frac(COOL)
    return float(run_chain(HYPERSCALE_LIQUID.topology, np.array([1e6 * (1 + fans)]), 1e6 * (1 + fans)).it_power_w[0])


@dataclasses.dataclass
class CduStepper:
    """Walks the CDU flow, the facility water and the pumps every interval; some intervals keep design."""

    name: str = "cdu-stepper"
    calls: int = 0

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        self.calls += 1
        cdu = (1.0, 0.8, 0.6, 0.5, float("nan"))[self.calls % 5]
        dt_k = float("nan") if self.calls % 7 == 0 else 6.7 + self.calls % 3
        sa = 22.0 + self.calls % 5
        return Setpoints(sa, sa - 7.0, 28.0 + self.calls % 3, 1.0, 0.95, 3.5, dt_k, 1.0, 1.0, cdu)


def test_energy_is_conserved_with_the_cdu_flow_in_a_controlled_liquid_run() -> None:
    clock = Clock(60.0, 60 * 24 * 3, start_hour_of_year=24 * 190)  # summer: dry coolers, trim and chiller
    load = 1e6 * (0.6 + 0.3 * np.sin(np.arange(clock.n_steps) / 200.0) ** 2)
    s = run_controlled(HYPERSCALE_LIQUID, load, clock, CduStepper()).twin.series
    parts = s["it_power_w"] + s["chain_loss_w"] + s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"]
    parts = parts + s["heat_rejection_fan_w"] + s["aux_power_w"]
    np.testing.assert_allclose(parts, s["facility_power_w"], rtol=1e-12)
    np.testing.assert_allclose(
        s["cooling_power_w"],
        s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"] + s["heat_rejection_fan_w"],
        rtol=1e-12,
    )
    flows = s["sp_cdu_flow_frac"]
    assert len(np.unique(flows[np.isfinite(flows)])) == 4 and np.isnan(flows).any()
    assert np.isfinite(s["chip_case_c"]).all() and (s["cooling_pump_w"] > 0).all()
    assert (s["cdu_pump_w"] > 0).all() and (s["cdu_pump_w"] < s["cooling_pump_w"]).all()  # a part of the pumps
    # the chip follows the setpoints the twin was given: at the same facility water, half the flow runs
    # hotter by more than the plate's extra mean rise alone (half the design delta T: 5 K)
    same_fw = np.isclose(s["sp_facility_water_c"], 30.0) & np.isfinite(s["sp_chw_delta_t_k"])
    half, design = same_fw & np.isclose(flows, 0.5), same_fw & np.isclose(flows, 1.0)
    assert half.any() and design.any()
    assert s["chip_case_c"][half].mean() > s["chip_case_c"][design].mean() + 0.5 * COOL.cdu_delta_t_design_k
