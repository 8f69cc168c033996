"""joulepath's own int8/int4 kernels (optimize.vnni, modes int8_vnni / int4_vnni; the AVX512-VNNI build or the AVX2
one, whichever this CPU runs): the build choice and its refusals, the two builds bit for bit (on a VNNI CPU), each
kernel against a float64 reference of the same quantized numbers (tight) and against fp32 (loose), padding,
prefill chunks, int32 bounds, batch invariance, and whole models through the engine."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from joulepath.engine import Engine, EngineConfig, SamplingParams, native, row_attention
from joulepath.model import DenseCausalAttention, load_model
from joulepath.model.transformer import Linear, Transformer
from joulepath.optimize import ALL_MODES, VNNI_MODES, QuantizedLinear, available_modes, quantize_model, vnni
from joulepath.optimize.levers import Lever, parse_lever
from joulepath.optimize.quant import Int4VnniLinear, Int8VnniLinear, groupwise_int4, make_quantized, per_channel_int8
from joulepath.optimize.tune import SHORT

from .conftest import random_linear

Shape = tuple[int, int]


def require_vnni() -> None:
    reason = vnni.unavailable_reason()
    if reason is not None:
        pytest.skip(f"VNNI kernels unavailable: {reason}")


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref.double()).norm() / ref.double().norm())


def int8_reference(x: torch.Tensor, weight_kn: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """float64 of exactly what `jp_i8_linear` computes: int8 codes per token times per-channel int8 codes."""
    q, scales = per_channel_int8(weight_kn)  # (N, K), (N,)
    xq, sx, _ = vnni.quantize_activations(x)
    y = (xq.double() @ q.double().t()) * sx.double()[:, None] * scales.double()[None]
    return y if bias is None else y + bias.double()


def int4_reference(x: torch.Tensor, weight_kn: torch.Tensor, bias: torch.Tensor | None, group: int) -> torch.Tensor:
    """float64 of exactly what `jp_i4_linear` computes: code * bf16 scale + bf16 min per group, int8 tokens."""
    n = weight_kn.shape[1]
    codes, sz = groupwise_int4(F.pad(weight_kn.float(), (0, -n % 64)), group)  # (Np, K), (K/g, Np, 2)
    scales = sz[..., 0].bfloat16().double()
    mins = (sz[..., 1] - 8 * sz[..., 0]).bfloat16().double()
    w = codes.double() * scales.t().repeat_interleave(group, 1) + mins.t().repeat_interleave(group, 1)  # (Np, K)
    xq, sx, _ = vnni.quantize_activations(x)
    y = (xq.double() * sx.double()[:, None]) @ w.t()[:, :n]
    return y if bias is None else y + bias.double()


# ---- build and availability ----------------------------------------------------------------------


def test_vnni_modes_are_listed_with_a_reason_or_none() -> None:
    modes = available_modes()
    assert set(VNNI_MODES) <= set(modes) and set(VNNI_MODES) <= set(ALL_MODES)
    reason = vnni.unavailable_reason()
    for mode in VNNI_MODES:
        assert (modes[mode] is None) == (reason is None), modes[mode]
    assert (vnni.isa() is None) == (reason is not None) and vnni.isa() in (None, "avx512_vnni", "avx2")


def test_disabled_route_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOULEPATH_VNNI", "0")
    lib, reason, _ = vnni._load_build.__wrapped__()  # the uncached probe
    assert lib is None and reason == "disabled by JOULEPATH_VNNI=0"


def test_missing_compiler_or_cpu_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULEPATH_VNNI", raising=False)
    monkeypatch.setenv("CC", "no-such-compiler-jp")
    lib, reason, _ = vnni._load_build.__wrapped__()
    assert lib is None and reason is not None
    assert "no C compiler (no-such-compiler-jp)" in reason or "lacks" in reason or "x86-64" in reason


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_read = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: real_read(fake if str(self) == "/proc/cpuinfo" else self)
    )
    monkeypatch.setattr(vnni.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(vnni.platform, "system", lambda: "Linux")


def test_cpu_with_neither_build_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cpu(monkeypatch, tmp_path, "fpu sse2 avx2 avx512f avx512bw")
    monkeypatch.delenv("JOULEPATH_VNNI", raising=False)
    assert vnni._cpu_reason() == (
        "this CPU lacks avx512_vnni and fma (needs AVX512-F/BW and AVX512-VNNI, or AVX2 with FMA)"
    )


@pytest.mark.parametrize(
    ("flags", "env", "isa"),
    [
        ("fpu avx2 fma avx512f avx512bw avx512_vnni", "1", "avx512_vnni"),
        ("fpu avx2 fma", "1", "avx2"),  # AMD Zen 2/3, Intel before Ice Lake
        ("fpu avx2 fma avx512f avx512bw avx512_vnni", "avx2", "avx2"),  # forced, to compare the builds
    ],
)
def test_the_build_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str, env: str, isa: str
) -> None:
    _fake_cpu(monkeypatch, tmp_path, flags)
    monkeypatch.setenv("JOULEPATH_VNNI", env)
    build, reason = vnni.select_build()
    assert reason is None and build is not None and build.isa == isa


def test_an_unknown_build_name_says_what_is_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cpu(monkeypatch, tmp_path, "fpu avx2 fma")
    monkeypatch.setenv("JOULEPATH_VNNI", "avx9")
    build, reason = vnni.select_build()
    assert build is None and reason == "JOULEPATH_VNNI='avx9' is not one of 0, 1, avx512_vnni, avx2"
    monkeypatch.setenv("JOULEPATH_VNNI", "avx512_vnni")  # forced: the refusal names that build alone
    assert vnni.select_build() == (
        None,
        "this CPU lacks avx512f/avx512bw/avx512_vnni (needs AVX512-F/BW and AVX512-VNNI)",
    )
    monkeypatch.setenv("JOULEPATH_VNNI", "0")
    assert vnni.select_build() == (None, "disabled by JOULEPATH_VNNI=0")


def _gcc_or_skip() -> str:
    """A compiler that takes the kernels' x86 flags (on aarch64 gcc rejects -mavx512f before any error we test)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the kernels' build flags are x86-64 ones; this is {platform.machine()}")
    cc = vnni._compiler()
    if cc is None:
        pytest.skip("no gcc")
    return cc


