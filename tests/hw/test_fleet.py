import numpy as np
import pytest

from joulepath.hw import Deployment, get_accelerator, get_model_preset
from joulepath.hw.fleet import max_batch, project_trace

SPEC = get_model_preset("llama-3.1-8b")
DEP = Deployment(get_accelerator("h100-sxm"))


def _trace(rate_per_s: float, duration_s: float = 300.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    n = int(rate_per_s * duration_s)
    arrivals = np.sort(rng.uniform(0, duration_s, n))
    return arrivals, rng.integers(100, 2000, n), rng.integers(20, 500, n)


def test_tokens_are_conserved_and_utilisation_bounded() -> None:
    a, p, o = _trace(20.0)
    proj = project_trace(a, p, o, SPEC, DEP, n_devices=2, bin_s=10)
    assert proj.total_served_tokens + proj.backlog_tokens[-1] == pytest.approx(o.sum())
    assert 0 < proj.utilisation <= 1.0
    assert (proj.device_power_w >= proj.idle_power_w - 1e-9).all()
    assert (proj.device_power_w <= 2 * 700 + 1e-9).all()


def test_overload_builds_a_backlog_and_saturates() -> None:
    a, p, o = _trace(400.0, 60.0)
    proj = project_trace(a, p, o, SPEC, DEP, n_devices=1, bin_s=10)
    assert proj.backlog_tokens[-1] > 0
    assert proj.batch_per_unit.max() == proj.max_batch_per_unit


def test_more_devices_serve_the_same_load_with_lower_utilisation() -> None:
    a, p, o = _trace(20.0)
    small = project_trace(a, p, o, SPEC, DEP, n_devices=2, bin_s=10)
    large = project_trace(a, p, o, SPEC, DEP, n_devices=8, bin_s=10)
    assert large.utilisation < small.utilisation
    assert large.device_energy_j > small.device_energy_j  # more idle silicon


def test_kv_memory_limits_the_batch() -> None:
    assert max_batch(SPEC, DEP, 100_000, 10_000) < max_batch(SPEC, DEP, 1_000, 10_000)
    with pytest.raises(ValueError, match="do not fit"):
        max_batch(get_model_preset("llama-3.1-405b"), DEP, 1000, 256)


def test_fleet_smaller_than_a_unit_is_refused() -> None:
    a, p, o = _trace(1.0)
    with pytest.raises(ValueError, match="smaller than one serving unit"):
        project_trace(a, p, o, SPEC, Deployment(get_accelerator("h100-sxm"), tensor_parallel=4), n_devices=2)


def test_two_tiers_on_their_own_pools_add_up_to_one_fleet() -> None:
    from joulepath.hw.fleet import pool_split, pooled

    arrival, prompt, output = _trace(2.0)
    small = np.arange(len(arrival)) % 2 == 0
    horizon = float(arrival.max()) + 1e-9
    assert pool_split(8, 3.0, 1.0) == (6, 2) and pool_split(8, 1.0, 0.0) == (7, 1)  # each tier keeps a unit
    parts = [project_trace(arrival[m], prompt[m], output[m], spec, DEP, n, horizon_s=horizon)
             for m, spec, n in ((~small, SPEC, 6), (small, get_model_preset("llama-3.2-1b"), 2))]  # fmt: skip
    both = pooled(*parts, "llama-3.2-1b", DEP)
    assert both.small_tier is not None and both.small_tier.units == 2 and both.small_tier.kind == "gpu"
    assert both.n_units == 8 and both.idle_power_w == pytest.approx(sum(p.idle_power_w for p in parts))
    assert both.total_served_tokens == pytest.approx(sum(p.total_served_tokens for p in parts))
    np.testing.assert_allclose(both.device_power_w, parts[0].device_power_w + parts[1].device_power_w)
    alone = project_trace(arrival, prompt, output, SPEC, DEP, 8)
    assert len(alone.t_s) == len(both.t_s) and both.idle_power_w == pytest.approx(alone.idle_power_w)
    assert both.device_energy_j < alone.device_energy_j  # half the requests on a 1B model cost less
    short = project_trace(arrival[:5], prompt[:5], output[:5], SPEC, DEP, 8)
    with pytest.raises(ValueError, match="same bins"):
        pooled(alone, short, "llama-3.2-1b", DEP)
    with pytest.raises(ValueError, match="2 serving units"):
        pool_split(1, 1.0, 1.0)


def test_the_batch_limit_counts_a_sliding_window_as_its_window_and_refuses_a_sequence_that_cannot_fit() -> None:
    import dataclasses

    windowed = dataclasses.replace(SPEC, sliding_window=1024, sliding_layer_fraction=1.0)
    assert max_batch(windowed, DEP, 8192, 100_000) >= 7 * max_batch(SPEC, DEP, 8192, 100_000)  # 8x fewer tokens held
    big = get_model_preset("llama-3.1-70b")
    two = Deployment(get_accelerator("h100-sxm"), tensor_parallel=2)
    assert max_batch(big, two, 4096, 256) >= 1
    with pytest.raises(ValueError, match=r"needs .* GiB of KV cache"):
        max_batch(big, two, 2_000_000, 256)  # one sequence's cache is larger than what the weights leave
