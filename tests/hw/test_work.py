import numpy as np
import pytest

from joulepath.hw import Deployment, WorkProfile, get_accelerator, get_model_preset
from joulepath.hw.fleet import project_trace
from joulepath.hw.perf import decode_step, operator_work, steady_state

SPEC = get_model_preset("llama-3.1-8b")
DEP = Deployment(get_accelerator("h100-sxm"))


def _trace() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 3000
    return np.sort(rng.uniform(0, 300, n)), rng.integers(500, 3000, n), rng.integers(20, 400, n)


def test_default_profile_projects_what_the_hardware_model_alone_does() -> None:
    a, p, o = _trace()
    plain = project_trace(a, p, o, SPEC, DEP, n_devices=4, bin_s=10)
    measured = project_trace(a, p, o, SPEC, DEP, n_devices=4, bin_s=10, work=WorkProfile(1, 100, 100, 50))
    np.testing.assert_array_equal(plain.device_power_w, measured.device_power_w)


def test_half_the_prompt_computed_lowers_device_energy_per_request() -> None:
    """A prefix cache that serves half of every prompt: less prefill compute, the same KV context."""
    a, p, o = _trace()
    full = project_trace(a, p, o, SPEC, DEP, n_devices=4, bin_s=10)
    half = project_trace(a, p, o, SPEC, DEP, n_devices=4, bin_s=10, work=WorkProfile(1, 1000, 500, 80))
    assert full.backlog_tokens[-1] == half.backlog_tokens[-1] == 0  # same requests served in both
    assert half.device_energy_j / len(a) < 0.98 * full.device_energy_j / len(a)
    one = steady_state(SPEC, DEP, 32, 2000, 200)
    cached = steady_state(SPEC, DEP, 32, 2000, 200, work=WorkProfile(prompt_tokens=2, computed_prompt_tokens=1))
    assert cached.energy_per_output_token_j < one.energy_per_output_token_j
    assert cached.itl_s == one.itl_s  # the decode step still reads the whole context


def test_one_byte_per_weight_lowers_decode_time_when_memory_bound() -> None:
    base = steady_state(SPEC, DEP, 1, 512, 256)
    assert base.decode.memory_util > base.decode.compute_util  # batch 1: memory-bound
    int8 = steady_state(SPEC, DEP, 1, 512, 256, work=WorkProfile(bytes_per_weight=1))
    assert int8.itl_s < 0.75 * base.itl_s
    assert steady_state(SPEC, DEP, 1, 512, 256, work=WorkProfile(bytes_per_weight=2)).itl_s == base.itl_s


def test_accepted_draft_tokens_and_sparsity_lower_time_per_token() -> None:
    base = steady_state(SPEC, DEP, 4, 512, 256)
    spec_dec = steady_state(SPEC, DEP, 4, 512, 256, work=WorkProfile(accepted_draft_tokens_per_step=1.5))
    sparse = steady_state(SPEC, DEP, 4, 512, 256, work=WorkProfile(activation_sparsity=0.5))
    assert spec_dec.time_per_output_token_s < 0.6 * base.time_per_output_token_s
    assert sparse.time_per_output_token_s < base.time_per_output_token_s
    # verifying drafts reads weights and each sequence's KV once per step, not once per token
    one, drafts = decode_step(SPEC, DEP, 4, 1000), decode_step(SPEC, DEP, 4, 1000, tokens_per_seq=3)
    assert drafts.flops == pytest.approx(3 * one.flops, rel=0.01) and drafts.hbm_bytes < 1.1 * one.hbm_bytes


@pytest.mark.parametrize(
    "bad",
    [
        dict(prompt_tokens=10, computed_prompt_tokens=11),
        dict(accepted_draft_tokens_per_step=-1),
        dict(activation_sparsity=1.0),
        dict(bytes_per_weight=3),
        dict(batch_limit=0),
    ],
)
def test_profile_refuses_impossible_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WorkProfile(**bad)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen3-8b", "llama-3.1-70b"])
def test_operator_gemm_flops_are_the_step_models_linear_flops(name: str) -> None:
    spec = get_model_preset(name)
    if spec.n_experts or spec.attn_params_per_layer_override is not None:
        pytest.skip("operator_work describes dense GQA models (the engine's)")
    w = operator_work(spec, 7, 7, 70, 70)
    gemm = sum(w[k][0] for k in ("attention.qkv_proj", "attention.out_proj", "mlp", "lm_head"))
    assert gemm == pytest.approx(2 * spec.params_active * 7)
    assert w["attention.kernel"][0] == pytest.approx(spec.attention_flops_per_token(70) * 1)


def test_rejected_drafts_cost_compute() -> None:
    accepted = WorkProfile(accepted_draft_tokens_per_step=1.0)
    wasteful = WorkProfile(accepted_draft_tokens_per_step=1.0, proposed_draft_tokens_per_step=4.0)
    assert accepted.verified_tokens_per_step == 2.0 and wasteful.verified_tokens_per_step == 5.0
    a = steady_state(SPEC, DEP, 64, 512, 256, work=accepted)
    w = steady_state(SPEC, DEP, 64, 512, 256, work=wasteful)
    assert w.energy_per_output_token_j > a.energy_per_output_token_j
    with pytest.raises(ValueError, match="proposed_draft"):
        WorkProfile(accepted_draft_tokens_per_step=2.0, proposed_draft_tokens_per_step=1.0)
