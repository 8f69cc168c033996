"""This device's measured limits: peak matmul FLOP/s and memory read bandwidth (quick probes, best of
a few runs), the two roofs of the roofline."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

import torch

from joulepath.results import DeviceLimits


def _best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up and is not counted
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


@lru_cache(maxsize=4)
def measure_limits(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DeviceLimits:
    device = torch.device(device)
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    gemm_s = _best_seconds(lambda: a @ a, 3, device)
    buf = torch.ones((1 << 30 if device.type == "cuda" else 1 << 28) // 4, device=device, dtype=torch.float32)
    read_s = _best_seconds(lambda: buf.sum().item(), 3, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = "" if device.type == "cuda" else f" ({torch.get_num_threads()} threads)"
    return DeviceLimits(f"{name}{threads}", 2 * n**3 / gemm_s, buf.numel() * 4 / read_s)
