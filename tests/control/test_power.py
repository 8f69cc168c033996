"""Power caps and oversubscription over the hardware model (estimated): the cap choice respects the
latency bound, J/token falls as the cap falls, and oversubscription never throttles beyond its limit."""

import itertools

import numpy as np
import pytest

from joulepath.control.power import (
    LoadTable,
    Trace,
    cap_curve,
    choose_cap,
    load_table,
    oversubscribe,
    throttle_fracs,
    weighted_percentile,
)
from joulepath.hw.catalog import get_accelerator
from joulepath.hw.perf import Deployment, get_model_preset

SPEC = get_model_preset("llama-3.1-8b")
DEP = Deployment(get_accelerator("h100-sxm"))
FRACS = np.array([1.0, 0.8, 0.6, 0.5, 0.4, 0.3])


def _trace() -> Trace:
    """Five minutes of a decode-heavy mix (prompts ~256, outputs ~1,024 tokens)."""
    rng = np.random.default_rng(0)
    n = 3000
    trace = Trace(
        np.sort(rng.uniform(0, 300, n)), rng.lognormal(np.log(256), 0.5, n), rng.lognormal(np.log(1024), 0.5, n)
    )
    return trace


@pytest.fixture(scope="module")
def curve() -> list:
    return cap_curve(_trace(), SPEC, DEP, 8, FRACS)


def test_curve_starts_uncapped_and_energy_falls_with_the_cap(curve: list) -> None:
    assert curve[0].cap_w == DEP.tdp_w and curve[0].j_saving_pct == 0 and curve[0].p99_slowdown_pct == 0
    j = [p.j_per_token for p in curve]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(j))
    itl = [p.p99_itl_s for p in curve]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(itl))
    assert all("estimated" in p.provenance for p in curve)


@pytest.mark.parametrize("bound_pct", [0.5, 2.0, 5.0])
def test_choice_respects_the_latency_bound_and_consistency(curve: list, bound_pct: float) -> None:
    best = choose_cap(curve, bound_pct)
    assert best.p99_slowdown_pct <= bound_pct and best.consistent
    better = [p for p in curve if p.j_per_token < best.j_per_token]
    assert all(p.p99_slowdown_pct > bound_pct or not p.consistent for p in better)


def test_conservative_floor_never_allows_more_saving(curve: list) -> None:
    strict = cap_curve(_trace(), SPEC, DEP, 8, FRACS, static_scales=False)
    assert choose_cap(strict).j_saving_pct <= choose_cap(curve).j_saving_pct
    assert strict[0].floor_w > curve[0].floor_w


def test_weighted_percentile() -> None:
    v = np.array([1.0, 2.0, np.nan, 3.0])
    assert weighted_percentile(v, np.array([1.0, 1.0, 5.0, 98.0]), 50) == 3.0
    assert weighted_percentile(v, np.array([98.0, 1.0, 5.0, 1.0]), 50) == 1.0


def _toy_table() -> LoadTable:
    """Power 500 W at full load, 100 W idle; a cap below 400 W slows ITL by 10 %."""
    util = np.array([0.0, 0.5, 1.0])
    caps = np.array([700.0, 400.0, 300.0])
    power = np.array([[100.0, 100.0, 100.0], [300.0, 300.0, 300.0], [500.0, 400.0, 300.0]])
    slow = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 10.0]])
    return LoadTable(util, caps, power, slow, np.full(3, 50.0))


def test_throttling_counts_only_minutes_over_the_feed() -> None:
    table = _toy_table()
    util = np.r_[np.full(990, 0.5), np.full(10, 1.0)]  # 1 % of minutes at full load
    capped, throttled = throttle_fracs(table, util, 2, 1000.0, 5.0)  # 2 x 500 W fits 1 kW
    assert capped == throttled == 0.0
    capped, throttled = throttle_fracs(table, util, 3, 1200.0, 5.0)  # cap 400 W at the peaks: 1 % slower
    assert capped == pytest.approx(0.01) and throttled == 0.0
    capped, throttled = throttle_fracs(table, util, 4, 1200.0, 5.0)  # cap 300 W: 10 % slower
    assert throttled == pytest.approx(0.01)


def test_oversubscription_stays_within_its_limits() -> None:
    table = _toy_table()
    util = np.r_[np.full(9995, 0.5), np.full(5, 1.0)]
    o = oversubscribe(table, util, 7000.0, 5.0, 0.001)
    assert o.baseline_devices == 10 and o.devices > o.baseline_devices
    assert o.throttled_minutes_frac < 0.001
    rare = oversubscribe(table, util, 7000.0, 5.0, 0.001, max_capped_frac=0.0)
    assert rare.capped_minutes_frac == 0.0 and rare.devices == 14  # 14 x 500 W = 7 kW: no cap ever


def test_load_table_shape_and_monotone_power() -> None:
    t = load_table(SPEC, DEP, 256.0, 1024.0, np.array([0.2, 0.6, 1.0]), np.array([1.0, 0.5]))
    assert t.power_w.shape == (3, 2) and t.cap_w[0] == DEP.tdp_w
    assert np.all(np.diff(t.power_w[:, 0]) > 0) and np.all(t.power_w[:, 1] <= t.cap_w[1] + 1e-6)
    assert np.all(t.slowdown_pct[:, 0] == 0)
