import dataclasses

import pytest

from joulepath.hw import WorkProfile
from joulepath.hw.perf import DTYPE_BYTES, operator_work
from joulepath.link import batches_in_flight, transformer_spec, work_profile, work_profiles
from joulepath.model.config import PRESETS, ModelConfig, preset
from joulepath.results import LocalRun, RequestRecord, ServedRequest


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_spec_from_a_loaded_models_config_and_from_its_preset_name_agree(name: str) -> None:
    cfg = preset(name)
    spec = transformer_spec(cfg, "fp32")
    assert transformer_spec(name, "fp32") == transformer_spec(f"dummy:{name}", "fp32")
    assert transformer_spec(name, "fp32").n_layers == spec.n_layers == cfg.n_layers
    # parameter count of the torch model's shapes (no biases): attention, SwiGLU, embeddings, norms aside
    attn = cfg.d_model * cfg.qkv_dim + cfg.n_heads * cfg.head_dim * cfg.d_model
    expected = cfg.n_layers * (attn + 3 * cfg.d_model * cfg.d_ff) + cfg.vocab_size * cfg.d_model * (
        1 if cfg.tie_embeddings else 2
    )
    assert spec.params_total == expected
    assert spec.sliding_window == (cfg.sliding_window or 0)


def test_public_model_names_come_from_the_hardware_models_presets() -> None:
    assert transformer_spec("llama-3.1-8b", "fp8").weight_dtype == "fp8"
    with pytest.raises(ValueError, match="unknown model preset"):
        transformer_spec("no-such-model")


def _old_profiler_counter(c: ModelConfig, el: int, t: int, r: int, ctx: float, keys: float) -> dict[str, tuple]:
    """The profiler's own counter before it called hw.perf (kept here as the reference)."""
    d, n, hd, ff, vocab, qkv = c.d_model, c.n_layers, c.head_dim, c.d_ff, c.vocab_size, c.qkv_dim
    out = {}
    for name, width in (("attention.qkv_proj", qkv), ("attention.out_proj", c.n_heads * hd)):
        out[name] = (2 * t * d * width * n, el * (d * width + t * (d + width)) * n)
    out["mlp"] = (6 * t * d * ff * n, el * (3 * d * ff + t * (d + 3 * ff)) * n)
    out["attention.kernel"] = (4 * ctx * c.n_heads * hd * n, el * 2 * keys * c.n_kv_heads * hd * n)
    out["kv_cache.write"] = (0.0, el * 4 * t * c.n_kv_heads * hd * n)
    out["lm_head"] = (2 * r * d * vocab, el * (d * vocab + r * (d + vocab)))
    out["norm"] = (4 * t * d * (2 * n + 1), el * 2 * t * d * (2 * n + 1))
    out["embedding"] = (0.0, el * 2 * t * d)
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_profiler_counts_from_hw_perf_match_its_former_counter(name: str, dtype: str) -> None:
    cfg = preset(name)
    new = operator_work(transformer_spec(cfg, dtype), 37, 5, 4100.0, 900.0)
    old = _old_profiler_counter(cfg, int(DTYPE_BYTES[dtype]), 37, 5, 4100.0, 900.0)
    assert new.keys() == old.keys()
    for k in old:
        assert new[k] == pytest.approx(old[k], rel=1e-12), k


def _served(arrival_s: float, ttft_s: float, e2e_s: float, prompt: int = 20, out: int = 10) -> ServedRequest:
    record = RequestRecord("r", prompt, out, ttft_s, 0.01, e2e_s, 0.1, "measured: test", "stop", 0)
    return ServedRequest(record, arrival_s, "arith", "easy", True)


def test_batches_come_from_the_requests_decode_times() -> None:
    one_at_a_time = [_served(0, 0.1, 1.0), _served(0, 1.1, 2.0), _served(0, 2.1, 3.0)]  # queued, never together
    assert batches_in_flight([one_at_a_time]) == (pytest.approx(1.0), 1)
    together = [_served(0, 0.1, 1.1), _served(0, 0.1, 1.1), _served(0.5, 0.1, 0.6)]
    mean, peak = batches_in_flight([together])
    assert peak == 3 and mean == pytest.approx(2.5)


