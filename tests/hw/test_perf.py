import dataclasses

import pytest

from joulepath.hw import Deployment, get_accelerator, get_model_preset
from joulepath.hw.perf import (
    DTYPE_BYTES,
    Efficiency,
    calibrated_efficiency,
    decode_step,
    prefill_step,
    steady_state,
)

H100 = get_accelerator("h100-sxm")


@pytest.mark.parametrize(
    ("preset", "total_b", "active_b"),
    [
        ("llama-3.1-8b", 8.03, 8.03),
        ("llama-3.1-70b", 70.6, 70.6),
        ("llama-3.1-405b", 405.8, 405.8),
        ("qwen3-30b-a3b", 30.5, 3.3),
        ("qwen3-235b-a22b", 235.1, 22.2),
        ("deepseek-v3", 671.0, 37.5),
        ("gpt-oss-120b", 116.8, 5.7),  # OpenAI quotes 5.1 B active without the 0.58 B embedding
        ("llama-4-scout", 108.6, 17.2),
        ("llama-4-maverick", 400.7, 17.2),
    ],
)
def test_parameter_counts_match_published_totals(preset: str, total_b: float, active_b: float) -> None:
    spec = get_model_preset(preset)
    assert spec.params_total / 1e9 == pytest.approx(total_b, rel=0.03)
    # params_active counts the FLOP-bearing weights (LM head included); published "active" counts also
    # the input embedding table, a lookup
    embedding = 0 if spec.tie_embeddings else spec.vocab_size * spec.d_model
    assert (spec.params_active + embedding) / 1e9 == pytest.approx(active_b, rel=0.05)


def test_batch1_decode_is_memory_bound_and_no_faster_than_the_roofline() -> None:
    spec = get_model_preset("llama-3.1-8b")
    step = decode_step(spec, Deployment(H100), batch=1, context_tokens=512)
    weights_s = spec.params_total * DTYPE_BYTES["bf16"] / H100.memory_bandwidth_b_s
    assert step.time_s >= 0.9 * weights_s
    assert step.memory_util > 5 * step.compute_util
    assert step.provenance.startswith("estimated")


def test_power_between_idle_and_tdp_and_cap_respected() -> None:
    spec = get_model_preset("llama-3.1-70b")
    for batch in (1, 16, 256):
        step = decode_step(spec, Deployment(H100, tensor_parallel=4), batch, 1024)
        assert 0.1 * 700 <= step.device_power_w <= 700
    free = decode_step(spec, Deployment(H100, tensor_parallel=4), 256, 1024)
    capped = decode_step(spec, Deployment(H100, tensor_parallel=4, power_limit_w=350), 256, 1024)
    assert capped.device_power_w <= 350 + 1e-9
    assert capped.time_s >= free.time_s


def test_energy_per_token_falls_with_batch() -> None:
    spec = get_model_preset("llama-3.1-8b")
    e = [steady_state(spec, Deployment(H100), b, 512, 256).energy_per_output_token_j for b in (1, 8, 64, 256)]
    assert e == sorted(e, reverse=True)


def test_tensor_parallel_shortens_a_memory_bound_step() -> None:
    spec = get_model_preset("llama-3.1-70b")
    t2 = decode_step(spec, Deployment(H100, tensor_parallel=2), 8, 512).time_s
    t8 = decode_step(spec, Deployment(H100, tensor_parallel=8), 8, 512).time_s
    assert t8 < t2


def test_moe_touches_more_experts_as_batch_grows() -> None:
    spec = get_model_preset("qwen3-30b-a3b")
    touched = [spec.expected_experts_touched(b) for b in (1, 4, 64, 1024)]
    assert touched[0] == pytest.approx(8.0)
    assert touched == sorted(touched) and touched[-1] <= 128


def test_fp8_weights_halve_weight_traffic() -> None:
    spec = get_model_preset("llama-3.1-8b")
    bf16 = decode_step(spec, Deployment(H100), 1, 128)
    fp8 = decode_step(spec.with_dtypes("fp8"), Deployment(H100), 1, 128)
    assert fp8.hbm_bytes == pytest.approx(bf16.hbm_bytes * 0.5, rel=0.15)
    assert fp8.time_s < bf16.time_s


def test_movement_energy_is_per_level_and_labels_unpublished() -> None:
    spec = get_model_preset("llama-3.1-70b")
    dep = Deployment(H100, tensor_parallel=2)
    step = decode_step(spec, dep, 32, 1024)
    energy = step.movement_energy_j(dep)
    hbm = next(v for k, v in energy.items() if k.startswith("memory:hbm"))
    assert hbm == pytest.approx(step.hbm_bytes * 8 * 3.9e-12)
    assert energy["link:nvlink4"] is None  # NVLink pJ/bit is not published


def test_prefill_counts_activation_traffic() -> None:
    spec = get_model_preset("llama-3.1-8b")
    step = prefill_step(spec, Deployment(H100), 4096)
    weights = spec.params_total * DTYPE_BYTES["bf16"] - spec.vocab_size * spec.d_model * 2  # input table not read
    kv = 4096 * spec.kv_bytes_per_token
    assert step.hbm_bytes > weights + kv + 4096 * spec.activation_bytes_per_token() * 0.99


def test_prefill_is_compute_bound_for_long_prompts() -> None:
    step = prefill_step(get_model_preset("llama-3.1-8b"), Deployment(H100), 4096)
    assert step.compute_util > step.memory_util


def test_missing_tdp_needs_an_explicit_assumption() -> None:
    tpu = get_accelerator("tpu-v5e")
    with pytest.raises(ValueError, match="assumed_tdp_w"):
        decode_step(get_model_preset("llama-3.2-1b"), Deployment(tpu), 1, 128)
    step = decode_step(get_model_preset("llama-3.2-1b"), Deployment(tpu, assumed_tdp_w=200), 1, 128)
    assert step.device_power_w <= 200


def test_shipped_calibration_is_loaded() -> None:
    eff = calibrated_efficiency()
    assert "calibrated" in eff.source
    assert dataclasses.replace(eff) == eff and isinstance(eff, Efficiency)
    assert eff.linear_time_factor >= 1.0  # GEMMs never beat the roofline
