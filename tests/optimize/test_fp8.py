"""fp8_dynamic: float8_e4m3fn weights and per-token activations on `torch._scaled_mm`. A GPU lever; on a CPU
torch's reference path runs the same numerics slowly, which is what these tests check (`reference=True`)."""

from __future__ import annotations

import pytest
import torch

from joulepath.model import load_model
from joulepath.optimize import available_modes, quantize_model
from joulepath.optimize.quant import FP8_MAX, Fp8DynamicLinear, _check_fp8_shapes, per_channel_fp8

from .conftest import random_linear
from .test_quant import greedy_agreement, rel_error

# e4m3 keeps 3 mantissa bits: rounding moves a value by at most 1/16 of it, ~3 % RMS for weights and
# activations alike; their product's error adds in quadrature, and sums over K average it further.
REL_ERROR_FP8 = 0.06


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 8])
def test_fp8_linear_close_to_fp32(bias: bool, rows: int) -> None:
    layer = random_linear(256, 96, bias)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, y = layer(x), Fp8DynamicLinear(layer.weight, layer.bias)(x)
    assert y.shape == (rows, 96) and y.dtype == torch.float32
    assert 0 < rel_error(y, ref) < REL_ERROR_FP8  # quantized (not exact), within e4m3's rounding


def test_fp8_takes_strided_inputs_as_the_engine_hands_them_over() -> None:
    """The engine's LM head reads gathered rows (`hidden[logit_rows]`): any strides, any number of rows."""
    layer = random_linear(64, 48, True)
    q = Fp8DynamicLinear(layer.weight, layer.bias)
    hidden = torch.randn(64, 9)
    for x in (hidden.t()[3:4], hidden.t()[::2], torch.randn(5, 1, 64).expand(5, 2, 64)):
        with torch.no_grad():
            ref = layer(x.reshape(-1, 64)).view(*x.shape[:-1], 48)
            assert rel_error(q(x), ref) < REL_ERROR_FP8
    with torch.no_grad():  # a step where no chunk samples asks the LM head for no rows
        assert q(torch.empty(0, 64)).shape == (0, 48)


def test_fp8_weights_use_the_whole_range_per_channel() -> None:
    w = random_linear(64, 32, False).weight
    w.data[:, 3] *= 100  # one loud output channel must not squash the others
    values, scales = per_channel_fp8(w)
    assert values.dtype == torch.float8_e4m3fn and values.shape == (32, 64)
    assert torch.allclose(values.float().abs().amax(dim=1), torch.full((32,), FP8_MAX))
    assert torch.allclose(values.float() * scales[:, None], w.t(), rtol=0.07, atol=0)


def test_fp8_scales_activations_per_token() -> None:
    """A token's output does not depend on the other tokens in the call (one scale per row), so a batch, a
    speculative verify chunk or a prefix-cache hit computes each token as a 1-token step does."""
    q = Fp8DynamicLinear(random_linear(128, 48, True).weight, None)
    x = torch.randn(1, 128, generator=torch.Generator().manual_seed(3))
    loud = torch.randn(1, 128) * 1000
    with torch.no_grad():
        alone, mixed = q(x), q(torch.cat([loud, x, loud]))[1:2]
    assert torch.allclose(alone, mixed, rtol=1e-6, atol=1e-6)


def test_fp8_pads_out_features_to_sixteen() -> None:
    layer = random_linear(64, 402, bias=True)  # jp-large's vocabulary: 402 % 16 != 0
    q = Fp8DynamicLinear(layer.weight, layer.bias)
    assert q.weight_fp8.shape == (416, 64) and q.weight_scale.shape == (1, 416)
    x = torch.randn(3, 64)
    with torch.no_grad():
        y, ref = q(x), layer(x)
    assert y.shape == (3, 402) and rel_error(y, ref) < REL_ERROR_FP8
    assert 1.0 <= q.bytes_per_weight < 1.1  # one byte a weight, plus the padding and the fp32 column scales


def test_fp8_is_refused_on_a_cpu_unless_asked_for_the_reference() -> None:
    reason = available_modes()["fp8_dynamic"]
    assert reason is not None and "compute capability 8.9" in reason and "reference" in reason
    model = load_model("dummy:tiny-llama").model
    with pytest.raises(ValueError, match=r"fp8_dynamic.*cannot run here.*8\.9"):
        quantize_model(model, "fp8_dynamic")
    summary = quantize_model(model, "fp8_dynamic", reference=True)
    assert summary.mode == "fp8_dynamic" and 1.0 <= summary.bytes_per_weight < 1.1


def test_fp8_model_mostly_agrees_with_fp32() -> None:
    fp, quantized = load_model("dummy:tiny-llama").model, load_model("dummy:tiny-llama").model
    quantize_model(quantized, "fp8_dynamic", reference=True)
    assert greedy_agreement(fp, quantized) >= 0.85


def test_fp8_needs_in_features_divisible_by_sixteen() -> None:
    with pytest.raises(ValueError, match=r"divisible by 16.*proj \(40 -> 32\).*skip"):
        _check_fp8_shapes({"proj": random_linear(40, 32, False)})
