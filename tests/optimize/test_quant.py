"""Weight quantization: each module against fp32, the model swap, bytes per weight, and the engine on top."""

from __future__ import annotations

import pytest
import torch

from joulepath.engine import Engine, EngineConfig, SamplingParams
from joulepath.model import DenseCausalAttention, load_model
from joulepath.model.transformer import Linear, Transformer
from joulepath.optimize import MODES, QuantizedLinear, QuantMode, available_modes, quantize_model
from joulepath.optimize.quant import Int8DynamicLinear, groupwise_int4, make_quantized

from .conftest import random_linear

# Relative (Frobenius) error bounds against fp32 for Gaussian weights and activations: int8 RTN is ~1%,
# int4 RTN ~8% at group 32 and ~10% at 128; bf16 activations add ~0.4%.
REL_ERROR = {"int8_dynamic": 0.03, "int8_weight_only": 0.03, "int4_weight_only": 0.15}
BYTES_PER_WEIGHT = {"int8_dynamic": (1.0, 1.2), "int8_weight_only": (1.0, 1.05), "int4_weight_only": (0.5, 0.65)}


def require(mode: QuantMode) -> None:
    reason = available_modes()[mode]
    if reason is not None:
        pytest.skip(reason)


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm())


def tiny(name: str = "tiny-qwen2") -> Transformer:
    return load_model(f"dummy:{name}").model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 8])
def test_quantized_linear_close_to_fp32(mode: QuantMode, bias: bool, rows: int) -> None:
    require(mode)
    layer = random_linear(256, 96, bias)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, q = layer(x), make_quantized(mode, layer, group_size=64)
        y = q(x)
    assert y.shape == (rows, 96) and y.dtype == torch.float32
    assert rel_error(y, ref) < REL_ERROR[mode]
    assert q.in_features == 256 and q.out_features == 96
    if layer.bias is not None:  # kept in fp32 (and added: dropping it would break the error bound above)
        assert q.bias is not None and torch.equal(q.bias, layer.bias.detach())


@pytest.mark.parametrize("mode", MODES)
def test_quantized_linear_keeps_bf16_and_leading_dims(mode: QuantMode) -> None:
    require(mode)
    layer = random_linear(128, 64, bias=True)
    q = make_quantized(mode, layer, group_size=32)
    x = torch.randn(2, 3, 128)
    with torch.no_grad():
        y = q(x.bfloat16())
        ref = layer(x.reshape(6, 128)).reshape(2, 3, 64)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 64)
    assert rel_error(y, ref) < REL_ERROR[mode] + 0.02


def test_int8_dynamic_scales_activations_per_token() -> None:
    require("int8_dynamic")
    layer = random_linear(256, 64, bias=True)
    q = make_quantized("int8_dynamic", layer)
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(3))
    x[0] *= 1000  # one outlier token: with a single activation scale the other rows would keep ~0 bits
    with torch.no_grad():
        y, ref = q(x), layer(x)
    for row in range(4):
        assert rel_error(y[row], ref[row]) < REL_ERROR["int8_dynamic"]


def test_int4_group_size_trades_error_for_bytes() -> None:
    require("int4_weight_only")
    layer = random_linear(256, 64, bias=False)
    x = torch.randn(4, 256)
    with torch.no_grad():
        ref = layer(x)
        errors = {g: rel_error(make_quantized("int4_weight_only", layer, g)(x), ref) for g in (32, 256)}
    small, large = make_quantized("int4_weight_only", layer, 32), make_quantized("int4_weight_only", layer, 256)
    assert errors[32] < errors[256]
    assert small.bytes_per_weight > large.bytes_per_weight > 0.5


def test_groupwise_int4_reconstructs_within_half_a_step() -> None:
    w = torch.randn(64, 16)  # (K, N)
    codes, sz = groupwise_int4(w, 32)  # (N, K), (K/32, N, 2)
    scale, zero = sz[..., 0].t().repeat_interleave(32, 1), sz[..., 1].t().repeat_interleave(32, 1)  # (N, K)
    w_hat = (codes - 8) * scale + zero
    assert codes.min() >= 0 and codes.max() <= 15
    assert ((w_hat - w.t()).abs() <= scale / 2 + 1e-5).all()


@pytest.mark.parametrize("mode", MODES)
def test_quantize_model_swaps_all_and_counts_bytes(mode: QuantMode) -> None:
    require(mode)
    model = tiny()
    n_linear = sum(isinstance(m, Linear) for m in model.modules())
    before = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, Linear))
    summary = quantize_model(model, mode, group_size=32)
    assert len(summary.swapped) == n_linear == 2 * 4 + 1 and summary.skipped == ()
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert summary.weight_bytes_before == before
    lo, hi = BYTES_PER_WEIGHT[mode]
    assert lo <= summary.bytes_per_weight < hi
    assert summary.weight_bytes_after == pytest.approx(summary.bytes_per_weight * before / 4)
    assert isinstance(model.get_submodule("layers.0.attention.wqkv"), QuantizedLinear)


def test_skip_by_name_and_suffix() -> None:
    require("int8_weight_only")
    model = tiny("tiny-llama")
    summary = quantize_model(model, "int8_weight_only", skip=("output", "w2"))
    assert summary.skipped == ("layers.0.feed_forward.w2", "layers.1.feed_forward.w2", "output")
    assert "layers.0.feed_forward.w13" in summary.swapped and len(summary.swapped) == 6
    assert isinstance(model.output, Linear) and isinstance(model.get_submodule("layers.1.feed_forward.w2"), Linear)
    assert 1.0 < summary.bytes_per_weight < 4.0  # the fp32 layers still count


