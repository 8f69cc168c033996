"""Parity with Hugging Face transformers: tiny random Llama, Qwen2 and Mistral models built and saved by
`transformers`, loaded by joulepath; logits within 1e-4 (fp32) and identical greedy generations."""

from pathlib import Path

import pytest
import torch

from joulepath.model import DenseCausalAttention, load_model

transformers = pytest.importorskip("transformers")

COMMON = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
BUILDERS = {
    "llama": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**COMMON, num_key_value_heads=2, rope_theta=50000.0, tie_word_embeddings=False)
    ),
    "llama3-rope": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            **COMMON,
            num_key_value_heads=2,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        )
    ),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(**COMMON, num_key_value_heads=2, tie_word_embeddings=True)
    ),
    "mistral": lambda: transformers.MistralForCausalLM(
        transformers.MistralConfig(**COMMON, num_key_value_heads=1, sliding_window=8)
    ),
}
PROMPTS = [[1, 5, 9, 33, 4], [1, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80], [1, 3]]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def pair(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    hf = BUILDERS[request.param]().eval()
    with torch.no_grad():  # random biases so Qwen2's qkv bias is exercised
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    folder: Path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    return hf, load_model(str(folder))


def _our_logits(loaded, ids: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    tokens = torch.tensor(ids)
    attend = DenseCausalAttention([len(ids)], loaded.config.sliding_window)
    return loaded.model(tokens, torch.arange(len(ids)), attend)


@torch.no_grad()
def test_logits_match(pair) -> None:  # type: ignore[no-untyped-def]
    hf, ours = pair
    for ids in PROMPTS:
        ref = hf(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(_our_logits(ours, ids), ref, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_greedy_generations_match(pair) -> None:  # type: ignore[no-untyped-def]
    hf, ours = pair
    for ids in PROMPTS:
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[
            0
        ].tolist()
        seq = list(ids)
        for _ in range(12):
            seq.append(int(_our_logits(ours, seq)[-1].argmax()))
        assert seq == ref
