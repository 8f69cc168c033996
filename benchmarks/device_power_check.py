"""GPU check (device machine only): NVML energy through joulepath's meter, and the hardware model's
power prediction against measured power for decode-like weight streaming at several batch sizes.

A decode step of a dense model reads every weight once and does 2 x params x batch FLOPs; this script
streams ~16 GB of bf16 weight matrices (Llama-3.1-8B-sized) through `x @ W` for a batch of `B` rows,
times it with CUDA synchronisation, measures energy with the NVML backend, and prints measured vs
predicted power (the shipped calibration: static + busy shares of TDP, pJ/byte, pJ/FLOP).

    PYTHONPATH=src python3 benchmarks/device_power_check.py [--seconds 3] [--out result.json]
Exits 0 with a message when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from joulepath.hw import Deployment, get_accelerator
from joulepath.hw.perf import calibrated_efficiency, device_power_w
from joulepath.meter import NvmlBackend, auto_meter
from joulepath.report.result_json import write_json_atomic


def _weights(torch, total_gb: float, d_model: int = 4096, d_ff: int = 14336) -> list:  # type: ignore[no-untyped-def]
    per = d_model * d_ff * 2  # bytes of one bf16 matrix
    n = int(total_gb * 1e9 // per)
    return [torch.randn(d_model, d_ff, device="cuda", dtype=torch.bfloat16) for _ in range(n)]


def _measure(torch, meter, weights, batch: int, seconds: float) -> dict:  # type: ignore[no-untyped-def]
    x = torch.randn(batch, weights[0].shape[0], device="cuda", dtype=torch.bfloat16)
    for w in weights[:4]:  # warm-up: kernels chosen, clocks up
        x @ w
    torch.cuda.synchronize()
    passes = 0
    meter.begin(f"b{batch}")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for w in weights:
            x @ w
        passes += 1
        torch.cuda.synchronize()  # named sync: one per pass, so the timing covers the work
    elapsed = time.perf_counter() - t0
    m = meter.end(f"b{batch}")
    gpu_j = sum(v for k, v in m.energy_j.items() if k.startswith("gpu:0"))
    nbytes = passes * sum(w.numel() * 2 for w in weights)
    flops = passes * sum(2.0 * batch * w.shape[0] * w.shape[1] for w in weights)
    return {
        "batch": batch,
        "seconds": elapsed,
        "passes": passes,
        "pass_ms": 1e3 * elapsed / passes,
        "bytes_per_s": nbytes / elapsed,
        "flops_per_s": flops / elapsed,
        "measured_power_w": gpu_j / elapsed,
        "provenance": m.provenance.get("gpu:0", "?"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--gb", type=float, default=16.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    meter = auto_meter()
    print("\n".join(meter.notes))
    if not any(isinstance(b, NvmlBackend) for b in meter.backends):
        print("NVML backend not selected; cannot measure GPU energy")
        return 1
    name = torch.cuda.get_device_name(0)
    acc = get_accelerator("h200-sxm" if "H200" in name else "h100-sxm")
    dep, eff = Deployment(acc), calibrated_efficiency()
    meter.begin("idle")
    time.sleep(2.0)
    idle = meter.end("idle")
    idle_w = idle.energy_j.get("gpu:0", 0.0) / idle.duration_s
    print(f"{name}: idle {idle_w:.0f} W ({idle.provenance.get('gpu:0')})")
    weights = _weights(torch, args.gb)
    rows = []
    print(f"{'batch':>6} {'pass ms':>8} {'TB/s':>6} {'TFLOP/s':>8} {'meas W':>7} {'model W':>8} {'ratio':>6}")
    for batch in (1, 16, 64, 256, 1024, 4096):
        r = _measure(torch, meter, weights, batch, args.seconds)
        r["model_power_w"] = device_power_w(dep, 1.0, r["bytes_per_s"], r["flops_per_s"], eff)
        rows.append(r)
        ratio = r["model_power_w"] / r["measured_power_w"]
        print(
            f"{batch:>6} {r['pass_ms']:>8.2f} {r['bytes_per_s'] / 1e12:>6.2f} {r['flops_per_s'] / 1e12:>8.1f} "
            f"{r['measured_power_w']:>7.0f} {r['model_power_w']:>8.0f} {ratio:>6.2f}"
        )
    doc = {
        "device": name,
        "catalog_entry": acc.name,
        "idle_power_w": idle_w,
        "rows": rows,
        "efficiency_source": eff.source,
    }
    if args.out:
        write_json_atomic(args.out, doc)  # strict JSON: a non-finite number is null
    return 0


if __name__ == "__main__":
    sys.exit(main())
