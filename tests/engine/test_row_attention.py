"""The row-invariant attention kernel: SDPA's numbers, bit-identical rows whatever the batch, padding or
chunking around them, and an engine whose greedy speculative output then equals plain decoding bit for bit."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from joulepath.engine import Engine, EngineConfig, SamplingParams, row_attention
from joulepath.engine.kv_cache import PagedKVCache
from joulepath.engine.row_attention import RowPlan
from joulepath.model import load_model
from joulepath.optimize import available_modes, quantize_model

needs_kernel = pytest.mark.skipif(
    row_attention.unavailable_reason() is not None, reason=f"no kernel: {row_attention.unavailable_reason()}"
)


def _cache(n_slots: int, kv: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_slots, kv, d, generator=g), torch.randn(n_slots, kv, d, generator=g)


def _sdpa_row(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """One query row (H, D) over keys slots[lo:hi], in float64: the reference."""
    ks, vs = (x[slots[lo:hi]].double().transpose(0, 1)[None] for x in (k, v))  # (1, KV, n, D)
    out = F.scaled_dot_product_attention(q.double()[None, :, None, :], ks, vs, enable_gqa=True)
    return out[0, :, 0, :].float()


def _plan(chunks: list[tuple[torch.Tensor, int, int, int]], window: int | None = None) -> RowPlan:
    return RowPlan.build(chunks, window)


@needs_kernel
@pytest.mark.parametrize(("h", "kv", "d"), [(8, 4, 64), (4, 4, 32), (6, 2, 20), (2, 1, 8), (4, 2, 128)])
@pytest.mark.parametrize("window", [None, 5])
def test_rows_match_sdpa_for_decode_verify_and_prefill(h: int, kv: int, d: int, window: int | None) -> None:
    k, v = _cache(400, kv, d, seed=d)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(1))
    seq_slots = [perm[:37], perm[100:140], perm[200:223]]
    # decode row (position 36 of seq 0), a verify chunk of 4 (positions 20..23 of seq 1), a prefill chunk of 23
    chunks = [(seq_slots[0], 0, 36, 1), (seq_slots[1], 1, 20, 4), (seq_slots[2], 5, 0, 23)]
    q = torch.randn(28, h, d, generator=torch.Generator().manual_seed(2))
    out = row_attention.attend(q, k, v, _plan(chunks, window))
    for slots, first, start, n in chunks:
        for j in range(n):
            hi = start + j + 1
            lo = max(0, hi - window) if window else 0
            want = _sdpa_row(q[first + j], k, v, slots, lo, hi)
            torch.testing.assert_close(out[first + j], want, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_a_row_is_bit_identical_alone_batched_or_in_any_chunk() -> None:
    h, kv, d = 8, 4, 64
    k, v = _cache(2000, kv, d, seed=3)
    slots = torch.randperm(2000, generator=torch.Generator().manual_seed(4))[:600]
    q = torch.randn(600, h, d, generator=torch.Generator().manual_seed(5))
    whole = row_attention.attend(q, k, v, _plan([(slots, 0, 0, 600)]))  # one prefill chunk of 600
    for start, n in [(0, 1), (299, 1), (123, 7), (250, 350), (597, 3)]:  # other splits, decode and verify shapes
        part = row_attention.attend(q[start : start + n].clone(), k, v, _plan([(slots, 0, start, n)]))
        assert torch.equal(part, whole[start : start + n]), (start, n)
    others = torch.randperm(2000, generator=torch.Generator().manual_seed(6))[:900]  # longer neighbours
    qb = torch.cat([torch.randn(3, h, d), q[400:401], torch.randn(1, h, d)])
    batch = [(others, 0, 899, 1), (others[:50], 1, 45, 2), (slots, 3, 400, 1), (others[:10], 4, 9, 1)]
    assert torch.equal(row_attention.attend(qb, k, v, _plan(batch))[3], whole[400])


@needs_kernel
def test_the_two_thread_split_changes_no_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    k, v = _cache(800, 2, 32, seed=7)
    slots = torch.randperm(800)[:300]
    q = torch.randn(300, 4, 32)
    plan = _plan([(slots, 0, 0, 300)])
    one = row_attention.attend(q, k, v, plan)
    monkeypatch.setattr(row_attention, "SPLIT_MIN_WORK", 1)  # opt-in
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert 0 < row_attention._split(plan, 4 * 32) < 300  # the split path runs
    assert torch.equal(row_attention.attend(q, k, v, plan), one)


@needs_kernel
def test_what_the_c_side_trusts_is_checked() -> None:
    k, v = _cache(10, 1, 8, seed=0)
    plan = _plan([(torch.arange(4), 0, 0, 4)])
    with pytest.raises(TypeError, match="fp32 CPU"):
        row_attention.attend(torch.zeros(4, 1, 8, dtype=torch.float64), k, v, plan)
    with pytest.raises(ValueError, match="head_dim <= 256"):
        big = torch.zeros(10, 1, 272)
        row_attention.attend(torch.zeros(4, 1, 272), big, big, plan)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        k3 = torch.zeros(10, 4, 8)
        row_attention.attend(torch.zeros(4, 6, 8), k3, k3, plan)
    with pytest.raises(ValueError, match=r"q row 3 and cache slot 3; q has 2 rows"):
        row_attention.attend(torch.zeros(2, 1, 8), k, v, plan)
    with pytest.raises(ValueError, match="cache slot 3; q has 4 rows and the cache 2 slots"):
        row_attention.attend(torch.zeros(4, 1, 8), k[:2], v[:2], plan)
    with pytest.raises(ValueError, match=r"want q \(T, H, D\)"):
        row_attention.attend(torch.zeros(4, 1, 8), k, v[:, :, :4], plan)


@needs_kernel
def test_a_nan_is_not_hidden() -> None:
    k, v = _cache(10, 1, 16, seed=0)
    q = torch.randn(3, 2, 16)
    q[1, 0, 5] = float("nan")
    out = row_attention.attend(q, k, v, _plan([(torch.arange(3), 0, 0, 3)]))
    assert out[1, 0].isnan().all() and not out[0].isnan().any() and not out[1, 1].isnan().any()


def test_disabled_kernel_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOULEPATH_ROW_ATTENTION", "0")
    lib, reason = row_attention._load.__wrapped__()  # the uncached probe
    assert lib is None and reason == "disabled by JOULEPATH_ROW_ATTENTION=0"


def test_auto_keeps_sdpa_where_the_kernel_would_be_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    fp32 = load_model("dummy:tiny-llama", seed=1)
    assert Engine(fp32).row_invariant is False
    if row_attention.has_avx512() and row_attention.unavailable_reason() is None:
        assert row_attention.auto_declines() == (
            "16 torch threads: SDPA's prefill uses them (ask for 'row_invariant' by name)"
        )
        assert Engine(fp32, EngineConfig(attention="row_invariant")).row_invariant is True
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        assert Engine(fp32).row_invariant is True


def test_engine_attention_setting_is_checked_and_explained() -> None:
    with pytest.raises(ValueError, match="attention must be one of auto, sdpa, row_invariant"):
        EngineConfig(attention="flash")
    fp64 = load_model("dummy:tiny-llama", dtype=torch.float64, seed=1)
    assert Engine(fp64).row_invariant is False  # auto: fp64 stays on SDPA
    with pytest.raises(ValueError, match=r"fp32 on a CPU and this model is torch.float64.*use 'sdpa' or 'auto'"):
        Engine(fp64, EngineConfig(attention="row_invariant"))
    fp32 = load_model("dummy:tiny-llama", seed=1)
    with pytest.raises(ValueError, match="kv_int8 is on"):
        Engine(fp32, EngineConfig(attention="row_invariant", kv_int8=True))
    assert Engine(fp32, EngineConfig(attention="sdpa")).row_invariant is False


def _int8_vnni_model():  # type: ignore[no-untyped-def]
    if available_modes().get("int8_vnni") is not None:
        pytest.skip(f"int8_vnni: {available_modes()['int8_vnni']}")
    loaded = load_model("dummy:tiny-qwen2", seed=3)
    quantize_model(loaded.model, "int8_vnni")
    return loaded


def _serve(engine: Engine, requests: list[tuple[list[int], int]]) -> list[tuple[list[int], float]]:
    params = [SamplingParams(max_tokens=m, ignore_eos=True) for _, m in requests]
    ids = [engine.add_request(p, s) for (p, _), s in zip(requests, params, strict=True)]
    engine.run_until_done()
    return [(engine.output_ids(i), engine.record(i).logprob_sum) for i in ids]


@needs_kernel
def test_engine_rows_are_bit_identical_across_batches_chunks_and_speculation() -> None:
    """With row-invariant GEMMs (int8_vnni) and this kernel, a request's every logit is the same bits alone, in
    a batch of 8 with 16-token steps (chunked prefills, other lengths beside it) and with prompt-lookup drafts
    verified k at a time: its summed log-probabilities are equal exactly, not approximately."""
    loaded = _int8_vnni_model()
    g = torch.Generator().manual_seed(8)
    lengths = (40, 7, 90, 3, 55, 12, 31, 64)
    requests = [(torch.randint(3, 200, (n,), generator=g).tolist() * 2, 20) for n in lengths]
    base = EngineConfig(attention="row_invariant", track_logprobs=True, block_size=4)
    alone = [_serve(Engine(loaded, base), [r])[0] for r in requests]
    tight = dataclasses.replace(base, max_batch=8, max_tokens_per_step=16)
    batched = _serve(Engine(loaded, tight), requests)
    drafting = dataclasses.replace(tight, speculative="prompt_lookup", spec_adaptive=False)
    spec = _serve(Engine(loaded, drafting), requests)
    assert batched == alone
    assert spec == alone


@needs_kernel
def test_auto_uses_the_kernel_on_fp32_where_it_is_fast() -> None:
    loaded = load_model("dummy:tiny-llama", seed=1)
    assert Engine(loaded).row_invariant is (row_attention.auto_declines() is None)
    kv = 64 * PagedKVCache.bytes_per_block(loaded.config, 4, torch.float32)
    engine = Engine(loaded, EngineConfig(kv, 4, attention="row_invariant"))
    ids = engine.add_request([5, 6, 7, 8, 9], SamplingParams(max_tokens=6, ignore_eos=True))
    engine.run_until_done()
    sdpa = Engine(loaded, EngineConfig(kv, 4, attention="sdpa"))
    other = sdpa.add_request([5, 6, 7, 8, 9], SamplingParams(max_tokens=6, ignore_eos=True))
    sdpa.run_until_done()
    assert engine.output_ids(ids) == sdpa.output_ids(other)  # same model, same greedy tokens (no near-tie here)
