"""Weight quantization as module swaps applied after a model loads (gpt-fast's `quantize.py` pattern).

Decoding one token streams every weight once, so on CPU a decode step costs about the bytes of its
weights. `quantize_model` replaces each `Linear` of a loaded `Transformer` with a module holding fewer
bytes per weight, computed by one of torch's own CPU int8/int4 kernels:

- "int8_dynamic": per-output-channel symmetric int8 weights; activations quantized to uint8 per token
  on the fly and multiplied on fbgemm's int8 GEMM (`quantized::linear_dynamic`, x86 engine). fbgemm
  takes one activation scale per call, so with several tokens each row is first divided by its absmax
  and the output rows multiplied back: per-token precision (jp-large's prefill KL to fp32 drops 5x,
  0.009 -> 0.002) for a few elementwise ops (up to ~18% of a batch-8 step, nothing at batch 1).
  `torch._int_mm` with row scales, the other per-token route, measured 2-4x slower per GEMM.
- "int8_weight_only": per-output-channel int8 weights, bf16 activations on
  `aten::_weight_int8pack_mm` (its fast CPU path needs bf16 inputs; fp32 inputs take a slow path).
- "int4_weight_only": group-wise (32/64/128/256) asymmetric round-to-nearest int4 weights with bf16
  scales and zeros, bf16 activations on `aten::_weight_int4pack_mm_for_cpu`.

Each route was chosen by timing Qwen2.5-0.5B's projection shapes (M = 1 and 8) against fp32 `x @ w`,
plain bf16 matmul, onednn's int8 and `torch._int_mm`. Whole-model decode of dummy:qwen2.5-0.5b on this
project's 2-core AMD EPYC VM (AVX512-VNNI, 2 threads, median of 3-4, ms per step, batch 1 / batch 8):
fp32 105 / 271; int8_dynamic 26.2 / 34.7 (4.0x / 7.8x); int8_weight_only 38.2 / 99.8 (2.7x / 2.7x);
int4_weight_only g128 23.1 / 60.3 (4.5x / 4.5x); runs on other minutes moved these by up to 15%. The
weight-only kernels are compute-bound here (batch 1 streams ~11 GB/s of int4 where fp32 streams
~19 GB/s), so a batch-8 step costs them about 2.6x a batch-1 step, and int8_dynamic 1.3x.

joulepath's own kernels (`vnni.py`; `vnni_kernels.c`, plain C with AVX512-VNNI intrinsics, and its AVX2 twin
`avx2_kernels.c` for CPUs without VNNI, bit-identical outputs; built by the system gcc on first use and called
through ctypes; opt-in modes listed in `VNNI_MODES`, beside torch's `MODES`):

- "int8_vnni": the same per-channel int8 weight codes as int8_dynamic, repacked 64 rows x 4 inputs per step;
  activations int8 per token (absmax / 127); `vpdpbusd` sums (AVX2: `vpmaddubsw` on |x| and w * sign(x), which
  cannot saturate), fp32 epilogue with both scales and the bias.
- "int4_vnni": the same group-wise asymmetric RTN codes as int4_weight_only, two per byte, unpacked in
  registers; bf16 scale and min per group; activations as int8_vnni.
Both are memory-bound GEMVs for 1-8 tokens per weight pass (longer inputs run in chunks of 8 in the same call),
batch-invariant, rows split over torch's threads (OpenMP). Measured on the AVX512-VNNI 2-core EPYC, 1 thread, load
average 0.6-1.0 (`benchmarks/quant_kernels.py`, results/quant_kernels.json): per GEMM at M = 1, cold weights, the
LM head 896 -> 151,936 takes int8_vnni 4.6 ms (29 GB/s) and int4_vnni 2.7 ms (27 GB/s) against fbgemm's 7.2 ms,
torch int4's 7.1 ms and fp32's 21.3 ms, with a read roofline of 28-31 GB/s at 1 thread; dummy:qwen2.5-0.5b decodes
at batch 1 with int8_vnni at 37.9 tokens/s and int4_vnni at 56.0 (4.3x / 6.3x fp32's 9.0; 1.42x / 2.08x
transformers + quantize_dynamic's 26.8; int8_dynamic 25.8, int4_weight_only 27.7), and at batch 8 with 172 / 175
tokens/s (6.5x / 6.6x fp32; int8_dynamic 134, transformers 155), median of 5 interleaved repetitions (two earlier
runs at load 0.9-1.25: batch 1 34.3-38.7 and 49.9-56.4). On jp-large's gate (240 examples) int8_vnni passes (KL
0.0010) and int4_vnni passes with the LM head kept (`+skip=output`), as int4_weight_only does.

On a CUDA GPU (the modules are built on the model's device; `available_modes(device)` probes each there):
- "fp8_dynamic": per-output-channel float8_e4m3fn weights (absmax / 448), activations e4m3 per token on the
  fly, `torch._scaled_mm` with row-wise fp32 scales and bf16 out (sm_89+: Ada, Hopper, Blackwell; K and N
  multiples of 16, N padded). torch's CPU `_scaled_mm` is a reference that dequantizes to fp32 (~30x slower
  than fp32 matmul here, measured), so on a CPU the mode is refused unless `reference=True` asks for it.
- "int8_weight_only": the same codes on torch's CUDA `_weight_int8pack_mm` (fp32 accumulation, no tensor cores).
- "int4_weight_only": the same RTN codes packed for tinygemm (`_convert_weight_to_int4pack`: uint8 (N, K/2),
  even column in the high nibble; `_weight_int4pack_mm`, bf16 activations, sm_80+).
The CPU kernels (int8_dynamic's fbgemm, the VNNI modes) are refused on a GPU with the GPU modes named.

Tied embeddings: `Transformer.embed` reads columns of `output.weight`, so a quantized tied head keeps
that fp parameter (registered as its `weight`) for the embedding only; its forward reads the packed
copy. `QuantSummary.embedding_bytes_kept` says how many bytes that costs.

References: gpt-fast `quantize.py` (WeightOnlyInt8Linear, WeightOnlyInt4Linear, group-wise RTN with
scales_and_zeros); torchao `quantization/quant_primitives.py` (the same int4 convention);
fbgemm's dynamic quantized linear (`torch.ao.nn.quantized.dynamic.Linear`).

    >>> from joulepath.model import load_model
    >>> loaded = load_model("dummy:tiny-llama")
    >>> quantize_model(loaded.model, "int8_weight_only").swapped[:2]
    ('layers.0.attention.wqkv', 'layers.0.attention.wo')
"""

