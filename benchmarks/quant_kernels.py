"""joulepath's VNNI int8/int4 kernels (optimize.vnni) vs fp32 and torch's quantized routes, on this CPU (issue 13).

Measured in one process at 1 thread (`torch.set_num_threads(1)`; the kernels split calls over torch's threads):

- Per GEMM: Qwen2.5-0.5B's projection shapes (in -> out: 896 -> 1152 qkv, 896 -> 896 o, 896 -> 9728 fused
  gate/up, 4864 -> 896 down, 896 -> 151936 LM head) at M = 1 and 8 tokens, for fp32 `x @ W`, torch int8_dynamic
  (fbgemm, `Int8DynamicLinear`), torch int4 g128 (`Int4WeightOnlyLinear`), int8_vnni and int4_vnni (g128), each
  through its `QuantizedLinear.forward` (what the engine calls). Weights are cold: every configuration cycles
  through enough copies of its layer to read >= 96 MB (3x this CPU's 32 MB L3) before any copy repeats.
  Configurations interleave within each repetition (order reversed on odd ones); median per-call us of `reps`
  repetitions, GB/s = weight bytes read per call (fp32: 4 K N; quantized: `weight_bytes`) / time.
- ctypes' own cost per call: `vnni.noop_call` (same arguments as the int4 kernel, C returns at once), and a
  1-token 64 -> 64 int8_vnni forward (activation quantization and module overhead included).
- Whole-model decode of dummy:qwen2.5-0.5b at batch 1 (`--batches 1 8` adds batch 8) through the engine, every
  mode on its own model copy (`bench.quantize.engine_measure`, `time_interleaved`: A B A B with the read
  roofline probed each repetition), plus transformers + `torch.ao.quantization.quantize_dynamic`
  (`bench.quantize.transformers_configs`).

`python benchmarks/quant_kernels.py [--quick] [--out benchmarks/results/quant_kernels.json]`. The load average
(`os.getloadavg`) is recorded before and after: timings taken while other processes share the cores are
marked by it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from joulepath.bench.common import machine, read_bandwidth_gb_s
from joulepath.bench.quantize import (
    Config,
    config_row,
    constant,
    engine_measure,
    paired,
    parameter_bytes,
    time_interleaved,
    transformers_configs,
)
from joulepath.model import load_model
from joulepath.model.transformer import Linear
from joulepath.optimize import quantize_model, vnni
from joulepath.optimize.quant import QuantizedLinear, QuantMode, available_modes, make_quantized

SHAPES = {"qkv": (896, 1152), "o": (896, 896), "gate_up": (896, 9728), "down": (4864, 896), "lm_head": (896, 151936)}
GEMM_MODES = ("fp32", "int8_dynamic", "int4_weight_only", "int8_vnni", "int4_vnni")
COLD_BYTES = 96e6
MODEL = "dummy:qwen2.5-0.5b"


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _layer(k: int, n: int, seed: int) -> Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = Linear(k, n)
    layer.weight.data = torch.randn(k, n, generator=gen) * 0.05
    return layer


def _copies(mode: str, k: int, n: int) -> tuple[list[Callable[[torch.Tensor], torch.Tensor]], int]:
    """Enough copies of one layer in `mode` to read COLD_BYTES before repeating, and bytes per call."""
    per_call = 4 * k * n if mode == "fp32" else None
    fns: list[Callable[[torch.Tensor], torch.Tensor]] = []
    seed = 0
    while not fns or len(fns) * (per_call or 1) < COLD_BYTES:
        layer = _layer(k, n, seed)
        if mode == "fp32":
            fns.append(layer)
        else:
            q: QuantizedLinear = make_quantized(cast(QuantMode, mode), layer, group_size=128)
            per_call = q.weight_bytes
            fns.append(q)
        seed += 1
    assert per_call is not None
    return fns, per_call


@torch.inference_mode()
def gemm_table(reps: int, shapes: dict[str, tuple[int, int]], ms: tuple[int, ...]) -> list[dict[str, Any]]:
    modes = [m for m in GEMM_MODES if m == "fp32" or available_modes()[m] is None]
    rows = []
    for name, (k, n) in shapes.items():
        progress(f"  GEMM {name} {k} -> {n}")
        built = {m: _copies(m, k, n) for m in modes}
        for m_tokens in ms:
            x = torch.randn(m_tokens, k)
            times: dict[str, list[float]] = {m: [] for m in modes}
            for mode in modes:  # warm-up: first-call costs
                for fn in built[mode][0][:2]:
                    fn(x)
            for rep in range(reps):
                for mode in modes if rep % 2 == 0 else list(reversed(modes)):
                    fns = built[mode][0]
                    calls = max(len(fns), 8)
                    t0 = time.perf_counter()
                    for i in range(calls):
                        fns[i % len(fns)](x)
                    times[mode].append((time.perf_counter() - t0) / calls)
            for mode in modes:
                us = 1e6 * statistics.median(times[mode])
                nbytes = built[mode][1]
                rows.append({
                    "shape": name, "in": k, "out": n, "tokens": m_tokens, "mode": mode, "us": us,
                    "us_min": 1e6 * min(times[mode]), "us_max": 1e6 * max(times[mode]),
                    "weight_bytes": nbytes, "gb_s": nbytes / us / 1e3,
                })  # fmt: skip
        del built
    return rows


def ctypes_overhead(calls: int = 20000) -> dict[str, float]:
    """us per call: an empty C function through ctypes with the int4 kernel's 11 arguments, and a whole
    1-token 64 -> 64 int8_vnni forward."""
    x, y = torch.randn(1, 64), torch.empty(1, 64)
    packed, sz = torch.zeros(64, dtype=torch.uint8), torch.zeros(64, dtype=torch.bfloat16)
    q = make_quantized("int8_vnni", _layer(64, 64, 0))
    out = {}
    for label, fn in (("noop_call_us", lambda: vnni.noop_call(x, packed, sz, y)), ("forward_64x64_us", lambda: q(x))):
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t0) / calls)
        out[label] = 1e6 * best
    return out


def decode_table(reps: int, steps: int, batches: tuple[int, ...]) -> dict[str, Any]:
    base = load_model(MODEL)
    configs = [Config("fp32", b, constant(parameter_bytes(base.model)), engine_measure(base, b)) for b in batches]
    for mode in ("int8_dynamic", "int4_weight_only", "int8_vnni", "int4_vnni"):
        if available_modes()[mode] is not None:
            continue
        loaded = load_model(MODEL)
        summary = quantize_model(loaded.model, mode)
        info = {"bytes_per_weight": summary.bytes_per_weight}
        after = float(summary.weight_bytes_after)
        configs += [Config(mode, b, constant(after), engine_measure(loaded, b), dict(info)) for b in batches]
    hf, note = transformers_configs(base, batches, with_fp32=False)
    configs += hf
    roofline = time_interleaved(configs, [1], reps, steps)[1]
    roof = statistics.median(roofline)
    rows: dict[str, Any] = {}
    by_key = {c.key: c for c in configs}
    for c in configs:
        row = config_row(c, 1, roof)
        fp = by_key[f"fp32@b{c.batch}"]
        row["speedup_vs_fp32"] = paired(c.samples[1], fp.samples[1])
        hf_key = f"transformers_int8@b{c.batch}"
        if hf_key in by_key and c.name != "transformers_int8":
            row["speedup_vs_transformers_int8"] = paired(c.samples[1], by_key[hf_key].samples[1])
        rows[c.key] = row
    return {"read_roofline_gb_s": roofline, "configs": rows, "transformers_note": note, "steps": steps, "reps": reps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 shapes, 3 repetitions, 16 decode steps")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--batches", type=int, nargs="+", default=[1], help="decode batch sizes (default: 1)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_kernels.json"))
    args = ap.parse_args(argv)
    reason = vnni.unavailable_reason()
    if reason is not None:
        print(f"VNNI kernels unavailable: {reason}")
        return 1
    torch.set_num_threads(1)
    reps, steps = (3, 16) if args.quick else (args.reps, args.steps)
    shapes = {k: SHAPES[k] for k in ("qkv", "down")} if args.quick else SHAPES
    result: dict[str, Any] = {"machine": machine(), "threads": 1, "loadavg_before": os.getloadavg()}
    result["read_roofline_gb_s_1t"] = read_bandwidth_gb_s("cpu", n_bytes=500_000_000, repeats=3)
    result["ctypes"] = ctypes_overhead()
    progress(f"ctypes: {result['ctypes']}")
    if not args.skip_gemm:
        result["gemm"] = gemm_table(reps, shapes, (1, 8))
        for r in result["gemm"]:
            print(f"{r['shape']:8s} M={r['tokens']} {r['mode']:17s} {r['us']:9.1f} us {r['gb_s']:6.1f} GB/s")
    if not args.skip_decode:
        progress("decode")
        result["decode"] = decode_table(reps, steps, tuple(args.batches))
        for key, row in result["decode"]["configs"].items():
            t = row["tokens_per_s"]
            vs = row.get("speedup_vs_fp32", {}).get("median", float("nan"))
            hf = row.get("speedup_vs_transformers_int8", {}).get("median", float("nan"))
            print(
                f"{key:24s} {t['median']:6.1f} tok/s [{t['min']:.1f}, {t['max']:.1f}] {vs:5.2f}x fp32 "
                f"{hf:5.2f}x hf-int8 {row['achieved_gb_s']:5.1f} GB/s"
            )
    result["loadavg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(args.out)
    print(f"load average before {result['loadavg_before']}, after {result['loadavg_after']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