@pytest.mark.parametrize("mode", MODES)
def test_tied_embedding_still_embeds_identically(mode: QuantMode) -> None:
    require(mode)
    model = tiny("tiny-qwen2")
    assert model.cfg.tie_embeddings
    tokens = torch.tensor([3, 17, 250, 0])
    table = model.output.weight.clone()
    before = model.embed(tokens).clone()
    summary = quantize_model(model, mode, group_size=32)
    assert torch.equal(model.embed(tokens), before)
    assert summary.embedding_bytes_kept == table.numel() * 4
    assert isinstance(model.output, QuantizedLinear) and torch.equal(model.output.weight, table)


def greedy_agreement(fp: Transformer, quantized: Transformer, n_tokens: int = 48) -> float:
    tokens = torch.randint(0, fp.cfg.vocab_size, (n_tokens,), generator=torch.Generator().manual_seed(2))
    positions = torch.arange(n_tokens)
    with torch.no_grad():
        ref = fp(tokens, positions, DenseCausalAttention([n_tokens])).argmax(-1)
        got = quantized(tokens, positions, DenseCausalAttention([n_tokens])).argmax(-1)
    return float((ref == got).float().mean())


@pytest.mark.parametrize(
    ("mode", "min_agreement"), [("int8_dynamic", 0.85), ("int8_weight_only", 0.85), ("int4_weight_only", 0.7)]
)
def test_greedy_next_token_mostly_agrees(mode: QuantMode, min_agreement: float) -> None:
    require(mode)
    fp, quantized = tiny("tiny-llama"), tiny("tiny-llama")  # same seed: the same random weights
    quantize_model(quantized, mode, group_size=32)
    assert greedy_agreement(fp, quantized) >= min_agreement


@pytest.mark.parametrize("mode", MODES)
def test_engine_runs_on_a_quantized_model(mode: QuantMode) -> None:
    require(mode)
    loaded = load_model("dummy:tiny-qwen2")
    quantize_model(loaded.model, mode, group_size=32)
    engine = Engine(loaded, EngineConfig(kv_memory_bytes=2**20))
    out = engine.generate(["hello", "hi"], SamplingParams(max_tokens=4, ignore_eos=True))
    assert [len(c.output_ids) for c in out] == [4, 4]


@pytest.mark.parametrize("mode", MODES)
def test_no_rows_in_no_rows_out(mode: QuantMode) -> None:
    """The engine asks the LM head for no rows in a step where no chunk samples (a long prompt's middle)."""
    require(mode)
    q = make_quantized(mode, random_linear(64, 48, bias=True), group_size=32)
    with torch.no_grad():
        assert q(torch.empty(0, 64)).shape == (0, 48)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown quantization mode 'int3'.*int8_dynamic"):
        quantize_model(tiny(), "int3")  # type: ignore[arg-type]


def test_bad_group_sizes_are_refused_before_any_swap() -> None:
    require("int4_weight_only")
    with pytest.raises(ValueError, match="group_size must be one of"):
        quantize_model(tiny(), "int4_weight_only", group_size=48)
    model = tiny("tiny-mistral")  # d_ff = 160: w2's in_features is not a multiple of 128
    with pytest.raises(ValueError, match=r"layers\.0\.feed_forward\.w2 \(160 -> 64\).*skip"):
        quantize_model(model, "int4_weight_only", group_size=128)
    assert all(isinstance(m, Linear) for m in (model.output, model.get_submodule("layers.0.attention.wqkv")))
    assert quantize_model(model, "int4_weight_only", group_size=32).skipped == ()


def test_skip_name_that_matches_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="match no Linear module"):
        quantize_model(tiny(), "int8_weight_only", skip=("lm_head",))


def test_int4_pads_out_features_to_the_kernels_multiple() -> None:
    require("int4_weight_only")
    layer = random_linear(64, 402, bias=True)  # jp-large's vocabulary: 402 % 16 != 0
    q = make_quantized("int4_weight_only", layer, group_size=32)
    x = torch.randn(3, 64)
    with torch.no_grad():
        y, ref = q(x), layer(x)
    assert y.shape == (3, 402) and rel_error(y, ref) < REL_ERROR["int4_weight_only"]


def test_int8_dynamic_is_batch_invariant() -> None:
    """A token's output does not depend on the other tokens in the call (speculative verify chunks,
    prefix-cache hits and batches reproduce a 1-token step bit for bit)."""
    require("int8_dynamic")
    layer = Int8DynamicLinear(random_linear(64, 48, bias=True).weight.data, torch.randn(48))
    x = torch.randn(6, 64) * torch.tensor([[0.1], [1.0], [5.0], [0.01], [2.0], [0.5]])
    together = layer(x)
    alone = torch.cat([layer(x[i : i + 1]) for i in range(6)])
    assert torch.equal(together, alone)


def test_speculative_decoding_on_int8_dynamic_weights_is_token_identical() -> None:
    require("int8_dynamic")
    loaded = load_model("dummy:tiny-llama", seed=4)
    quantize_model(loaded.model, "int8_dynamic")
    prompts = [[5, 6, 7, 8] * 4, [9, 10, 11] * 5, [12, 13] * 6]
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    plain = [c.output_ids for c in Engine(loaded, EngineConfig(block_size=4)).generate(prompts, params)]
    config = EngineConfig(block_size=4, speculative="prompt_lookup", spec_adaptive=False)
    engine = Engine(loaded, config)
    assert [c.output_ids for c in engine.generate(prompts, params)] == plain
    assert sum(r.draft_proposed for r in engine.records) > 0