from __future__ import annotations

import abc
import contextlib
import functools
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from joulepath.model.transformer import Linear, Transformer
from joulepath.optimize import vnni

QuantMode = Literal["int8_dynamic", "int8_weight_only", "int4_weight_only", "int8_vnni", "int4_vnni", "fp8_dynamic"]
# torch's kernels (`MODES`) and joulepath's own VNNI kernels (`vnni`, `VNNI_MODES`); `ALL_MODES` is what
# `quantize_model`, the levers, the tuner, `bench.quantize` and the main job's `serve.quantize` accept.
MODES: tuple[QuantMode, ...] = ("int8_dynamic", "int8_weight_only", "int4_weight_only", "fp8_dynamic")
VNNI_MODES: tuple[QuantMode, ...] = ("int8_vnni", "int4_vnni")
ALL_MODES: tuple[QuantMode, ...] = get_args(QuantMode)
INT4_MODES: tuple[QuantMode, ...] = ("int4_weight_only", "int4_vnni")
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what `_weight_int4pack_mm_for_cpu` accepts
INT4_N_MULTIPLE = 16  # `_convert_weight_to_int4pack_for_cpu` wants out_features % 16 == 0: we pad to it
_INT4_INNER_K_TILES = 8  # gpt-fast's default; the CPU packer ignores it (checked: 1, 2, 4, 8 pack alike)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP8_MULTIPLE = 16  # `_scaled_mm` on CUDA wants in_features and out_features % 16 == 0: out is padded to it
FP8_MIN_CAPABILITY = (8, 9)  # Ada, Hopper, Blackwell: FP8 tensor cores and row-wise scaled GEMMs
CPU_ONLY_MODES: tuple[QuantMode, ...] = ("int8_dynamic", "int8_vnni", "int4_vnni")  # fbgemm and joulepath's kernels


