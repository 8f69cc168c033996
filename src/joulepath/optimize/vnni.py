"""joulepath's own int8 / int4 weight GEMV kernels for x86-64 CPUs, in C, built on first use.

Two builds of one design: `vnni_kernels.c` for AVX512-VNNI CPUs (vpdpbusd) and `avx2_kernels.c` for CPUs
without it (AVX2 with FMA: AMD Zen 2/3, Intel before Ice Lake). They take the same arguments and packed
weights, quantize activations the same way and give bit-identical outputs (exact integer sums, the same fp32
epilogue lane by lane), so a gate verdict or a test holds for both; the modes keep their names (`int8_vnni`,
`int4_vnni`) on either. The build that fits the CPU is chosen from `/proc/cpuinfo` (`JOULEPATH_VNNI=avx2`
forces the AVX2 one, e.g. to compare them on a VNNI machine; `JOULEPATH_VNNI=0` disables both).

The C source (no torch headers) is compiled by the system compiler (`$CC` or `gcc`) with the build's flags into
the kernel cache (`engine/native.py`: keyed by source, flags and compiler, built atomically); it is loaded with
`ctypes` and called with tensors' `data_ptr()`s. Each call quantizes the activation rows to int8 and streams the
packed weight once per chunk of up to 8 tokens, its 64-row superblocks split over `torch.get_num_threads()`
OpenMP threads (`-fopenmp`; each output row is one thread's, so the bits do not depend on the count; a compiler
without OpenMP gets a single-threaded build). On the 2-core AVX2 VM (AMD Zen 3, 2026-11-27, dummy:qwen2.5-0.5b
decode at 2 torch threads, 3 interleaved repetitions) the second thread raised tokens/s from 19.1 to 26.0
(int8, batch 1), 61.8 to 91.5 (int8, batch 8), 25.6 to 32.7 (int4, batch 1) and 73.7 to 108.3 (int4, batch 8):
the AVX2 kernels are compute-bound on one core. Handing half the rows to a Python thread instead had cost
~50 us a call and gained nothing; this library's OpenMP runtime sits beside torch's own.

`unavailable_reason()` says why the route cannot run here (not x86-64 Linux, neither AVX512-F/BW/VNNI nor
AVX2 + FMA in `/proc/cpuinfo`, no compiler, the build failed, or `JOULEPATH_VNNI=0`); `quant.available_modes()`
reports it for the "int8_vnni" / "int4_vnni" modes and nothing else changes. `isa()` names the build in use.

Packed formats (see the C files' headers; N padded to 64): int8 `[N/64][Kp/4][4][16][4]` bytes holding
w + 128 with fp32 per-channel scales; int4 `[N/64][K/8][4][16][4]` bytes, two codes per byte, with bf16
(scale, min) per group and 16 rows laid out `[N/16][K/G][2][16]`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from joulepath.engine import native

SOURCE = Path(__file__).with_name("vnni_kernels.c")
OPENMP = "-fopenmp"  # dropped, with a single-threaded build, where the compiler refuses it
FLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512vnni", OPENMP, "-fPIC", "-shared")
CPU_FLAGS = ("avx512f", "avx512bw", "avx512_vnni")  # as /proc/cpuinfo spells them
AVX2_SOURCE = Path(__file__).with_name("avx2_kernels.c")
AVX2_FLAGS = ("-O3", "-mavx2", "-mfma", OPENMP, "-fPIC", "-shared")
AVX2_CPU_FLAGS = ("avx2", "fma")


@dataclass(frozen=True)
class KernelBuild:
    """One build of the kernels: the instruction set it needs, its C source and compiler flags."""

    isa: str
    source: Path
    flags: tuple[str, ...]
    cpu_flags: tuple[str, ...]
    needs: str = ""  # the instructions in words, for refusals


BUILDS = (  # preferred first
    KernelBuild("avx512_vnni", SOURCE, FLAGS, CPU_FLAGS, "AVX512-F/BW and AVX512-VNNI"),
    KernelBuild("avx2", AVX2_SOURCE, AVX2_FLAGS, AVX2_CPU_FLAGS, "AVX2 with FMA"),
)
MAX_M = 8  # tokens per pass over the weight (the C kernels' JP_MAX_M)
MAX_K_INT8 = 65536  # int8: |sum (w + 128) x| <= 255 * 127 * K must stay below 2**31 (K <= 66,311)
BLOCK_N = 16  # output rows per 64-byte vector
SUPER = 4  # 16-row blocks interleaved per input step (one sequential stream, 4 accumulator chains)
PAD_N = BLOCK_N * SUPER  # out_features is padded to this (zero rows; the kernels store only the real ones)


kernel_dir = native.kernel_dir
_compiler = native.compiler


def select_build() -> tuple[KernelBuild | None, str | None]:
    """The build this CPU runs (the first of `BUILDS` whose instructions it has; `JOULEPATH_VNNI=avx2` picks the
    AVX2 one), or None and why none fits."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"needs x86-64 Linux (this is {platform.system()} {platform.machine()})"
    flags = native.cpu_flags()
    if isinstance(flags, str):
        return None, f"{flags} to check for AVX512-VNNI or AVX2"
    wanted = os.environ.get("JOULEPATH_VNNI", "1")
    if wanted == "0":
        return None, "disabled by JOULEPATH_VNNI=0"
    if wanted not in ("1", *(b.isa for b in BUILDS)):
        return None, f"JOULEPATH_VNNI={wanted!r} is not one of 0, 1, {', '.join(b.isa for b in BUILDS)}"
    allowed = [b for b in BUILDS if wanted in ("1", b.isa)]
    for build in allowed:
        if all(f in flags for f in build.cpu_flags):
            return build, None
    lacking = " and ".join("/".join(f for f in b.cpu_flags if f not in flags) for b in allowed)
    return None, f"this CPU lacks {lacking} (needs {', or '.join(b.needs for b in allowed)})"


