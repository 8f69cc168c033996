"""CUDA paths of the engine; run on the device machine only (`pytest -m gpu`)."""

import pytest
import torch

from joulepath.engine import Engine, SamplingParams
from joulepath.engine.static_decode import generate_static
from joulepath.model import load_model

from .conftest import reference_greedy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GREEDY = SamplingParams(max_tokens=10, ignore_eos=True)


def test_engine_on_cuda_matches_dense_reference() -> None:
    # float64: exact argmax equality across different GEMM shapes needs rounding far below the logit gaps
    loaded = load_model("dummy:tiny-qwen2", device="cuda", dtype=torch.float64, seed=4)
    prompts = [[5, 6, 7], [9] * 40, list(range(3, 30))]
    outs = Engine(loaded).generate(prompts, GREEDY)
    for prompt, out in zip(prompts, outs, strict=True):
        assert out.output_ids == reference_greedy(loaded, prompt, 10)


def test_bf16_engine_runs_and_compiled_static_decode_matches_eager() -> None:
    loaded = load_model("dummy:tiny-llama", device="cuda", dtype=torch.bfloat16, seed=5)
    assert Engine(loaded).generate(["hello"], GREEDY)[0].record.output_tokens == 10
    eager = generate_static(loaded.model, [1, 2, 3, 4], GREEDY)
    generate_static(loaded.model, [1, 2, 3, 4], GREEDY, compile_decode=True)  # compile and capture
    compiled = generate_static(loaded.model, [1, 2, 3, 4], GREEDY, compile_decode=True)
    assert compiled.output_ids == eager.output_ids
    assert compiled.decode_tokens_per_s > eager.decode_tokens_per_s  # captured graphs beat eager launches


def test_batched_static_decode_captured_as_a_cuda_graph_matches_eager() -> None:
    from joulepath.engine.static_decode import greedy_static

    loaded = load_model("dummy:tiny-llama", device="cuda", dtype=torch.bfloat16, seed=6)
    prompts = [[1, 2, 3, 4], [9, 8, 7, 6], [5, 5, 5, 5]]
    eager = greedy_static(loaded.model, prompts, steps=16, capture=False)
    graph = greedy_static(loaded.model, prompts, steps=16)
    assert graph.captured and not eager.captured
    assert graph.output_ids == eager.output_ids
