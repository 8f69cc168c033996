"""The supply side of the feedback loop: battery dispatch and admission of deferrable work as a
controller's actions, with the backlog and the battery's energy conserved and deadlines kept."""

import dataclasses

import numpy as np
import pytest

from joulepath.control.cooling import FixedSetpoint
from joulepath.control.supply import CarbonAwareSupply
from joulepath.facility import Clock
from joulepath.facility.feedback import Forecast, SupplyActions, SupplyState, run_controlled
from joulepath.facility.grid import GridSignal
from joulepath.facility.presets import MODERN_AIR
from joulepath.facility.supply import StorageConfig, battery_step, dispatch

WEEK = Clock(60.0, 60 * 24 * 7)
HOURS = np.arange(8760)
GRID = GridSignal(  # a dirty evening, a clean night (synthetic)
    "synthetic", 400.0 + 150.0 * np.cos(2 * np.pi * (HOURS % 24 - 18) / 24), np.full(8760, 0.1), "synthetic"
)
LOAD = 1e6 * (0.6 + 0.15 * np.cos(2 * np.pi * (np.arange(WEEK.n_steps) / 60 % 24 - 15) / 24))
BATTERY = StorageConfig(energy_wh=4 * 2e5, power_w=2e5)
SITE = dataclasses.replace(MODERN_AIR, storage=BATTERY)


@dataclasses.dataclass
class Hold:
    """Admits only interactive work (the deadline guard alone releases the rest); battery as given."""

    battery_w: float = 0.0
    name: str = "hold"

    def decide(self, state: SupplyState, forecast: Forecast) -> SupplyActions:
        return SupplyActions(battery_w=self.battery_w, admit_board_w=0.0)


def _run(supply, frac: float = 0.25, deadline_s: float = 12 * 3600.0, cfg=SITE):  # type: ignore[no-untyped-def]
    return run_controlled(
        cfg,
        LOAD,
        WEEK,
        FixedSetpoint(cfg.cooling),
        grid=GRID,
        supply=supply,
        deferrable_frac=frac,
        deadline_s=deadline_s,
    )


def test_offered_work_is_admitted_or_waits_and_none_is_late() -> None:
    run = _run(Hold())
    sup = run.supply
    assert sup is not None
    offered_j = LOAD.sum() * WEEK.dt_s
    admitted_j = run.twin.series["it_board_w"].sum() * WEEK.dt_s
    assert admitted_j + sup.backlog_j[-1] == pytest.approx(offered_j, rel=1e-12)
    assert sup.late_j == 0.0
    assert sup.max_wait_s <= 12 * 3600.0
    assert sup.backlog_j.max() > 0.2 * 12 * 3600 * LOAD.mean()  # the work really waited


def test_admission_never_exceeds_the_plants_design_board_power() -> None:
    run = _run(CarbonAwareSupply(BATTERY))
    assert run.twin.series["it_board_w"].max() <= LOAD.max() * (1 + 1e-12)


def test_commanded_battery_is_what_the_twin_dispatches_and_energy_balances() -> None:
    run = _run(Hold(battery_w=-1e5), frac=0.0)  # charge at half power until full
    s, sup = run.twin.series, run.supply
    assert sup is not None
    ends = np.arange(15, WEEK.n_steps + 1, 15) - 1
    np.testing.assert_allclose(s["storage_soc_wh"][ends], sup.soc_wh, rtol=1e-9)
    assert sup.soc_wh[-1] == pytest.approx(BATTERY.soc_max_frac * BATTERY.energy_wh)
    assert s["storage_charge_w"].max() == pytest.approx(1e5)
    supply = s["grid_import_w"] + s["onsite_used_w"] + s["storage_discharge_w"] - s["storage_charge_w"]
    np.testing.assert_allclose(supply, s["facility_power_w"], rtol=1e-9, atol=1e-6)


def test_carbon_aware_supply_cuts_co2_per_unit_of_work_with_no_late_work() -> None:
    now = _run(Hold(battery_w=0.0), frac=0.0)  # run-now: nothing deferred, battery idle
    aware = _run(CarbonAwareSupply(BATTERY))
    assert aware.supply is not None and aware.supply.late_j == 0.0 and aware.supply.overdue_at_end_j == 0.0

    def per_work(run) -> float:  # type: ignore[no-untyped-def]  # g per J of IT work done
        return float(run.twin.metrics.carbon_g / run.twin.series["it_board_w"].sum())

    assert per_work(aware) < 0.97 * per_work(now)


