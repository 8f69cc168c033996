"""The main job's shifting entry point: what it returns, in which units, and what it refuses."""

from typing import Any

import numpy as np
import pytest

from joulepath.control.shift_year import shift_facility_year, to_hourly
from joulepath.facility.grid import get_grid_profile, synthetic_grid
from joulepath.facility.supply import StorageConfig

HOURS = 24 * 14


def _wall_w(n: int = HOURS, seed: int = 0) -> np.ndarray:
    """A facility's wall power: daily shape with noise, ~1 MW."""
    rng = np.random.default_rng(seed)
    hod = np.arange(n) % 24
    return 1e6 * (0.8 + 0.12 * np.cos(2 * np.pi * (hod - 15) / 24) + rng.normal(0, 0.02, n))


@pytest.fixture(scope="module")
def shifted() -> tuple:
    grid = synthetic_grid(get_grid_profile("pjm"), seed=3)
    wall = _wall_w()
    return wall, grid, shift_facility_year(wall, grid.carbon_g_per_kwh, grid.price_usd_per_kwh)


def test_series_are_hourly_and_energy_is_conserved(shifted: tuple) -> None:
    wall, _, r = shifted
    assert r.load_w.shape == r.soc_wh.shape == r.grid_w.shape == (HOURS,)
    np.testing.assert_allclose(r.baseline.grid_w, wall)  # run-now: the input, battery idle
    assert r.load_w.sum() == pytest.approx(wall.sum(), rel=1e-9)  # shifted, not dropped
    np.testing.assert_allclose(r.grid_w, r.load_w + r.policy.charge_w - r.policy.discharge_w)
    assert np.all(r.load_w <= wall.max() * (1 + 1e-9))
    b = r.battery
    assert b.energy_wh == pytest.approx(4 * 0.25 * wall.mean()) and b.power_w == pytest.approx(0.25 * wall.mean())
    assert r.soc_wh.min() >= b.soc_min_wh - 1e-3 and r.soc_wh.max() <= b.soc_max_wh + 1e-3


def test_policy_is_bounded_by_the_oracle_and_beats_run_now(shifted: tuple) -> None:
    _, grid, r = shifted
    assert r.missed_deadlines == 0
    assert r.oracle is not None and r.oracle_saving is not None
    assert r.oracle.objective <= r.policy.objective < r.baseline.objective
    assert 0.7 <= r.saving.oracle_fraction <= 1.0
    assert r.saving.cost_cut_pct > 0 and r.oracle_saving.cost_cut_pct >= r.saving.cost_cut_pct - 1e-9
    # CO2 and cost are the grid import x the input's hourly carbon and price
    assert r.policy.co2_kg == pytest.approx(float(np.sum(r.grid_w * grid.carbon_g_per_kwh[:HOURS])) / 1e6)
    assert r.policy.cost_usd == pytest.approx(float(np.sum(r.grid_w * grid.price_usd_per_kwh[:HOURS])) / 1e3)
    assert set(r.provenance) == {"baseline", "policy", "oracle"}
    assert all(v.startswith("estimated: ") for v in r.provenance.values())
    assert "25% of each hour's wall power" in r.provenance["policy"] and "every 24 h" in r.provenance["policy"]


def test_no_deferrable_work_and_no_battery_is_run_now() -> None:
    grid = synthetic_grid(get_grid_profile("erco"), seed=1)
    wall = _wall_w(24 * 3)
    r = shift_facility_year(
        wall, grid.carbon_g_per_kwh, grid.price_usd_per_kwh, deferrable_share=0.0, battery_hours=0, with_oracle=False
    )
    np.testing.assert_allclose(r.grid_w, wall)
    assert r.policy.co2_kg == pytest.approx(r.baseline.co2_kg) and r.oracle is None
    assert np.isnan(r.saving.oracle_fraction) and "no battery" in r.provenance["policy"]


def test_a_longer_deadline_and_another_battery() -> None:
    grid = synthetic_grid(get_grid_profile("erco"), seed=2)
    storage = StorageConfig(charge_efficiency=0.99, discharge_efficiency=0.99, soc_min_frac=0.0, soc_max_frac=1.0)
    r = shift_facility_year(
        _wall_w(24 * 7), grid.carbon_g_per_kwh, grid.price_usd_per_kwh, deadline_h=36, replan_h=12, storage=storage
    )
    assert r.config.horizon_h == 48 and r.config.max_slack_h == 36 and r.missed_deadlines == 0
    assert r.battery.soc_max_wh == r.battery.energy_wh and r.battery.charge_eff == 0.99


def test_sub_hourly_twin_series_are_averaged_to_hours() -> None:
    np.testing.assert_allclose(to_hourly(np.arange(8.0), 900.0), [1.5, 5.5])
    np.testing.assert_allclose(to_hourly(np.array([1.0, 2.0]), 7200.0), [1.0, 1.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="neither divides an hour"):
        to_hourly(np.ones(4), 1000.0)
    grid = synthetic_grid(get_grid_profile("pjm"), seed=3)
    quarter = np.repeat(_wall_w(24 * 3), 4)
    r = shift_facility_year(
        quarter,
        np.repeat(grid.carbon_g_per_kwh[:72], 4),
        np.repeat(grid.price_usd_per_kwh[:72], 4),
        step_s=900.0,
        with_oracle=False,
    )
    assert r.load_w.shape == (72,) and r.load_w.sum() == pytest.approx(quarter.sum() / 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"carbon_g_per_kwh": np.full(10, 300.0)}, "carbon_g_per_kwh has 10 hours, fewer than"),
        ({"price_usd_per_kwh": np.full(HOURS, np.nan)}, "price_usd_per_kwh must be finite"),
        ({"wall_power_w": -_wall_w()}, "wall_power_w must be finite and >= 0"),
        ({"carbon_g_per_kwh": np.zeros(HOURS)}, "must not be all zero"),
        ({"deferrable_share": 1.5}, "deferrable_frac and carbon_weight must be in"),
        ({"replan_h": 0}, "replan_h"),
    ],
)
def test_bad_inputs_are_refused_clearly(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "wall_power_w": _wall_w(),
        "carbon_g_per_kwh": np.full(HOURS, 300.0),
        "price_usd_per_kwh": np.full(HOURS, 0.1),
    }
    args |= kwargs
    with pytest.raises(ValueError, match=message):
        shift_facility_year(
            args.pop("wall_power_w"), args.pop("carbon_g_per_kwh"), args.pop("price_usd_per_kwh"), **args
        )
