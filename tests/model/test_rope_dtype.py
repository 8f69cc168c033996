"""RoPE angles stay fp32 when the weights are cast to bf16 (a bf16 position x frequency product keeps only ~535
distinct positions below 1,200, so a bf16 model would read long prompts with the wrong positions)."""

from __future__ import annotations

import torch

from joulepath.model import DenseCausalAttention, load_model
from joulepath.model.transformer import rope_inv_freq


def test_inv_freq_stays_fp32_through_dtype_casts() -> None:
    loaded = load_model("dummy:tiny-llama", dtype=torch.bfloat16)
    model = loaded.model
    assert model.inv_freq.dtype == torch.float32
    assert torch.equal(model.inv_freq, rope_inv_freq(loaded.config))
    model.half()
    assert model.inv_freq.dtype == torch.float32 and torch.equal(model.inv_freq, rope_inv_freq(loaded.config))


def test_bf16_model_sees_far_positions_as_fp32_does() -> None:
    fp32 = load_model("dummy:tiny-llama", seed=1).model
    bf16 = load_model("dummy:tiny-llama", seed=1, dtype=torch.bfloat16).model
    tokens = torch.randint(5, 200, (24,), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(24) * 40 + 300  # spread over 300-1,220, where bf16 positions round to steps of 4-8
    with torch.no_grad():
        ref = fp32(tokens, positions, DenseCausalAttention([24]))
        got = bf16(tokens, positions, DenseCausalAttention([24])).float()
    assert float((got - ref).norm() / ref.norm()) < 0.03  # bf16 weights and activations only