def test_work_profile_of_a_local_run() -> None:
    run = LocalRun("optimized", 8, (_served(0, 0.1, 1.1, 30, 7), _served(0, 0.1, 1.1, 50, 9)), 2.0, 1.0, "x", 1.0)
    w = work_profile(run)
    assert (w.requests, w.prompt_tokens, w.computed_prompt_tokens, w.output_tokens) == (2, 80, 80, 16)
    assert w.batch_limit == 8 and w.mean_batch == pytest.approx(2.0) and w.peak_batch == 2
    assert w.provenance.startswith("measured:")
    assert work_profile(run, prefix_hit_tokens=40).computed_prompt_fraction == 0.5
    assert work_profiles(None) == (WorkProfile(batch_limit=1), WorkProfile())


def test_work_profile_pools_repetitions_each_on_its_own_clock() -> None:
    """Repetitions over slices serve other requests: the profile sums them all, and the mean batch is their
    decode time over their busy time, each repetition's spans on its own clock (both start at 0 here, so
    one timeline would see a batch of 3 that never ran)."""
    a = LocalRun("optimized", 8, (_served(0, 0.1, 1.1, 30, 7), _served(0, 0.1, 1.1, 50, 9)), 2.0, 1.0, "x", 1.0)
    b = LocalRun("optimized", 8, (_served(0, 0.1, 2.1, 40, 5),), 2.0, 1.0, "x", 1.0)
    w = work_profile([a, b])
    assert (w.requests, w.prompt_tokens, w.output_tokens) == (3, 120, 21)
    assert w.mean_batch == pytest.approx((2.0 + 2.0) / (1.0 + 2.0)) and w.peak_batch == 2
    assert "3 requests served here over 2 repetitions" in w.provenance
    assert work_profile([a]) == work_profile(a)
    with pytest.raises(ValueError, match="at least one"):
        work_profile([])
    with pytest.raises(ValueError, match="max_batch differ"):  # repetitions of one configuration only
        work_profile([a, dataclasses.replace(b, max_batch=16)])
    small, large = (
        dataclasses.replace(_served(0, 0.1, 1.1, 10, 3), tier="s"),
        dataclasses.replace(b.requests[0], tier="l"),
    )
    routed = [LocalRun("r", 8, (small,), 1.0, 1.0, "x", 1.0, small_tier="s"), dataclasses.replace(b, name="r")]
    routed[1] = dataclasses.replace(routed[1], requests=(small, large), small_tier="s")
    w = work_profile(routed)  # the large tier's requests, pooled; one repetition all small adds none of its own
    assert (w.requests, w.prompt_tokens) == (1, 40) and w.small_tier_share == pytest.approx(2 / 3)
    all_small = [routed[0], dataclasses.replace(routed[0], requests=(small, small))]
    w = work_profile(all_small)  # the router sent every request to the small tier: all of them are the profile
    assert (w.requests, w.small_tier_share) == (3, 1.0)
    sparse = [dataclasses.replace(a, activation_sparsity=0.5), dataclasses.replace(b, activation_sparsity=0.2)]
    assert work_profile(sparse).activation_sparsity == pytest.approx((0.5 * 96 + 0.2 * 45) / (96 + 45))


def test_prefix_cache_hits_in_the_records_reach_the_work_profile() -> None:
    hit = _served(0, 0.1, 1.1, 30, 7)
    hit = dataclasses.replace(hit, record=dataclasses.replace(hit.record, cached_prompt_tokens=24))
    run = LocalRun("optimized", 8, (hit, _served(0, 0.1, 1.1, 50, 9)), 2.0, 1.0, "x", 1.0)
    assert work_profile(run).computed_prompt_tokens == 80 - 24
    assert work_profile(run, prefix_hit_tokens=0).computed_prompt_tokens == 80


def test_draft_tokens_in_the_records_reach_the_work_profile() -> None:
    spec = _served(0, 0.1, 1.1, 30, 7)
    spec = dataclasses.replace(
        spec, record=dataclasses.replace(spec.record, decode_steps=4, draft_proposed=8, draft_accepted=2)
    )
    plain = _served(0, 0.1, 1.1, 50, 9)  # speculation off: no decode steps counted
    w = work_profile(LocalRun("optimized", 8, (spec, plain), 2.0, 1.0, "x", 1.0))
    assert w.accepted_draft_tokens_per_step == 0.5 and w.proposed_draft_tokens_per_step == 2.0
    off = work_profile(LocalRun("baseline", 1, (plain,), 2.0, 1.0, "x", 1.0))
    assert off.accepted_draft_tokens_per_step == 0.0 and off.proposed_draft_tokens_per_step is None
