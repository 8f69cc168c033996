"""The quantization modes on a CUDA GPU (fp8_dynamic, int8_weight_only, int4_weight_only); run on the device
machine only (`pytest -m gpu`)."""

from __future__ import annotations

import pytest
import torch

from joulepath.engine.static_decode import greedy_static
from joulepath.model import load_model
from joulepath.optimize import available_modes, quantize_model
from joulepath.optimize.quant import CPU_ONLY_MODES, FP8_MAX, make_quantized

from .conftest import random_linear
from .test_fp8 import REL_ERROR_FP8
from .test_quant import REL_ERROR, rel_error

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GPU_MODES = ("fp8_dynamic", "int8_weight_only", "int4_weight_only")
BOUND = {**REL_ERROR, "fp8_dynamic": REL_ERROR_FP8}


def require_cuda(mode: str) -> None:
    reason = available_modes("cuda")[mode]
    if reason is not None:
        pytest.skip(reason)


def test_cpu_kernels_are_refused_on_cuda_with_the_alternatives() -> None:
    for mode in CPU_ONLY_MODES:
        reason = available_modes("cuda")[mode]
        assert reason is not None and "fp8_dynamic" in reason


@pytest.mark.parametrize("mode", GPU_MODES)
@pytest.mark.parametrize("rows", [1, 8, 33])
def test_cuda_linear_close_to_fp32(mode: str, rows: int) -> None:
    require_cuda(mode)
    layer = random_linear(256, 402, bias=True).cuda()  # 402: padded to the kernels' multiple
    x = torch.randn(rows, 256, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    with torch.no_grad():
        ref, y = layer(x), make_quantized(mode, layer, group_size=64)(x.bfloat16())  # type: ignore[arg-type]
    assert y.shape == (rows, 402) and y.dtype == torch.bfloat16
    assert rel_error(y, ref) < BOUND[mode] + 0.02  # bf16 activations add a little


def test_fp8_on_cuda_computes_its_own_codes_times_scales() -> None:
    """The tensor-core GEMM against the dequantized product of the module's own codes and scales, in fp32."""
    require_cuda("fp8_dynamic")
    layer = random_linear(512, 256, bias=False).cuda()
    q = make_quantized("fp8_dynamic", layer)
    x = torch.randn(4, 512, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    scale = x.abs().amax(dim=1, keepdim=True) / FP8_MAX
    x8 = (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    w = q.weight_fp8.float() * q.weight_scale.t()  # (N, K)
    with torch.no_grad():
        ref = (x8.float() * scale) @ w.t()
        assert rel_error(q(x), ref) < 1e-2  # bf16 out; only the accumulation order differs


@pytest.mark.parametrize("mode", GPU_MODES)
def test_no_rows_in_no_rows_out_on_cuda(mode: str) -> None:
    require_cuda(mode)
    q = make_quantized(mode, random_linear(64, 48, bias=True).cuda(), group_size=32)  # type: ignore[arg-type]
    with torch.no_grad():
        assert q(torch.empty(0, 64, device="cuda")).shape == (0, 48)


@pytest.mark.parametrize("mode", GPU_MODES)
def test_quantized_decode_step_captures_as_a_cuda_graph(mode: str) -> None:
    require_cuda(mode)
    loaded = load_model("dummy:tiny-llama", device="cuda", dtype=torch.bfloat16, seed=7)
    quantize_model(loaded.model, mode, group_size=32)  # type: ignore[arg-type]
    prompts = [[1, 2, 3, 4], [9, 8, 7, 6]]
    eager = greedy_static(loaded.model, prompts, steps=12, capture=False)
    graph = greedy_static(loaded.model, prompts, steps=12)
    assert graph.captured and graph.output_ids == eager.output_ids