def test_loop_and_twin_agree_on_the_battery_with_solar_on_site() -> None:
    from joulepath.facility.supply import SolarConfig

    solar = dataclasses.replace(SITE, solar=SolarConfig(capacity_w=4e6))

    @dataclasses.dataclass
    class Daytime:
        name: str = "daytime-discharge"

        def decide(self, state: SupplyState, forecast: Forecast) -> SupplyActions:
            day = 9 <= state.hour_of_year % 24 < 16
            return SupplyActions(battery_w=2e5 if day else -2e5)

    run = _run(Daytime(), frac=0.0, cfg=solar)
    assert run.supply is not None and run.twin.series["onsite_used_w"].max() > 0
    ends = np.arange(15, WEEK.n_steps + 1, 15) - 1
    np.testing.assert_allclose(run.twin.series["storage_soc_wh"][ends], run.supply.soc_wh, rtol=1e-9, atol=1e-3)


def test_a_supply_controller_sees_only_the_past() -> None:
    seen: list[float] = []

    @dataclasses.dataclass
    class Watch:
        name: str = "watch"

        def decide(self, state: SupplyState, forecast: Forecast) -> SupplyActions:
            seen.append(state.offered_board_w)
            return SupplyActions()

    load = np.repeat([123.0, 456.0, 789.0], 15)
    run_controlled(SITE, load, Clock(60.0, 45), FixedSetpoint(SITE.cooling), grid=GRID, supply=Watch())
    assert np.isnan(seen[0]) and seen[1:] == [123.0, 456.0]


def test_work_still_waiting_past_its_deadline_at_the_end_is_reported() -> None:
    """A plant too small for its backlog: what it could not serve by the deadline shows, admitted or not."""
    run = run_controlled(
        SITE, LOAD, WEEK, FixedSetpoint(SITE.cooling), grid=GRID, supply=Hold(), deferrable_frac=0.5,
        deadline_s=3600.0, design_board_w=0.55 * LOAD.max(),
    )  # fmt: skip
    sup = run.supply
    assert sup is not None and sup.late_j > 0 and sup.overdue_at_end_j > 0
    assert sup.overdue_at_end_j <= sup.backlog_j[-1] * (1 + 1e-12)


@pytest.mark.parametrize("action", [SupplyActions(battery_w=float("nan")), SupplyActions(admit_board_w=float("nan"))])
def test_non_finite_supply_actions_are_refused(action: SupplyActions) -> None:
    @dataclasses.dataclass
    class Bad:
        name: str = "bad"

        def decide(self, state: SupplyState, forecast: Forecast) -> SupplyActions:
            return action

    with pytest.raises(ValueError, match=r"battery_w|admit_board_w"):
        _run(Bad())


def test_battery_step_clips_to_power_bounds_and_demand() -> None:
    st = StorageConfig(energy_wh=1000.0, power_w=500.0)
    charge, discharge, level = battery_step(850.0, -500.0, 1e6, st, 1.0)  # room for 50 Wh of charge
    assert discharge == 0.0 and level == pytest.approx(900.0)
    assert charge == pytest.approx(50.0 / st.charge_efficiency)
    charge, discharge, level = battery_step(500.0, 800.0, 300.0, st, 1.0)  # no export past the demand
    assert (charge, discharge) == (0.0, 300.0)


def test_dispatch_follows_a_command_and_the_rule_where_it_is_nan() -> None:
    n = 4
    st = StorageConfig(energy_wh=1000.0, power_w=100.0, charge_below_usd_per_kwh=0.0)
    cmd = np.array([100.0, np.nan, -50.0, 0.0])
    d = dispatch(np.full(n, 400.0), np.zeros(n), np.full(n, 0.1), np.zeros(n), 1e9, st, 3600.0, cmd)
    assert d.discharge_w.tolist() == [100.0, 0.0, 0.0, 0.0]
    assert d.charge_w.tolist() == [0.0, 0.0, 50.0, 0.0]
    with pytest.raises(ValueError, match="command_w"):
        dispatch(np.full(n, 1.0), np.zeros(n), np.zeros(n), np.zeros(n), 1e9, st, 3600.0, np.zeros(3))


@pytest.mark.parametrize(("frac", "deadline_s", "match"), [(1.5, 3600.0, "deferrable_frac"), (0.2, 60.0, "deadline")])
def test_bad_supply_arguments_are_refused(frac: float, deadline_s: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _run(Hold(), frac=frac, deadline_s=deadline_s)
