"""The static cache with a batch of equal-length prompts (the quantization benchmarks' batched decode path)."""

from __future__ import annotations

import pytest
import torch

from joulepath.engine import SamplingParams
from joulepath.engine.static_decode import generate_static, greedy_static
from joulepath.model import load_model


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-mistral"])  # tiny-mistral: a sliding window
def test_batched_static_decode_equals_each_sequence_alone(preset: str) -> None:
    loaded = load_model(f"dummy:{preset}", seed=3)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 200, (9,), generator=gen).tolist() for _ in range(3)]
    batch = greedy_static(loaded.model, prompts, steps=12)
    assert batch.steps == 12 and not batch.captured and batch.decode_tokens_per_s > 0
    for prompt, out in zip(prompts, batch.output_ids, strict=True):
        alone = generate_static(loaded.model, prompt, SamplingParams(max_tokens=13, temperature=0.0))
        assert out == alone.output_ids


def test_batched_static_decode_refuses_what_it_cannot_do() -> None:
    model = load_model("dummy:tiny-llama").model
    with pytest.raises(ValueError, match=r"one length.*\[2, 3\]"):
        greedy_static(model, [[1, 2], [1, 2, 3]], steps=4)
    with pytest.raises(ValueError, match="CUDA-graph capture needs the model on a CUDA device"):
        greedy_static(model, [[1, 2]], steps=4, capture=True)
    with pytest.raises(ValueError, match="steps"):
        greedy_static(model, [[1] * 500], steps=100)
