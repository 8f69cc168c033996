"""The control benchmark's core: one climate's three controllers, savings and goal verdicts."""

import numpy as np

from joulepath.bench import control as bench
from joulepath.control.cooling import CoolingMpc, FixedSetpoint, TrimAndRespond
from joulepath.facility import Clock
from joulepath.facility.weather import get_climate, synthetic_weather

CLOCK = Clock(3600.0, 24 * 21, start_hour_of_year=24 * 190)


def test_it_load_is_bounded_and_shaped() -> None:
    load = bench.it_board_w(Clock(900.0, 96 * 14))
    assert load.min() >= 0.3e6 and load.max() <= 1e6
    hours = np.arange(len(load)) * 0.25 % 24
    assert load[(hours > 13) & (hours < 17)].mean() > load[(hours > 1) & (hours < 5)].mean() * 1.15


def test_three_controllers_savings_and_verdicts() -> None:
    weather = synthetic_weather(get_climate("hot-dry"), 0)
    ctls = (FixedSetpoint(bench.SITE.cooling), TrimAndRespond(bench.SITE.cooling), CoolingMpc(bench.SITE))
    outcomes = [bench.run_one("hot", weather, CLOCK, c, 1)[0] for c in ctls]
    row = bench.savings(outcomes)["hot"]
    assert row["cooling_vs_fixed_pct"] > row["cooling_vs_g36_pct"] > 0
    head = bench.summary(outcomes, outcomes[-1], None)
    assert head["inlet_violation_minutes"] == 0 and head["cooling_saving_vs_fixed_pct_min"] > 0
    assert bench.goal_met("interval_coverage", 0.9) and not bench.goal_met("interval_coverage", 0.95)
    assert bench.goal_met("pue_mae", 0.002) and not bench.goal_met("carbon_mape_day_ahead", 9.5)