def _cpu_reason() -> str | None:
    return select_build()[1]


def _compiler_run(cmd: list[str], timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return native.compiler_run(cmd, "the int8/int4 kernels", timeout_s)


def _build(cc: str, build: KernelBuild | None = None) -> Path:
    """Compile (or reuse) the library of `build` (default: this CPU's); raises RuntimeError with the compiler's
    message on failure."""
    chosen = build or select_build()[0] or BUILDS[0]
    what = f"the {chosen.isa} kernels"
    try:
        return native.build(chosen.source, chosen.flags, cc, what)
    except RuntimeError:
        if OPENMP not in chosen.flags:
            raise
        single = tuple(f for f in chosen.flags if f != OPENMP)  # a compiler without OpenMP: one thread per call
        return native.build(chosen.source, single, cc, f"{what} (single-threaded: {OPENMP} failed)")


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.jp_i8_linear.argtypes = [p, i64, i32, i32, i32, p, p, p, p, i64, i32]  # ..., y, ldy, threads
    lib.jp_i4_linear.argtypes = [p, i64, i32, i32, i32, i32, p, p, p, p, i64, i32]
    lib.jp_noop.argtypes = lib.jp_i4_linear.argtypes
    for fn in (lib.jp_i8_linear, lib.jp_i4_linear, lib.jp_noop):
        fn.restype = ctypes.c_int
    return lib


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    lib, reason, _ = _load_build()
    return lib, reason


@functools.cache
def _load_build() -> tuple[ctypes.CDLL | None, str | None, KernelBuild | None]:
    """The library, why it is missing, and the build it came from (chosen once per process)."""
    build, reason = select_build()
    if build is None:
        return None, reason, None
    cc = _compiler()
    if cc is None:
        return None, f"no C compiler ({os.environ.get('CC', 'gcc')}) on PATH to build {build.source.name}", build
    try:
        return _bind(ctypes.CDLL(str(_build(cc, build)))), None, build
    except (RuntimeError, OSError) as e:
        return None, str(e), build


def isa() -> str | None:
    """The instruction set of the build in use ("avx512_vnni" or "avx2"), or None where the kernels are unavailable."""
    lib, _, build = _load_build()
    return build.isa if lib is not None and build is not None else None


def source_digest() -> str:
    """A digest of the C source of the build in use (what a cached verdict reached on the kernels depends on;
    where none loads, the preferred build's)."""
    build = _load_build()[2] or BUILDS[0]
    return hashlib.sha256(build.source.read_bytes()).hexdigest()[:16]


def unavailable_reason() -> str | None:
    """None if the kernels are built and loaded, else why not (once per process)."""
    return _load()[1]


def library() -> ctypes.CDLL:
    lib, reason = _load()
    if lib is None:
        raise RuntimeError(f"joulepath's int8/int4 kernels are unavailable: {reason}")
    return lib


# ---- packing -------------------------------------------------------------------------------------


def pack_int8(q_nk: Tensor) -> Tensor:
    """int8 codes (N, K) -> the kernel's u8 layout (N/64, Kp/4, 4, 16, 4) of code + 128, N and K zero padded."""
    n, k = q_nk.shape
    padded = F.pad(q_nk.to(torch.int16) + 128, (0, -k % 4, 0, -n % PAD_N), value=128)  # (Np, Kp): padding = 0
    np_, kp = padded.shape
    blocks = padded.to(torch.uint8).view(np_ // PAD_N, SUPER, BLOCK_N, kp // 4, 4)
    return blocks.permute(0, 3, 1, 2, 4).contiguous()


def pack_int4(codes_nk: Tensor) -> Tensor:
    """int4 codes (N, K) in [0, 15], N % 64 == 0 and K % 8 == 0 -> (N/64, K/8, 4, 16, 4) u8 bytes whose low
    nibble holds input 8t + j and high nibble 8t + 4 + j."""
    n, k = codes_nk.shape
    c = codes_nk.to(torch.uint8).view(n // PAD_N, SUPER, BLOCK_N, k // 8, 2, 4).permute(0, 3, 1, 2, 4, 5)
    return (c[..., 0, :] | (c[..., 1, :] << 4)).contiguous()


def pack_scales_mins(scales_gn: Tensor, mins_gn: Tensor) -> Tensor:
    """Per-group scales and mins (K/G, N) -> bf16 (N/16, K/G, 2, 16)."""
    g, n = scales_gn.shape
    sz = torch.stack([scales_gn, mins_gn], dim=-1).view(g, n // BLOCK_N, BLOCK_N, 2)  # (G, Nb, 16, 2)
    return sz.permute(1, 0, 3, 2).contiguous().to(torch.bfloat16)


def quantize_activations(x: Tensor, group: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """What the kernels do to activations, in torch (for tests): int8 codes (T, K), scales (T,) and code sums
    per group of `group` inputs (T, K/group) or per row (T, 1)."""
    absmax = x.float().abs().amax(dim=1)
    inv = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    q = torch.round(x.float() * inv[:, None]).clamp(-127, 127)
    sums = q.view(q.shape[0], -1, group).sum(-1) if group else q.sum(1, keepdim=True)
    return q.to(torch.int8), absmax / 127.0, sums.to(torch.int32)


# ---- calls ---------------------------------------------------------------------------------------


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(x2: Tensor, packed: Tensor, scales: Tensor, scale_dtype: torch.dtype, bias: Tensor | None) -> None:
    """The C side trusts its pointers: refuse what would make it read the wrong bytes (a module moved off the
    CPU or cast to another dtype after quantizing, a strided input)."""
    ok = (
        x2.dtype is torch.float32
        and packed.dtype is torch.uint8
        and scales.dtype is scale_dtype
        and (bias is None or bias.dtype is torch.float32)
        and x2.is_cpu
        and x2.is_contiguous()
    )
    if not ok:
        raise TypeError(
            f"VNNI kernels take a contiguous fp32 CPU input, uint8 weights, {scale_dtype} scales and an fp32 bias; "
            f"got input {x2.dtype} on {x2.device}, weights {packed.dtype}, scales {scales.dtype}, "
            f"bias {None if bias is None else bias.dtype} (quantize after any .to())"
        )


def check_int8_in_features(k: int) -> None:
    """The int8 kernel's int32 sums bound the inputs; the C side trusts this."""
    if k > MAX_K_INT8:
        raise ValueError(f"int8_vnni takes in_features <= {MAX_K_INT8} (int32 sums), at most that many inputs; got {k}")


def check_int4_group(k: int, group: int) -> None:
    """The int4 kernel's group sums need a group that is a multiple of 8 dividing the inputs; the C side trusts this."""
    if group % 8 or k % group:
        raise ValueError(
            f"int4_vnni needs group_size % 8 == 0 dividing in_features={k}, got {group} "
            "(a group that is a multiple of 8 and divides in_features)"
        )


def int8_linear(x2: Tensor, packed: Tensor, scales: Tensor, bias: Tensor | None, n: int) -> Tensor:
    """x2 (T, K) fp32 contiguous -> (T, n) fp32 through `jp_i8_linear`."""
    _check(x2, packed, scales, torch.float32, bias)
    t, k = x2.shape
    check_int8_in_features(k)
    y = torch.empty(t, n, dtype=torch.float32)
    fn, xp, wp, sp, yp = library().jp_i8_linear, x2.data_ptr(), packed.data_ptr(), scales.data_ptr(), y.data_ptr()
    if fn(xp, k, t, k, n, wp, sp, _ptr(bias), yp, n, torch.get_num_threads()):
        raise MemoryError("jp_i8_linear could not allocate its activation buffer")
    return y


def int4_linear(x2: Tensor, packed: Tensor, sz: Tensor, bias: Tensor | None, n: int, group: int) -> Tensor:
    """x2 (T, K) fp32 contiguous -> (T, n) fp32 through `jp_i4_linear`."""
    _check(x2, packed, sz, torch.bfloat16, bias)
    t, k = x2.shape
    check_int4_group(k, group)
    y = torch.empty(t, n, dtype=torch.float32)
    fn, xp, wp, zp, yp = library().jp_i4_linear, x2.data_ptr(), packed.data_ptr(), sz.data_ptr(), y.data_ptr()
    if fn(xp, k, t, k, n, group, wp, zp, _ptr(bias), yp, n, torch.get_num_threads()):
        raise MemoryError("jp_i4_linear could not allocate its activation buffer")
    return y


# The same calls as torch custom ops, so that `torch.compile(fullgraph=True)` (the static decode path) keeps them
# in its graph as opaque nodes; eager forwards call the functions above directly (the op dispatch costs more).
@torch.library.custom_op("joulepath::vnni_int8_linear", mutates_args=())
def int8_linear_op(x2: Tensor, packed: Tensor, scales: Tensor, bias: Tensor | None, n: int) -> Tensor:
    return int8_linear(x2.contiguous(), packed, scales, bias, n)


@int8_linear_op.register_fake
def _(x2: Tensor, packed: Tensor, scales: Tensor, bias: Tensor | None, n: int) -> Tensor:
    return x2.new_empty(x2.shape[0], n)


@torch.library.custom_op("joulepath::vnni_int4_linear", mutates_args=())
def int4_linear_op(x2: Tensor, packed: Tensor, sz: Tensor, bias: Tensor | None, n: int, group: int) -> Tensor:
    return int4_linear(x2.contiguous(), packed, sz, bias, n, group)


@int4_linear_op.register_fake
def _(x2: Tensor, packed: Tensor, sz: Tensor, bias: Tensor | None, n: int, group: int) -> Tensor:
    return x2.new_empty(x2.shape[0], n)


def noop_call(x2: Tensor, packed: Tensor, sz: Tensor, y: Tensor) -> int:
    """A call with `int4_linear`'s arguments into a C function that returns at once (measures ctypes' cost)."""
    (t, k), n, xp, yp = x2.shape, y.shape[1], x2.data_ptr(), y.data_ptr()
    return int(
        library().jp_noop(xp, k, t, k, n, 32, packed.data_ptr(), sz.data_ptr(), None, yp, n, torch.get_num_threads())
    )
