"""Shifting batch work with a battery: work conserved, deadlines met, interactive load untouched, the
oracle bounds the online policy, and each piece of the linear program does what it says."""

import numpy as np
import pytest

from joulepath.control.shift import (
    BatchJobs,
    ShiftConfig,
    diurnal_ar1_forecast,
    oracle,
    receding_horizon,
    run_now,
    savings,
    shift_problem,
    solve_plan,
)
from joulepath.facility.grid import Tariff, get_grid_profile, synthetic_grid

HOURS = 24 * 10


def _load_w(n: int = HOURS, seed: int = 0) -> np.ndarray:
    """A daily-shaped load with noise, peak 1 MW."""
    rng = np.random.default_rng(seed)
    hod = np.arange(n) % 24
    return 1e6 * np.clip(0.7 + 0.15 * np.cos(2 * np.pi * (hod - 15) / 24) + rng.normal(0, 0.03, n), 0.3, 1.0)


@pytest.fixture(scope="module")
def runs() -> tuple:
    grid = synthetic_grid(get_grid_profile("erco"), seed=1)
    p = shift_problem(_load_w(), grid.carbon_g_per_kwh, grid.price_usd_per_kwh, ShiftConfig(horizon_h=36))
    return p, run_now(p), oracle(p), receding_horizon(p)


def test_work_is_conserved_and_interactive_never_moves(runs: tuple) -> None:
    p, base, best, online = runs
    for o in (base, best, online):
        assert o.batch_w.sum() == pytest.approx(p.jobs.energy_wh.sum(), rel=1e-6)
        # grid import = interactive + batch + battery: the interactive series is the same in every policy
        np.testing.assert_allclose(o.grid_w - o.batch_w - o.charge_w + o.discharge_w, p.interactive_w, rtol=1e-9)
    np.testing.assert_allclose(base.batch_w + p.interactive_w, _load_w())
    assert not np.allclose(online.batch_w, base.batch_w)  # something was actually shifted


def test_no_deadline_missed_and_capacity_respected(runs: tuple) -> None:
    p, _, best, online = runs
    assert best.missed_jobs == online.missed_jobs == 0
    for o in (best, online):
        assert np.all(p.interactive_w + o.batch_w <= p.capacity_w * (1 + 1e-9))
        assert np.all(o.grid_w >= -1e-6)  # no export


def test_no_job_runs_before_arrival_or_after_deadline_in_the_oracle(runs: tuple) -> None:
    p, _, best, _ = runs
    # cumulative batch work never exceeds what has arrived, and covers what is due
    arrived = np.cumsum(np.bincount(p.jobs.arrival_h, weights=p.jobs.energy_wh, minlength=p.n_hours))
    due = np.cumsum(np.bincount(p.jobs.deadline_h - 1, weights=p.jobs.energy_wh, minlength=p.n_hours))
    done = np.cumsum(best.batch_w)
    assert np.all(done <= arrived * (1 + 1e-9) + 1e-3)
    assert np.all(done >= due * (1 - 1e-9) - 1e-3)


def test_battery_within_bounds_and_back_to_mid_charge(runs: tuple) -> None:
    p, base, best, online = runs
    b = p.battery
    assert np.all(base.charge_w == 0) and np.all(base.discharge_w == 0)
    for o in (best, online):
        assert o.soc_wh.min() >= b.soc_min_wh - 1e-3 and o.soc_wh.max() <= b.soc_max_wh + 1e-3
        assert o.charge_w.max() <= b.power_w + 1e-6 and o.discharge_w.max() <= b.power_w + 1e-6
    assert best.soc_wh[-1] >= b.soc_mid_wh - 1e-3
    assert best.discharge_w.sum() > 0  # the price spread makes the battery worth using


def test_oracle_bounds_the_online_policy_and_both_beat_run_now(runs: tuple) -> None:
    _, base, best, online = runs
    assert best.objective <= online.objective + 1e-6 <= base.objective
    s = savings(base, online, best)
    assert 0.0 < s.oracle_fraction <= 1.0 + 1e-9
    assert savings(base, best, best).oracle_fraction == 1.0
    assert s.cost_cut_pct > 0


def test_carbon_only_objective_cuts_carbon_at_least_as_much() -> None:
    grid = synthetic_grid(get_grid_profile("erco"), seed=2)
    mixed = shift_problem(_load_w(), grid.carbon_g_per_kwh, grid.price_usd_per_kwh, ShiftConfig(carbon_weight=0.5))
    green = shift_problem(_load_w(), grid.carbon_g_per_kwh, grid.price_usd_per_kwh, ShiftConfig(carbon_weight=1.0))
    assert oracle(green).co2_kg <= oracle(mixed).co2_kg + 1e-6
    assert oracle(green).co2_kg < run_now(green).co2_kg


def test_plan_moves_a_job_to_the_cheapest_hour_inside_its_window() -> None:
    jobs = BatchJobs(np.array([1]), np.array([100.0]), np.array([4]))
    weights = np.array([0.1, 5.0, 3.0, 1.0, 0.2, 9.0])  # hour 0 and 4 are cheaper but outside the window
    from joulepath.control.shift import Battery

    no_battery = Battery(0.0, 0.0, 1.0, 1.0, 0.0, 0.0)
    plan = solve_plan(np.full(6, 50.0), jobs, weights, 1000.0, no_battery, 0.0)
    assert plan is not None
    hours = np.bincount(plan.pairs_hour, weights=plan.x_wh, minlength=6)
    np.testing.assert_allclose(hours, [0, 0, 0, 100, 0, 0], atol=1e-6)
    # with room for only 60 Wh beside the interactive load at hour 3, the rest goes to the next best hour
    plan = solve_plan(np.full(6, 50.0), jobs, weights, 110.0, no_battery, 0.0)
    hours = np.bincount(plan.pairs_hour, weights=plan.x_wh, minlength=6)
    np.testing.assert_allclose(hours, [0, 0, 40, 60, 0, 0], atol=1e-6)
    # impossible: 100 Wh in 3 hours with 10 Wh of room each
    assert solve_plan(np.full(6, 50.0), jobs, weights, 60.0, no_battery, 0.0) is None


def test_forecast_follows_a_daily_pattern() -> None:
    day = 100.0 + 50.0 * np.sin(2 * np.pi * np.arange(24) / 24)
    history = np.tile(day, 10)
    np.testing.assert_allclose(diurnal_ar1_forecast(history, 48), np.tile(day, 2), atol=1e-9)
    shifted = history.copy()
    shifted[-1] += 20.0  # a deviation now decays over the next hours
    f = diurnal_ar1_forecast(shifted, 24)
    assert f[0] > day[0] and f[0] - day[0] > f[10] - day[10] > 0


def test_config_rejects_a_horizon_shorter_than_the_slack() -> None:
    with pytest.raises(ValueError):
        ShiftConfig(max_slack_h=30, horizon_h=24)
    assert Tariff().hourly_usd_per_kwh().max() == 0.15  # the tariff the cost figures use
