"""The twin with a controller in the loop: conservation, equivalence with the fixed-rule twin, no peeking."""

import dataclasses

import numpy as np
import pytest

from joulepath.facility import Clock, run_twin
from joulepath.facility.cooling import Setpoints, fixed_setpoints, rack_inlet_c, run_cooling, server_fan_factor
from joulepath.facility.feedback import Forecast, History, Persistence, PlantState, interval_means, run_controlled
from joulepath.facility.presets import HYPERSCALE_LIQUID, MODERN_AIR

WEEK = Clock(60.0, 60 * 24 * 7, start_hour_of_year=24 * 180)  # a summer week at 1-minute steps
LOAD = 1e6 * (0.7 + 0.2 * np.sin(np.arange(WEEK.n_steps) / 300.0) ** 2)


@dataclasses.dataclass
class Stepper:
    """A controller that walks the supply air up and down every interval (exercises every setpoint)."""

    name: str = "stepper"
    calls: int = 0

    def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
        self.calls += 1
        sa = 18.0 + (self.calls % 9)
        tower_k = float("nan") if self.calls % 3 == 0 else 1.0 + self.calls % 6  # some steps keep the fixed rule
        return Setpoints(
            sa, sa - 6.0, 28.0 + self.calls % 5, float(self.calls % 2), 0.85 + 0.05 * (self.calls % 4), tower_k
        )


@pytest.mark.parametrize("cfg", [MODERN_AIR, HYPERSCALE_LIQUID], ids=["air", "liquid"])
def test_energy_is_conserved_at_every_step_under_control(cfg) -> None:  # type: ignore[no-untyped-def]
    s = run_controlled(cfg, LOAD, WEEK, Stepper()).twin.series
    parts = s["it_power_w"] + s["chain_loss_w"] + s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"]
    parts = parts + s["heat_rejection_fan_w"] + s["aux_power_w"]
    np.testing.assert_allclose(parts, s["facility_power_w"], rtol=1e-12)
    np.testing.assert_allclose(
        s["cooling_power_w"],
        s["crah_fan_w"] + s["chiller_w"] + s["cooling_pump_w"] + s["heat_rejection_fan_w"],
        rtol=1e-12,
    )
    supply = s["grid_import_w"] + s["onsite_used_w"] + s["storage_discharge_w"] - s["storage_charge_w"]
    np.testing.assert_allclose(supply, s["facility_power_w"], rtol=1e-9, atol=1e-6)
    assert len(np.unique(s["sp_supply_air_c"])) > 5  # the setpoints really changed
    assert len(np.unique(s["sp_tower_approach_k"][np.isfinite(s["sp_tower_approach_k"])])) == 4


def test_design_setpoints_in_the_loop_give_the_fixed_rule_twins_energy() -> None:
    class Design:
        name = "design"

        def decide(self, state: PlantState, forecast: Forecast) -> Setpoints:
            return fixed_setpoints(MODERN_AIR.cooling)

    controlled = run_controlled(MODERN_AIR, LOAD, WEEK, Design()).twin
    plain = run_twin(MODERN_AIR, LOAD, WEEK)
    for name in ("it_power_w", "chiller_w", "crah_fan_w", "facility_power_w", "water_l"):
        np.testing.assert_allclose(controlled.series[name], plain.series[name], rtol=1e-12)


def test_the_loop_observes_the_inlet_the_twin_records_and_never_the_future() -> None:
    seen: list[int] = []

    class Spy:
        def forecast(self, history: History, horizon_intervals: int) -> Forecast:
            seen.append(len(history.it_board_w))
            return Persistence().forecast(history, horizon_intervals)

    run = run_controlled(MODERN_AIR, LOAD, WEEK, Stepper(), Spy(), interval_steps=15)
    np.testing.assert_allclose(run.inlet_observed_c, run.twin.series["inlet_c"])
    assert seen == list(range(WEEK.n_steps // 15)) and len(run.decisions) == WEEK.n_steps // 15
    np.testing.assert_allclose(interval_means(np.arange(7.0), 3), [1.0, 4.0, 6.0])


def test_setpoints_act_through_sourced_physics() -> None:
    cool, heat = MODERN_AIR.cooling, np.full(3, 1e6)
    wet, dry = np.full(3, 14.0), np.full(3, 20.0)

    def run(sp: Setpoints):  # type: ignore[no-untyped-def]
        return run_cooling(cool, heat, 1e6, dry, wet, sp)

    cold, warm = run(Setpoints(18.0, 12.0)), run(Setpoints(24.0, 18.0))
    assert warm.chiller_w.sum() < cold.chiller_w.sum() and warm.free_cooling_frac[0] > cold.free_cooling_frac[0]
    assert run(Setpoints(24.0, 18.0, economiser_flag=0.0)).chiller_w.sum() > warm.chiller_w.sum()
    starved = run(Setpoints(24.0, 18.0, airflow_ratio_frac=0.85))
    assert starved.crah_fan_w[0] == pytest.approx(warm.crah_fan_w[0] * 0.85**3)
    assert starved.inlet_c[0] > warm.inlet_c[0] + 1.0
    assert float(rack_inlet_c(cool, Setpoints(18.0, 16.0))) > 22.0  # the coil cannot beat water + approach
    assert float(server_fan_factor(cool, np.array(24.0))) == 1.0 < float(server_fan_factor(cool, np.array(27.0)))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="clock has"):
        run_controlled(MODERN_AIR, LOAD[:10], WEEK, Stepper())