class QuantizedLinear(nn.Module, abc.ABC):
    """What every quantized replacement of `Linear` shares: shapes, fp32 bias, byte accounting.

    forward(x: (..., in_features)) -> (..., out_features) in x's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias: Tensor | None
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @property
    @abc.abstractmethod
    def weight_bytes(self) -> int:
        """Bytes the forward streams for the weight: quantized values plus their scales (and zeros)."""

    @property
    def bytes_per_weight(self) -> float:
        """Bytes per weight element, scale overhead included (int8 ~1.0, int4 g128 ~0.53)."""
        return self.weight_bytes / (self.in_features * self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def per_channel_int8(weight_kn: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8 of a (K, N) weight: values (N, K) in [-127, 127] and fp32 scales (N,)."""
    w_nk = weight_kn.detach().float().t()  # (N, K)
    scales = w_nk.abs().amax(dim=1).clamp(min=1e-12) / 127  # (N,)
    q = torch.round(w_nk / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()  # (N, K)
    return q, scales


def groupwise_int4(weight_kn: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Asymmetric round-to-nearest int4 per group of `group_size` input rows (gpt-fast's convention).

    Returns codes (N, K) int32 in [0, 15] and scales_and_zeros (K/group, N, 2) fp32, dequantized as
    w = (code - 8) * scale + zero, i.e. zero = min + 8 * scale."""
    k, n = weight_kn.shape
    w = weight_kn.detach().float().t().reshape(n, k // group_size, group_size)  # (N, G, group)
    lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)  # (N, G, 1)
    scales = (hi - lo).clamp(min=1e-6) / 15
    zeros = lo + 8 * scales
    codes = torch.round((w - lo) / scales).clamp(0, 15).to(torch.int32).reshape(n, k)  # (N, K)
    scales_and_zeros = torch.cat([scales, zeros], dim=-1).transpose(0, 1).contiguous()  # (G, N, 2)
    return codes, scales_and_zeros


@functools.cache
def int8_dynamic_saturates() -> bool:
    """Whether fbgemm's uint8 x int8 kernel saturates int16 pair sums on this CPU (AVX2/AVX512 without
    VNNI use vpmaddubsw: 255 * 127 * 2 > 32767). Found by trying it: all-ones activations (codes 255)
    against all-ones weights (codes 127) must sum to K. Where it saturates, activations get 7 bits
    (`reduce_range=True`), which costs one bit of activation precision."""
    k = 64
    packed = _prepack_int8(torch.ones(k, 16), None)
    y = torch.ops.quantized.linear_dynamic(torch.ones(1, k), packed, False)  # exact answer: k everywhere
    return bool((y - k).abs().max() > 1.0)


def _quantized_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm"):  # x86 dispatches linear to fbgemm; onednn measured 1.5x slower
        if name in engines:
            return name
    raise RuntimeError(f"no fbgemm/x86 quantized engine in this torch build (has {engines})")


def _prepack_int8(weight_kn: Tensor, bias: Tensor | None) -> torch.ScriptObject:
    """fbgemm-packed per-channel int8 weight (and fp32 bias) for `quantized::linear_dynamic`."""
    q, scales = per_channel_int8(weight_kn)
    zero_points = torch.zeros(q.shape[0], dtype=torch.long)
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = _quantized_engine()
        with warnings.catch_warnings():  # quantized tensors are deprecated as a user API; prepack still takes one
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(q, scales.double(), zero_points, 0)
        return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())
    finally:
        torch.backends.quantized.engine = previous


class Int8DynamicLinear(QuantizedLinear):
    """int8 weights (per output channel) times dynamically quantized uint8 activations on fbgemm.

    The packed matrix lives in an fbgemm object, not in buffers: CPU only, and not in `state_dict`
    (quantize after loading, as gpt-fast does)."""

    def __init__(self, weight_kn: Tensor, bias: Tensor | None) -> None:
        super().__init__(weight_kn.shape[0], weight_kn.shape[1], bias)
        self.reduce_range = int8_dynamic_saturates()
        # Two zero weight rows for two anchor input columns (+1, -1): see `forward`.
        anchored = torch.cat([weight_kn.float(), weight_kn.new_zeros(2, weight_kn.shape[1]).float()])
        self._packed = _prepack_int8(anchored, None)  # bias added after the per-token rescale

    @property
    def weight_bytes(self) -> int:
        # int8 values (two anchor rows too) plus fbgemm's per-channel fp32 scale, int32 zero point and offset
        return (self.in_features + 2) * self.out_features + 12 * self.out_features

    def forward(self, x: Tensor) -> Tensor:
        """Per-token and batch-invariant: each row is scaled to [-1, 1] and two anchor columns (+1 and -1,
        times zero weights) pin fbgemm's per-call activation range to exactly [-1, 1], so a token's int8
        values, and its output, do not depend on which other tokens share the call (a speculative verify
        chunk, a prefix-cache hit or a batch reproduce a 1-token step bit for bit)."""
        x2 = x.reshape(-1, self.in_features).float()  # (T, K)
        rows = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)  # (T, 1)
        anchors = x2.new_tensor([[1.0, -1.0]]).expand(x2.shape[0], 2)
        xa = torch.cat([x2 / rows, anchors], dim=1)  # (T, K + 2)
        y = torch.ops.quantized.linear_dynamic(xa, self._packed, self.reduce_range)  # (T, N) fp32
        y = y * rows if self.bias is None else torch.addcmul(self.bias, y, rows)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)


class Int8WeightOnlyLinear(QuantizedLinear):
    """int8 weights (per output channel) with bf16 activations on `aten::_weight_int8pack_mm` (CPU: its
    bf16 fast path; CUDA: torch's own int8 kernel, fp32 accumulation, no tensor cores)."""

    def __init__(self, weight_kn: Tensor, bias: Tensor | None) -> None:
        super().__init__(weight_kn.shape[0], weight_kn.shape[1], bias)
        q, scales = per_channel_int8(weight_kn)
        self.weight_int8: Tensor
        self.scales: Tensor
        self.register_buffer("weight_int8", q)  # (N, K)
        self.register_buffer("scales", scales.to(torch.bfloat16))  # (N,): the kernel wants the input's dtype

    @property
    def weight_bytes(self) -> int:
        return self.weight_int8.numel() + self.scales.numel() * self.scales.element_size()

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (T, K): the kernels want it dense
        if x2.shape[0] == 0:  # a step that samples nothing: CUDA's kernel cannot launch an empty grid
            return x.new_zeros(*x.shape[:-1], self.out_features)
        y = torch.ops.aten._weight_int8pack_mm(x2, self.weight_int8, self.scales).to(x.dtype)  # (T, N)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)


class Int4WeightOnlyLinear(QuantizedLinear):
    """Group-wise int4 weights with bf16 activations on `aten::_weight_int4pack_mm_for_cpu`."""

    def __init__(self, weight_kn: Tensor, bias: Tensor | None, group_size: int = 128) -> None:
        super().__init__(weight_kn.shape[0], weight_kn.shape[1], bias)
        self.group_size = group_size
        pad = -self.out_features % INT4_N_MULTIPLE  # zero columns, sliced off the output again
        codes, scales_and_zeros = groupwise_int4(F.pad(weight_kn.detach(), (0, pad)), group_size)
        self.weight_int4: Tensor
        self.scales_and_zeros: Tensor
        if codes.is_cuda:  # tinygemm's layout: even input column in the high nibble, then its own tiling
            nibbles = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8).contiguous()  # (N, K/2)
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, int4_inner_k_tiles(self.in_features))
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, _INT4_INNER_K_TILES)  # (N, K/2) uint8
        self.register_buffer("weight_int4", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))  # (K/group, N, 2)

    @property
    def weight_bytes(self) -> int:
        sz = self.scales_and_zeros
        return self.weight_int4.numel() * self.weight_int4.element_size() + sz.numel() * sz.element_size()

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (T, K): the kernels want it dense
        if x2.shape[0] == 0:  # a step that samples nothing: tinygemm cannot launch an empty grid
            return x.new_zeros(*x.shape[:-1], self.out_features)
        mm = torch.ops.aten._weight_int4pack_mm if x2.is_cuda else torch.ops.aten._weight_int4pack_mm_for_cpu
        y = mm(x2, self.weight_int4, self.group_size, self.scales_and_zeros)
        y = y[:, : self.out_features].to(x.dtype)  # (T, N): drops the padding columns, if any
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