def test_build_failure_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cc = _gcc_or_skip()
    broken = tmp_path / "broken.c"
    broken.write_text("int f(void) { return undefined_name; }\n")
    monkeypatch.setenv("JOULEPATH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=r"failed to build broken\.c: .*undefined_name"):
        vnni._build(cc, vnni.KernelBuild("avx2", broken, vnni.AVX2_FLAGS, ()))
    assert not list((tmp_path / "cache" / "kernels").iterdir())  # no half-written library left behind


def test_concurrent_builds_leave_one_complete_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cc = _gcc_or_skip()
    monkeypatch.setenv("JOULEPATH_CACHE", str(tmp_path))
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(vnni._build(cc))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = list((tmp_path / "kernels").iterdir())
    assert len(set(paths)) == 1 and files == [paths[0]] and paths[0].suffix == ".so"
    assert vnni._build(cc) == paths[0]  # cached: keyed by source, flags and compiler


# ---- kernels against references ------------------------------------------------------------------

SHAPES_M = [(64, 32, 1), (70, 37, 3), (256, 100, 8), (130, 48, 17), (896, 1152, 8), (36, 5, 2)]


@pytest.mark.parametrize(("k", "n", "m"), SHAPES_M)
@pytest.mark.parametrize("bias", [False, True])
def test_int8_kernel_matches_reference_and_fp32(k: int, n: int, m: int, bias: bool) -> None:
    require_vnni()
    layer = random_linear(k, n, bias, seed=k + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    q = Int8VnniLinear(layer.weight.data, layer.bias)
    with torch.no_grad():
        y = q(x)
        fp = layer(x)
    ref = int8_reference(x, layer.weight.data, layer.bias)
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert float((y.double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max()) + 1e-6
    assert rel_error(y, fp) < 0.03


@pytest.mark.parametrize(("k", "n", "m"), [(64, 32, 1), (128, 37, 3), (256, 100, 8), (128, 48, 17), (896, 1152, 8)])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_kernel_matches_reference_and_fp32(k: int, n: int, m: int, group: int) -> None:
    require_vnni()
    if k % group:
        pytest.skip("group does not divide in_features")
    layer = random_linear(k, n, bias=True, seed=k + n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    q = Int4VnniLinear(layer.weight.data, layer.bias, group)
    with torch.no_grad():
        y = q(x)
        fp = layer(x)
    ref = int4_reference(x, layer.weight.data, layer.bias, group)
    assert y.shape == (m, n)
    assert float((y.double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max()) + 1e-6
    assert rel_error(y, fp) < 0.15


def _raw_call(lib: ctypes.CDLL, layer: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    """One build's C function on a quantized layer's packed buffers, bypassing the loaded library."""
    t, k = x.shape
    n = layer.out_features
    y = torch.full((t, n), float("nan"))
    bias = layer.bias.data_ptr() if layer.bias is not None else None
    if isinstance(layer, Int8VnniLinear):
        rc = lib.jp_i8_linear(x.data_ptr(), k, t, k, n, layer.weight_vnni.data_ptr(), layer.scales.data_ptr(), bias,
                              y.data_ptr(), n, 1)  # fmt: skip
    else:
        assert isinstance(layer, Int4VnniLinear)
        rc = lib.jp_i4_linear(x.data_ptr(), k, t, k, n, layer.group_size, layer.weight_vnni.data_ptr(),
                              layer.scales_mins.data_ptr(), bias, y.data_ptr(), n, 1)  # fmt: skip
    assert rc == 0
    return y


@pytest.mark.parametrize(("k", "n", "m"), [(64, 32, 1), (256, 100, 3), (896, 1152, 8), (128, 70, 13)])
def test_the_avx2_build_gives_the_vnni_builds_bits(k: int, n: int, m: int) -> None:
    """A VNNI CPU runs both builds: int8 and int4 outputs equal bit for bit (exact integer sums, one fp32 epilogue)."""
    cc = _gcc_or_skip()
    flags = native.cpu_flags()
    if isinstance(flags, str) or not all(f in flags for f in vnni.CPU_FLAGS):
        pytest.skip("needs an AVX512-VNNI CPU to run both builds side by side")
    libs = [vnni._bind(ctypes.CDLL(str(vnni._build(cc, b)))) for b in vnni.BUILDS]
    layer = random_linear(k, n, bias=True, seed=k * n)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)) * 3
    x[0, 0] = 40.0  # an outlier sets the row's scale
    for q in (Int8VnniLinear(layer.weight.data, layer.bias), Int4VnniLinear(layer.weight.data, layer.bias, 32)):
        vnni_y, avx2_y = (_raw_call(lib, q, x) for lib in libs)
        assert torch.equal(vnni_y, avx2_y), type(q).__name__


def test_reference_would_catch_a_wrong_kernel() -> None:
    """The tight comparison can fail: the same check against the fp32 output (not the quantized numbers) does."""
    require_vnni()
    layer = random_linear(256, 64, bias=False)
    x = torch.randn(4, 256)
    with torch.no_grad():
        y = Int8VnniLinear(layer.weight.data, None)(x)
        fp = layer(x)
    assert float((y - fp).abs().max()) > 1e-5 * float(fp.abs().max()) + 1e-6


def test_int8_extremes_at_the_int32_bound_are_exact() -> None:
    """K = 65,536 with every code at +-127: the raw sum of (w + 128) * x reaches 255 * 127 * K = 2.12e9 < 2**31."""
    require_vnni()
    k = vnni.MAX_K_INT8
    signs = torch.tensor([1.0, -1.0] * 8)  # 16 outputs: all-+1 and all--1 weight columns
    w = torch.ones(k, 16) * signs  # (K, N): codes +127 (stored 255) and -127 (stored 1)
    x = torch.stack([torch.ones(k), -torch.ones(k), torch.full((k,), 1e6)])  # codes +127, -127, +127 (huge scale)
    y = Int8VnniLinear(w, None)(x)
    expected = (x.double() @ w.double()).float()  # +-K, +-1e6 K: exactly representable products
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=0)


def test_direct_kernel_calls_check_what_the_c_side_trusts() -> None:
    """vnni.int4_linear / int8_linear are public: a group or K the C loops cannot take is refused, not run."""
    require_vnni()
    q = make_quantized("int4_vnni", random_linear(64, 64, bias=False), group_size=32)
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        vnni.int4_linear(x, q.weight_vnni, q.scales_mins, None, 64, group=12)
    with pytest.raises(ValueError, match="divides in_features"):
        vnni.int4_linear(x, q.weight_vnni, q.scales_mins, None, 64, group=48)
    q8 = make_quantized("int8_vnni", random_linear(64, 64, bias=False))
    wide = torch.zeros(1, vnni.MAX_K_INT8 + 64)
    with pytest.raises(ValueError, match="at most"):
        vnni.int8_linear(wide, q8.weight_vnni, q8.scales, None, 64)


def test_a_hung_compiler_is_a_reason_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def hang(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("gcc", 300)

    monkeypatch.setattr(vnni.subprocess, "run", hang)
    with pytest.raises(RuntimeError, match="did not finish"):
        vnni._compiler_run(["gcc", "--version"])


def test_int8_refuses_inputs_past_the_int32_bound() -> None:
    with pytest.raises(ValueError, match="in_features <= 65536"):
        Int8VnniLinear(torch.zeros(vnni.MAX_K_INT8 + 4, 16), None)


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_outlier_and_zero_tokens(mode: str) -> None:
    """Per-token scales: a 1000x outlier row leaves the others their precision; an all-zero row gives the bias."""
    require_vnni()
    layer = random_linear(256, 64, bias=True)
    q = make_quantized(mode, layer, group_size=64)  # type: ignore[arg-type]
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(3))
    x[0] *= 1000
    x[2] = 0
    with torch.no_grad():
        y, fp = q(x), layer(x)
    for row in (0, 1, 3, 4):
        assert rel_error(y[row], fp[row]) < (0.03 if mode == "int8_vnni" else 0.15)
    assert layer.bias is not None and torch.equal(y[2], layer.bias.data)


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_a_nan_or_inf_input_row_is_not_hidden(mode: str) -> None:
    """A NaN (or inf) activation makes its own output row non-finite, as an fp32 GEMM would; other rows keep theirs."""
    require_vnni()
    layer = random_linear(256, 64, bias=True)
    q = make_quantized(mode, layer, group_size=64)  # type: ignore[arg-type]
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(5))
    x[1, 7], x[3, 100] = float("nan"), float("inf")
    with torch.no_grad():
        y = q(x)
    assert torch.isnan(y[1]).all() and not torch.isfinite(y[3]).any()
    assert torch.isfinite(y[0]).all() and torch.isfinite(y[2]).all()


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_batch_invariant_bit_for_bit(mode: str) -> None:
    """A token's output does not depend on the other tokens of the call (chunks of 8, tails, prefill)."""
    require_vnni()
    q = make_quantized(mode, random_linear(128, 40, bias=True), group_size=32)  # type: ignore[arg-type]
    x = torch.randn(19, 128) * torch.logspace(-2, 2, 19)[:, None]
    together = q(x)
    alone = torch.cat([q(x[i : i + 1]) for i in range(19)])
    assert torch.equal(together, alone)
    assert torch.equal(q(x[3:9]), together[3:9])


@pytest.mark.parametrize("mode", VNNI_MODES)
@pytest.mark.parametrize("n", [200, 129, 1000])
def test_the_threaded_kernel_gives_the_same_bits_at_any_thread_count(mode: str, n: int) -> None:
    """The kernels split their superblocks over torch's thread count (OpenMP): 1, 2 and 3 threads, same bits."""
    require_vnni()
    q = make_quantized(mode, random_linear(128, n, bias=True), group_size=32)  # type: ignore[arg-type]
    x = torch.randn(11, 128)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(q(x))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_a_compiler_without_openmp_gets_a_single_threaded_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cc = _gcc_or_skip()
    real = native.build
    tried: list[tuple[str, ...]] = []

    def no_openmp(source: Path, flags: tuple[str, ...], cc: str, what: str) -> Path:
        tried.append(flags)
        if vnni.OPENMP in flags:
            raise RuntimeError(f"failed to build {source.name}: unrecognized command-line option '-fopenmp'")
        return real(source, flags, cc, what)

    monkeypatch.setenv("JOULEPATH_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "build", no_openmp)
    build = vnni.BUILDS[1]  # the AVX2 one: any x86-64 gcc compiles it
    vnni._bind(ctypes.CDLL(str(vnni._build(cc, build))))  # the entry points are there; the pragmas were ignored
    assert tried == [build.flags, tuple(f for f in build.flags if f != vnni.OPENMP)]


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_bf16_input_and_leading_dims(mode: str) -> None:
    require_vnni()
    layer = random_linear(128, 64, bias=True)
    q = make_quantized(mode, layer, group_size=32)  # type: ignore[arg-type]
    x = torch.randn(2, 3, 128)
    with torch.no_grad():
        y = q(x.bfloat16())
        ref = layer(x.reshape(6, 128)).reshape(2, 3, 64)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 64)
    assert rel_error(y, ref) < (0.05 if mode == "int8_vnni" else 0.17)


def test_weight_bytes_are_honest() -> None:
    require_vnni()
    layer = random_linear(896, 1000, bias=False)  # 1000 % 64 != 0: padded rows are read and counted
    q8 = Int8VnniLinear(layer.weight.data, None)
    q4 = Int4VnniLinear(layer.weight.data, None, 128)
    assert q8.weight_bytes == 1024 * 896 + 4 * 1000
    assert q4.weight_bytes == 1024 * 896 // 2 + 1024 * (896 // 128) * 2 * 2  # nibbles + bf16 scale and min
    assert 1.0 < q8.bytes_per_weight < 1.03 and 0.53 < q4.bytes_per_weight < 0.55


def test_wrong_dtypes_are_refused_not_misread() -> None:
    """The C side trusts pointers: a module cast after quantizing (bf16 scales) must raise, not read garbage."""
    require_vnni()
    q8 = Int8VnniLinear(random_linear(64, 32, bias=True).weight.data, torch.randn(32))
    q4 = Int4VnniLinear(random_linear(64, 32, bias=True).weight.data, None, 32)
    x = torch.randn(2, 64)
    with pytest.raises(TypeError, match="fp32 bias"):
        q8.to(torch.bfloat16)(x)
    with pytest.raises(TypeError, match="bfloat16 scales"):
        q4.to(torch.float32)(x)  # bf16 scales and mins cast to fp32
    with pytest.raises(TypeError, match="contiguous fp32 CPU input"):
        vnni.int8_linear(x.t().contiguous().t(), q8.weight_vnni, q8.scales, None, 32)
    with pytest.raises(ValueError, match="group_size % 8 == 0 dividing in_features=64"):
        Int4VnniLinear(torch.zeros(64, 16), None, 48)


def test_int4_vnni_group_checks_come_before_any_swap() -> None:
    require_vnni()
    with pytest.raises(ValueError, match="group_size must be one of"):
        quantize_model(load_model("dummy:tiny-qwen2").model, "int4_vnni", group_size=48)
    model = load_model("dummy:tiny-mistral").model  # d_ff = 160: 128 does not divide it
    with pytest.raises(ValueError, match=r"w2 \(160 -> 64\)"):
        quantize_model(model, "int4_vnni", group_size=128)
    assert isinstance(model.output, Linear)


# ---- whole models --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_quantize_model_swaps_all_and_keeps_the_tied_embedding(mode: str) -> None:
    require_vnni()
    model = load_model("dummy:tiny-qwen2").model
    tokens = torch.tensor([3, 17, 250, 0])
    before = model.embed(tokens).clone()
    summary = quantize_model(model, mode, group_size=32)  # type: ignore[arg-type]
    assert len(summary.swapped) == 9 and not any(isinstance(m, Linear) for m in model.modules())
    assert torch.equal(model.embed(tokens), before) and isinstance(model.output, QuantizedLinear)
    lo, hi = (1.0, 1.1) if mode == "int8_vnni" else (0.5, 0.65)
    assert lo <= summary.bytes_per_weight < hi
    assert model.weight_format.startswith(f"{mode}:g32")


def _logits(model: Transformer, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, model.cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return tokens, model(tokens, torch.arange(n), DenseCausalAttention([n]))


@pytest.mark.parametrize(("mode", "torch_mode"), [("int8_vnni", "int8_dynamic"), ("int4_vnni", "int4_weight_only")])
def test_model_error_matches_the_torch_route(mode: str, torch_mode: str) -> None:
    """Teacher-forced logits of tiny-llama: the VNNI route's error to fp32 is the torch route's (same weight
    codes; activations int8 per token vs fbgemm's uint8 on [-absmax, absmax]: the same step), within 20 %."""
    require_vnni()
    _, fp = _logits(load_model("dummy:tiny-llama").model)
    errors, top1 = {}, {}
    for m in (mode, torch_mode):
        model = load_model("dummy:tiny-llama").model
        quantize_model(model, m, group_size=32)  # type: ignore[arg-type]
        _, y = _logits(model)
        errors[m] = rel_error(y, fp)
        top1[m] = float((y.argmax(-1) == fp.argmax(-1)).float().mean())
    assert errors[mode] < 1.2 * errors[torch_mode]
    assert top1[mode] >= top1[torch_mode] - 0.05


PROMPTS = [[5, 6, 7, 8] * 4, [9, 10, 11] * 5, [12, 13] * 6, [100, 3, 77, 41, 2]]


def _engine_tokens(mode: str, config: EngineConfig, max_tokens: int = 16, seed: int = 0) -> list[list[int]]:
    loaded = load_model("dummy:tiny-llama", seed=seed)
    quantize_model(loaded.model, mode, group_size=32)  # type: ignore[arg-type]
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    return [c.output_ids for c in Engine(loaded, config).generate(PROMPTS, params)]


def test_engine_greedy_decode_agrees_with_int8_dynamic() -> None:
    """Greedy decode of 4 prompts x 16 tokens through the engine. Not token-identical to int8_dynamic: both carry
    ~1.8 % logit error (different activation rounding) and a random-weight model's top-2 logits are often closer
    than that (median margin 0.2 of logit std 1.0), so one flip changes every later token. Measured: 72 % of
    positions equal to int8_dynamic (and to fp32). Required here: every first token (prefill) equal, and >= 60 %."""
    require_vnni()
    config = EngineConfig(block_size=4)
    ours, theirs = _engine_tokens("int8_vnni", config), _engine_tokens("int8_dynamic", config)
    assert [o[0] for o in ours] == [t[0] for t in theirs]
    same = sum(a == b for o, t in zip(ours, theirs, strict=True) for a, b in zip(o, t, strict=True))
    assert same / sum(len(o) for o in ours) >= 0.6


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_engine_decode_equals_dense_forward_of_the_same_model(mode: str) -> None:
    """Token-identical self-consistency: each token the engine decoded (M = 1..4 kernel calls over a paged KV
    cache) is the argmax of one dense forward over prompt + answer (M up to ~30: the chunked prefill path)."""
    require_vnni()
    loaded = load_model("dummy:tiny-llama")
    quantize_model(loaded.model, mode, group_size=32)  # type: ignore[arg-type]
    outs = Engine(loaded, EngineConfig(block_size=4)).generate(PROMPTS, SamplingParams(max_tokens=12, ignore_eos=True))
    for prompt, out in zip(PROMPTS, outs, strict=True):
        ids = prompt + out.output_ids
        with torch.no_grad():
            logits = loaded.model(torch.tensor(ids), torch.arange(len(ids)), DenseCausalAttention([len(ids)]))
        assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == out.output_ids


@pytest.mark.parametrize("mode", VNNI_MODES)
def test_speculative_decoding_is_token_identical(mode: str) -> None:
    """Batch invariance through the engine: verify chunks reproduce 1-token steps (exactly, with the
    row-invariant attention kernel: tests/engine/test_row_attention.py checks the bits)."""
    require_vnni()
    attention = "row_invariant" if row_attention.unavailable_reason() is None else "sdpa"
    plain = _engine_tokens(mode, EngineConfig(block_size=4, attention=attention), seed=4)
    spec = EngineConfig(block_size=4, speculative="prompt_lookup", spec_adaptive=False, attention=attention)
    assert _engine_tokens(mode, spec, seed=4) == plain


def test_levers_and_tuner_name_the_vnni_modes() -> None:
    assert parse_lever("int4_vnni:g64+skip=output") == Lever("int4_vnni", 64, ("output",))
    assert parse_lever(Lever("int4_vnni", 32).name) == Lever("int4_vnni", 32)
    assert parse_lever("int8_vnni").mode == "int8_vnni"
    with pytest.raises(ValueError, match="applies to int4_weight_only and int4_vnni only"):
        parse_lever("int8_vnni:g64")
    assert {SHORT[m] for m in VNNI_MODES} == {"int8-vnni", "int4-vnni"}
