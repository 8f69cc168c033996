"""Scale-out sweeps (issue 20): facility-years serial vs a local process pool (vs Ray where installed),
identical rows required; and the planner's regret on measured serving data.

- Sweep: `--runs` facility-years (default 1,000; `--quick` 100), each a full year of the facility twin
  at 15-minute steps (35,040 steps) with its own seeded synthetic weather and grid, cycling over four
  designs, every climate and grid region, three sizes and two load shapes. Serial first (the baseline),
  then the pool (one worker per usable core), each into its own resumable Parquet store; `identical`
  compares the two tables cell by cell. Ray runs only with `--ray-address` and the `ray` package.
- Planner: `plan.validate` on the ML.ENERGY v3 table (skipped when the file is absent): median regret
  (measured J/token of the planner's pick over the measured best meeting each ITL target) and how often
  it picks the measured optimum.

    python benchmarks/sweep.py [--quick] [--runs N] [--ray-address ADDR]

Writes benchmarks/results/sweep.json. Goal: 1,000 facility-years in under 6 minutes here, identical.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from joulepath.hw.catalog import local_cpu
from joulepath.plan.sweep import facility_year_tasks, run_facility_year, run_sweep
from joulepath.plan.validate import summary, validate
from joulepath.report.result_json import write_json_atomic

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data" / "mlenergy_v3_llm_configs.csv"
OUT = ROOT / "benchmarks" / "results" / "sweep.json"


def _timed(runs: int, store: Path, workers: int, ray_address: str | None = None) -> tuple[float, pa.Table]:
    tasks = facility_year_tasks(runs)
    t0 = time.perf_counter()
    table = run_sweep(run_facility_year, tasks, store, workers=workers, ray_address=ray_address)
    return time.perf_counter() - t0, table


def _ray(runs: int, base: Path, address: str | None, serial: pa.Table) -> dict[str, Any]:
    if address is None:
        return {"ray_s": None, "ray_note": "not run: give --ray-address (and install the optional `ray` package)"}
    ray_s, table = _timed(runs, base / "ray", 1, address)
    return {"ray_s": round(ray_s, 2), "ray_identical": table.equals(serial)}


def _planner(data: Path) -> dict[str, Any]:
    if not data.is_file():
        return {"planner_median_regret_pct": None, "planner_note": f"skipped: {data} not found"}
    s = summary(validate(data))
    margin = summary(validate(data, margin=0.9))  # sensitivity: aim predicted ITL at 90 % of the target
    return {
        "planner_median_regret_pct": s["median_regret_pct"],
        "planner_exact_pick_rate": s["exact_pick_rate"],
        "planner_validation": s,
        "planner_validation_itl_margin_0_9": margin,
    }


def machine() -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": local_cpu().source,
        "cores": cores,
        "python": platform.python_version(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 facility-years instead of 1,000")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: usable cores)")
    parser.add_argument("--ray-address", default=None, help="e.g. 'local' or ray://host:10001 (needs `ray`)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    runs = args.runs or (100 if args.quick else 1000)
    info = machine()
    workers = args.workers or int(info["cores"] or 1)
    base = Path(tempfile.mkdtemp(prefix="joulepath-sweep-"))
    try:
        serial_s, serial = _timed(runs, base / "serial", 1)
        pool_s, pool = _timed(runs, base / "pool", workers)
        ray = _ray(runs, base, args.ray_address, serial)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "runs": runs,
        "step_s": 900.0,
        "serial_s": round(serial_s, 2),
        "pool_s": round(pool_s, 2),
        "pool_workers": workers,
        **ray,
        "identical": serial.equals(pool),
        "facility_years_per_s_pool": round(runs / pool_s, 2),
        "mean_pue": round(float(pc.mean(serial.column("pue")).as_py()), 4),
        **_planner(args.data),
        "machine": info,
        "quick": args.quick,
        "provenance": "measured: wall time on this machine; rows estimated by the facility twin",
    }
    print(f"{'backend':<10}{'runs':>6}{'seconds':>10}{'years/s':>10}")
    print(f"{'serial':<10}{runs:>6}{serial_s:>10.1f}{runs / serial_s:>10.1f}")
    print(f"{'pool x' + str(workers):<10}{runs:>6}{pool_s:>10.1f}{runs / pool_s:>10.1f}")
    print(f"identical rows: {result['identical']}; ray: {result.get('ray_s') or result.get('ray_note')}")
    print(f"planner regret: {result.get('planner_validation') or result.get('planner_note')}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT, result)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0
