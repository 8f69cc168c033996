"""Shared benchmark plumbing: machine description, memory-bandwidth probe, result files."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from joulepath.hw.catalog import local_cpu
from joulepath.report.result_json import write_json_atomic


def machine() -> dict[str, Any]:
    """What ran the benchmark, for RESULTS.md."""
    info: dict[str, Any] = {
        "cpu": local_cpu().source,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def read_bandwidth_gb_s(device: str = "cpu", n_bytes: int = 1_000_000_000, repeats: int = 5) -> float:
    """Achievable memory read bandwidth: best of `repeats` full reductions of an `n_bytes` tensor."""
    x = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    best = 0.0
    for _ in range(repeats + 1):  # the first pass warms pages and threads and is not counted
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x.sum().item()  # .item() is the named sync: the read must finish inside the timing
        best = max(best, n_bytes / (time.perf_counter() - t0) / 1e9)
    return best


def write_result(name: str, data: dict[str, Any], out_dir: Path | None = None) -> Path:
    """`benchmarks/results/<name>.json` (or `out_dir`), written atomically."""
    base = out_dir or Path(os.environ.get("JOULEPATH_BENCH_DIR", "benchmarks/results"))
    return write_json_atomic(base / f"{name}.json", data)
