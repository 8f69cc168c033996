"""The KV-cache capacity bound of the decode step (perf.kv_capacity_tokens)."""

from __future__ import annotations

import dataclasses

import pytest

from joulepath.hw.catalog import get_accelerator
from joulepath.hw.fleet import max_batch
from joulepath.hw.perf import (
    DTYPE_BYTES,
    KV_MEMORY_FRACTION,
    Deployment,
    decode_step,
    get_model_preset,
    kv_capacity_tokens,
)

H100 = get_accelerator("h100-sxm")
SPEC = get_model_preset("llama-3.1-8b")


def test_capacity_is_memory_left_next_to_the_weights() -> None:
    free_b = 80 * 2**30 * KV_MEMORY_FRACTION - SPEC.params_total * DTYPE_BYTES["bf16"]
    assert kv_capacity_tokens(SPEC, Deployment(H100)) == pytest.approx(free_b / SPEC.kv_bytes_per_token)
    # two replicas hold two copies of the weights and two caches: the same per replica
    assert kv_capacity_tokens(SPEC, Deployment(H100, data_parallel=2)) == pytest.approx(
        free_b / SPEC.kv_bytes_per_token
    )


def test_an_80_gb_accelerator_holds_80_gib_and_the_cache_gets_the_difference() -> None:
    """Vendors' "80 GB" of HBM is 80 GiB: the model counts 80 x 2^30 bytes, not 80e9."""
    assert H100.memory_capacity_gib == 80
    assert H100.memory_capacity_bytes == 80 * 2**30
    weights_b = SPEC.params_total * DTYPE_BYTES["bf16"]
    cap = kv_capacity_tokens(SPEC, Deployment(H100))
    assert cap is not None
    # weights held fixed, the memory the model counts (cache + weights) is 2^30/1e9 = 1.074x the 1e9-byte reading
    counted_b = cap * SPEC.kv_bytes_per_token + weights_b
    assert counted_b / (80e9 * KV_MEMORY_FRACTION) == pytest.approx(2**30 / 1e9, rel=1e-9)
    # the same device read as 80e9 bytes: the cache loses exactly the 80 x (2^30 - 1e9) bytes in between
    decimal = Deployment(dataclasses.replace(H100, memory_capacity_gib=80e9 / 2**30))
    cap_decimal = kv_capacity_tokens(SPEC, decimal)
    assert cap_decimal is not None
    gained_b = (cap - cap_decimal) * SPEC.kv_bytes_per_token
    assert gained_b == pytest.approx(80 * (2**30 - 1e9) * KV_MEMORY_FRACTION, rel=1e-9)
    ratio = (80 * 2**30 * KV_MEMORY_FRACTION - weights_b) / (80e9 * KV_MEMORY_FRACTION - weights_b)
    assert cap / cap_decimal == pytest.approx(ratio, rel=1e-9)  # ~1.09 for an 8B model: the weights do not grow
    context = 1000.0  # so does the fleet's batch limit
    assert max_batch(SPEC, Deployment(H100), context, 10**6) == int(cap // context)
    assert max_batch(SPEC, decimal, context, 10**6) == int(cap_decimal // context) < int(cap // context)


def test_capacity_none_without_published_memory() -> None:
    acc = dataclasses.replace(H100, memory_capacity_gib=None)
    assert kv_capacity_tokens(SPEC, Deployment(acc)) is None


def test_experts_sharded_over_all_devices_are_stored_once() -> None:
    moe = get_model_preset("qwen3-30b-a3b")
    replicated = Deployment(H100, tensor_parallel=1, data_parallel=2)
    sharded = Deployment(H100, tensor_parallel=1, data_parallel=2, expert_parallel=2)
    assert kv_capacity_tokens(moe, sharded) > kv_capacity_tokens(moe, replicated)  # type: ignore[operator]


def test_decode_step_reads_no_more_cache_than_fits() -> None:
    dep = Deployment(H100)
    cap_tokens = kv_capacity_tokens(SPEC, dep)
    assert cap_tokens is not None
    batch = 512
    fits = cap_tokens / batch / 2  # half the capacity: the cap does not bind
    step = decode_step(SPEC, dep, batch, fits)
    weights_and_act_b = decode_step(SPEC, dep, batch, 0.0).hbm_bytes
    assert step.hbm_bytes - weights_and_act_b == pytest.approx(batch * fits * SPEC.kv_bytes_per_token, rel=1e-6)
    # ten times the capacity: the running sequences are as long as the cache allows, no longer
    over = decode_step(SPEC, dep, batch, 10 * cap_tokens / batch)
    at_cap = decode_step(SPEC, dep, batch, cap_tokens / batch)
    assert over.time_s == pytest.approx(at_cap.time_s)
    assert over.hbm_bytes - weights_and_act_b <= cap_tokens * SPEC.kv_bytes_per_token * (1 + 1e-6)


def test_fleet_max_batch_uses_the_same_capacity() -> None:
    dep = Deployment(H100)
    cap_tokens = kv_capacity_tokens(SPEC, dep)
    assert cap_tokens is not None
    assert max_batch(SPEC, dep, 1000.0, 10**6) == int(cap_tokens // 1000.0)