def int4_inner_k_tiles(in_features: int) -> int:
    """The largest tiling CUDA's int4 packer takes for `in_features` (it wants K % (tiles x 16) == 0)."""
    return next((t for t in (8, 4, 2) if in_features % (16 * t) == 0), 2)


def per_channel_fp8(weight_kn: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel float8_e4m3fn of a (K, N) weight: values (N, K) and fp32 scales (N,) with
    w = value x scale (absmax / 448 per channel: the format's whole range, no clipping)."""
    w_nk = weight_kn.detach().float().t()  # (N, K)
    scales = w_nk.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX  # (N,)
    return (w_nk / scales[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).contiguous(), scales


class Fp8DynamicLinear(QuantizedLinear):
    """float8_e4m3fn weights (per output channel) times float8_e4m3fn activations scaled per token on the
    fly, on `torch._scaled_mm` with row-wise scales (one fp32 scale per activation row and per weight
    column, applied in the GEMM's epilogue; bf16 out). On Ada/Hopper/Blackwell GPUs that is the FP8 tensor-
    core GEMM; torch's CPU path is a slow reference (it dequantizes to fp32), so on a CPU this mode is for
    checking numerics only and `available_modes` says so. Per token, hence batch-invariant like int8_vnni."""

    def __init__(self, weight_kn: Tensor, bias: Tensor | None) -> None:
        super().__init__(weight_kn.shape[0], weight_kn.shape[1], bias)
        pad = -self.out_features % FP8_MULTIPLE  # zero columns, sliced off the output again
        values, scales = per_channel_fp8(F.pad(weight_kn.detach(), (0, pad)))
        self.weight_fp8: Tensor
        self.weight_scale: Tensor
        self.register_buffer("weight_fp8", values)  # (N, K) row-major: `.t()` is the column-major mat2
        self.register_buffer("weight_scale", scales[None, :].contiguous())  # (1, N) fp32

    @property
    def weight_bytes(self) -> int:
        return self.weight_fp8.numel() + 4 * self.weight_scale.numel()

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features).float()  # (T, K)
        # (T, 1) with strides (1, 1): `_scaled_mm` checks the strides, and a size-1 dim's stride is arbitrary
        # after amax(keepdim) even where `.contiguous()` calls it contiguous
        scale = (x2.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX).contiguous().view(-1, 1)
        x8 = (x2 / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        with contextlib.nullcontext() if x8.is_cuda else torch.backends.mkldnn.flags(enabled=False):
            # (oneDNN's CPU route asserts per-tensor scales on some AMX CPUs; the reference path takes rows)
            y = torch._scaled_mm(
                x8, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=torch.bfloat16
            )
        y = y[:, : self.out_features].to(x.dtype)  # (T, N)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*x.shape[:-1], self.out_features)


def _vnni_forward(x: Tensor, in_features: int, kernel: Callable[..., Tensor], *args: Any) -> Tensor:
    """x (..., K) -> kernel(x2 (T, K) fp32 contiguous, *args) (T, N) fp32 -> x's dtype and leading dims."""
    x2 = x.reshape(-1, in_features)
    y = kernel((x2 if x2.dtype == torch.float32 else x2.float()).contiguous(), *args)
    if x.dtype is not torch.float32:
        y = y.to(x.dtype)
    return y if x.dim() == 2 else y.view(*x.shape[:-1], y.shape[-1])


class Int8VnniLinear(QuantizedLinear):
    """Per-output-channel int8 weights (the codes `per_channel_int8` gives int8_dynamic) on joulepath's own
    int8 kernel (`vnni.int8_linear`; the AVX512-VNNI or the AVX2 build): activations quantized to int8 per token
    (absmax / 127, the same step as int8_dynamic's per-token [-1, 1] range over 255 levels), the weight streamed
    once per 8 tokens, fp32 output with both scales applied. Per token and batch-invariant: a token's integer
    sums and its fp32 epilogue do not depend on the other rows of the call. Longer inputs (prefill) run in chunks
    of 8 tokens inside the same C call, still without dequantizing. CPU only; rows split over torch's threads."""

    def __init__(self, weight_kn: Tensor, bias: Tensor | None) -> None:
        super().__init__(weight_kn.shape[0], weight_kn.shape[1], bias)
        vnni.check_int8_in_features(self.in_features)
        q, scales = per_channel_int8(weight_kn)
        self.weight_vnni: Tensor
        self.scales: Tensor
        self.register_buffer("weight_vnni", vnni.pack_int8(q))  # (N/64, Kp/4, 4, 16, 4) uint8: code + 128
        self.register_buffer("scales", scales)  # (N,) fp32

    @property
    def weight_bytes(self) -> int:
        # int8 values (rows padded to 64: the kernel streams them) plus fp32 per-channel scales
        return self.weight_vnni.numel() + 4 * self.scales.numel()

    def forward(self, x: Tensor) -> Tensor:
        kernel = vnni.int8_linear_op if torch.compiler.is_compiling() else vnni.int8_linear  # op: one graph node
        b = self._buffers  # direct: nn.Module.__getattr__ costs ~0.7 us a buffer, on every decode call
        return _vnni_forward(x, self.in_features, kernel, b["weight_vnni"], b["scales"], b["bias"], self.out_features)


class Int4VnniLinear(QuantizedLinear):
    """Group-wise int4 weights (`groupwise_int4`'s asymmetric RTN, kept as w = code * scale + min with bf16
    scale and min per group) on joulepath's own int4 kernel (`vnni.int4_linear`, either build): nibbles unpacked in
    registers, int8 activations per token as in `Int8VnniLinear`, one fp32 multiply-add per group and token.
    Batch-invariant like `Int8VnniLinear`; prefill in chunks of 8 tokens. CPU only; rows split over torch's threads."""

    def __init__(self, weight_kn: Tensor, bias: Tensor | None, group_size: int = 128) -> None:
        super().__init__(weight_kn.shape[0], weight_kn.shape[1], bias)
        vnni.check_int4_group(self.in_features, group_size)
        self.group_size = group_size
        pad = -self.out_features % vnni.PAD_N  # zero columns; the kernel stores only the real rows
        codes, scales_and_zeros = groupwise_int4(F.pad(weight_kn.detach().float(), (0, pad)), group_size)
        scales = scales_and_zeros[..., 0]  # (K/group, Np)
        mins = scales_and_zeros[..., 1] - 8 * scales  # w = (code - 8) * scale + zero = code * scale + min
        self.weight_vnni: Tensor
        self.scales_mins: Tensor
        self.register_buffer("weight_vnni", vnni.pack_int4(codes))  # (N/64, K/8, 4, 16, 4) uint8, 2 codes a byte
        self.register_buffer("scales_mins", vnni.pack_scales_mins(scales, mins))  # (N/16, K/group, 2, 16) bf16

    @property
    def weight_bytes(self) -> int:
        sm = self.scales_mins
        return self.weight_vnni.numel() + sm.numel() * sm.element_size()

    def forward(self, x: Tensor) -> Tensor:
        kernel = vnni.int4_linear_op if torch.compiler.is_compiling() else vnni.int4_linear  # op: one graph node
        b = self._buffers  # as Int8VnniLinear
        args = (b["weight_vnni"], b["scales_mins"], b["bias"], self.out_features, self.group_size)
        return _vnni_forward(x, self.in_features, kernel, *args)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


def make_quantized(mode: QuantMode, linear: Linear, group_size: int = 128) -> QuantizedLinear:
    """The quantized replacement of one `Linear` (weight stored (in, out)) for `mode`."""
    if mode == "int8_dynamic":
        return Int8DynamicLinear(linear.weight, linear.bias)
    if mode == "int8_weight_only":
        return Int8WeightOnlyLinear(linear.weight, linear.bias)
    if mode == "int4_weight_only":
        return Int4WeightOnlyLinear(linear.weight, linear.bias, group_size)
    if mode == "int8_vnni":
        return Int8VnniLinear(linear.weight, linear.bias)
    if mode == "int4_vnni":
        return Int4VnniLinear(linear.weight, linear.bias, group_size)
    if mode == "fp8_dynamic":
        return Fp8DynamicLinear(linear.weight, linear.bias)
    raise ValueError(f"unknown quantization mode {mode!r}; known: {', '.join(ALL_MODES)}")


_KERNELS: dict[QuantMode, str] = {
    "int8_dynamic": "quantized::linear_dynamic (fbgemm, x86 engine)",
    "int8_weight_only": "aten::_weight_int8pack_mm",
    "int4_weight_only": "aten::_convert_weight_to_int4pack(_for_cpu) / aten::_weight_int4pack_mm(_for_cpu)",
    "int8_vnni": "joulepath's jp_i8_linear (vnni_kernels.c)",
    "int4_vnni": "joulepath's jp_i4_linear (vnni_kernels.c)",
    "fp8_dynamic": "torch._scaled_mm (float8_e4m3fn, row-wise scales)",
}


FP8_ON_CPU = (
    "torch runs `_scaled_mm` on a CPU only as a slow reference (it dequantizes to fp32: ~30x slower than fp32 "
    "matmul, measured); fp8_dynamic needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell)"
)


def _unsupported(mode: QuantMode, device: torch.device) -> str | None:
    """Why `mode` cannot run on `device` before trying it, if that is known up front."""
    if device.type == "cuda":
        if mode in CPU_ONLY_MODES:
            return f"{_KERNELS[mode]} is a CPU kernel; on a CUDA GPU use fp8_dynamic, int8/int4_weight_only"
        cap = torch.cuda.get_device_capability(device)
        if mode == "fp8_dynamic" and cap < FP8_MIN_CAPABILITY:
            return f"{_KERNELS[mode]} needs compute capability 8.9 or newer; this GPU is {cap[0]}.{cap[1]}"
        if mode == "int4_weight_only" and cap < (8, 0):
            return f"{_KERNELS[mode]} needs compute capability 8.0 or newer; this GPU is {cap[0]}.{cap[1]}"
        return None
    if mode == "fp8_dynamic":
        return FP8_ON_CPU
    if mode in VNNI_MODES and (reason := vnni.unavailable_reason()) is not None:
        return f"{_KERNELS[mode]} is unavailable: {reason}"
    return None


def _probe(mode: QuantMode, device: torch.device) -> str | None:
    """Run `mode` once on a tiny layer on `device`; None if it works and is close to fp32, else the reason."""
    if (reason := _unsupported(mode, device)) is not None:
        return reason
    gen = torch.Generator().manual_seed(0)
    layer = Linear(64, 32, bias=True)
    layer.weight.data = torch.randn(64, 32, generator=gen)  # (K, N)
    x = torch.randn(2, 64, generator=gen)
    layer, x = layer.to(device), x.to(device)
    where = "this CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    try:
        with torch.no_grad():
            y, ref = make_quantized(mode, layer, group_size=32)(x), layer(x)
    except (RuntimeError, NotImplementedError, AttributeError) as e:  # AttributeError: op not in torch.ops
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fix = (
            "install a torch CPU build for x86-64 or aarch64 from pytorch.org (2.6 or newer), or pick another mode"
            if device.type == "cpu"
            else "install a CUDA build of torch 2.9 or newer from pytorch.org, or pick another mode"
        )
        return f"{_KERNELS[mode]} is not usable in torch {torch.__version__} on {where} ({first_line}); {fix}"
    rel = float((y.float() - ref).norm() / ref.norm())
    return None if rel < 0.2 else f"{_KERNELS[mode]} ran but is wrong on this build (relative error {rel:.2f})"


def available_modes(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """Which quantization modes run on this torch build and `device`: mode -> None if available, else why not.
    Each mode's kernel is tried once on a tiny layer (once per process and device).

    >>> available_modes()["int8_dynamic"] is None  # on an x86-64 or aarch64 CPU build
    True
    >>> available_modes()["fp8_dynamic"] is None  # a GPU mode: on a CPU only torch's slow reference runs it
    False
    """
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dict(_probe_all(dev))


@functools.cache
def _probe_all(device: torch.device) -> tuple[tuple[str, str | None], ...]:
    return tuple((mode, _probe(mode, device)) for mode in ALL_MODES)


@dataclass(frozen=True)
class QuantSummary:
    """What `quantize_model` did. Byte counts cover every projection weight (quantized or skipped), not
    biases, norms or a separate embedding table."""

    mode: QuantMode
    swapped: tuple[str, ...]  # qualified module names now quantized
    skipped: tuple[str, ...]  # Linear modules left in floating point (matched `skip`)
    weight_bytes_before: int
    weight_bytes_after: int
    bytes_per_weight: float  # weight_bytes_after / number of projection weights
    embedding_bytes_kept: int = 0  # a tied head's fp table, kept only for `Transformer.embed` to read columns


def _matches(name: str, patterns: Collection[str]) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns)


def _check_request(
    mode: str, group_size: int, skip: Collection[str], names: list[str], device: torch.device, reference: bool
) -> None:
    if mode not in ALL_MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; known: {', '.join(ALL_MODES)}")
    reason = available_modes(device)[mode]
    if reason is not None and not (reference and reason == FP8_ON_CPU):
        raise ValueError(f"quantization mode {mode!r} cannot run here: {reason}")
    if mode in INT4_MODES and group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    unused = [s for s in skip if not any(_matches(n, [s]) for n in names)]
    if unused:
        raise ValueError(f"skip names {unused} match no Linear module; names look like {names[:3]} (suffixes work)")


def _described(targets: dict[str, Linear], bad: Callable[[Linear], bool]) -> str:
    """The targets `bad` picks, as "name (in -> out)", comma-separated ("" if none)."""
    return ", ".join(f"{n} ({m.weight.shape[0]} -> {m.weight.shape[1]})" for n, m in targets.items() if bad(m))


def _check_int4_shapes(targets: dict[str, Linear], group_size: int) -> None:
    if bad := _described(targets, lambda m: m.weight.shape[0] % group_size != 0):
        raise ValueError(
            f"int4 needs in_features divisible by group_size={group_size}; these are not: {bad}. "
            "Pass a smaller group_size or skip=(...) those layers"
        )


def _check_fp8_shapes(targets: dict[str, Linear]) -> None:
    if bad := _described(targets, lambda m: m.weight.shape[0] % FP8_MULTIPLE != 0):
        raise ValueError(
            f"fp8_dynamic needs in_features divisible by {FP8_MULTIPLE} (`_scaled_mm`); these are not: {bad}. "
            "skip=(...) them or use int8_weight_only"
        )


def _check_int8_vnni_shapes(targets: dict[str, Linear]) -> None:
    if bad := _described(targets, lambda m: m.weight.shape[0] > vnni.MAX_K_INT8):
        raise ValueError(
            f"int8_vnni needs in_features <= {vnni.MAX_K_INT8} (int32 sums); these are wider: {bad}. "
            "skip=(...) them or use int8_dynamic"
        )


def _weight_bytes(module: nn.Module) -> int:
    if isinstance(module, QuantizedLinear):
        return module.weight_bytes
    assert isinstance(module, Linear)
    return module.weight.numel() * module.weight.element_size()


def _n_weights(module: nn.Module) -> int:
    if isinstance(module, QuantizedLinear):
        return module.in_features * module.out_features
    assert isinstance(module, Linear)
    return module.weight.numel()


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


@torch.no_grad()
def quantize_model(
    model: Transformer, mode: QuantMode, *, skip: Collection[str] = (), group_size: int = 128, reference: bool = False
) -> QuantSummary:
    """Swap every `Linear` of `model` in place for its `mode` quantized module, except those whose
    qualified name equals or ends with (after a dot) a name in `skip`, e.g. ("output",) or ("w2",).

    Everything is checked before anything is swapped. Raises ValueError for an unknown mode, a kernel
    missing from this torch build (the message names the op and the fix), an int4 `group_size` the
    kernel lacks, a layer whose in_features is not divisible by `group_size` (skip it or use a smaller
    group: silently leaving it in fp32 would misstate the bytes), or a `skip` name that matches nothing.
    A model with tied embeddings keeps its head's fp weight for `Transformer.embed`. The modules are built
    on the model's device (CUDA packs int4 in tinygemm's layout). `reference=True` lets fp8_dynamic run on
    a CPU through torch's slow reference path, for numerics checks only."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, Linear | QuantizedLinear)}
    device = next(model.parameters()).device
    _check_request(mode, group_size, skip, list(linears), device, reference)
    targets = {n: m for n, m in linears.items() if isinstance(m, Linear) and not _matches(n, skip)}
    if mode in INT4_MODES:
        _check_int4_shapes(targets, group_size)
    if mode == "fp8_dynamic":
        _check_fp8_shapes(targets)
    if mode == "int8_vnni":
        _check_int8_vnni_shapes(targets)
    before = sum(_weight_bytes(m) for m in linears.values())
    kept = 0
    for name, old in targets.items():
        new = make_quantized(mode, old, group_size)
        if name == "output" and model.cfg.tie_embeddings:
            new.register_parameter("weight", old.weight)  # Transformer.embed reads its columns
            kept = old.weight.numel() * old.weight.element_size()
        _swap(model, name, new)
    after_modules = {n: model.get_submodule(n) for n in linears}
    after = sum(_weight_bytes(m) for m in after_modules.values())
    n_weights = sum(_n_weights(m) for m in after_modules.values())
    skipped = tuple(n for n, m in linears.items() if isinstance(m, Linear) and n not in targets)
    # Anything that changes the KV of the same tokens is part of the prefix cache's key (engine.Engine).
    object.__setattr__(model, "weight_format", f"{mode}:g{group_size}:skip={','.join(sorted(skip))}")
    return QuantSummary(mode, tuple(targets), skipped, before, after, after / max(n_weights, 1), kept)
