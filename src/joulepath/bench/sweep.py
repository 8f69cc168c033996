"""Scale-out sweeps (issue 20): facility-years serial vs a local process pool (vs Ray where installed),
identical rows required; and the planner's regret on measured serving data.

- Sweep: `--runs` facility-years (default 1,000; `--quick` 100), each a full year of the facility twin
  at 15-minute steps (35,040 steps) with its own seeded synthetic weather and grid, cycling over four
  designs, every climate and grid region, three sizes and two load shapes. Serial first (the baseline),
  then the pool (one worker per usable core), then Ray (only with `--ray-address` and the optional `ray`
  package; 'local' starts a Ray on this machine), each into its own resumable Parquet store; `identical`
  compares every backend's table with serial's, cell by cell. `ray_s` is the wall time a user sees,
  starting and stopping a 'local' Ray included; `ray_start_stop_s` is that start and stop alone (a
  sweep of no tasks). The load average before and after goes in `machine`: other jobs share the cores.
- Planner: `plan.validate` on the ML.ENERGY v3 table (skipped when the file is absent): median regret
  (measured J/token of the planner's pick over the measured best meeting each ITL target) and how often
  it picks the measured optimum.

    python benchmarks/sweep.py [--quick] [--runs N] [--ray-address local|auto|HOST:6379]

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
    start_stop_s, _ = _timed(0, base / "ray-empty", 1, address)  # the same backend with nothing to run
    return {
        "ray_s": round(ray_s, 2),
        "ray_start_stop_s": round(start_stop_s, 2),
        "ray_address": address,
        "ray_identical": table.equals(serial),
    }


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
        "load_avg_1_5_15_min_before": _load_avg(),
    }


def _load_avg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (runnable processes; measured), where the OS has them."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _print(r: dict[str, Any]) -> None:
    runs, load = r["runs"], r["machine"]["load_avg_1_5_15_min_after"]
    print(f"{'backend':<10}{'runs':>6}{'seconds':>10}{'years/s':>10}")
    for name, key in (("serial", "serial_s"), (f"pool x{r['pool_workers']}", "pool_s"), ("ray", "ray_s")):
        if r[key] is not None:
            print(f"{name:<10}{runs:>6}{r[key]:>10.1f}{runs / r[key]:>10.1f}")
    print(f"ray: start + stop {r['ray_start_stop_s']} s" if r["ray_s"] is not None else f"ray: {r['ray_note']}")
    print(f"identical rows ({', '.join(r['identical_backends'])}): {r['identical']}; load average {load}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 facility-years instead of 1,000")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: usable cores)")
    parser.add_argument(
        "--ray-address", default=None, help="'local' (start one here), 'auto' or HOST:6379 (needs `ray`)"
    )
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if args.ray_address:  # before minutes of serial and pool runs, not after them
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            parser.error("--ray-address needs the optional `ray` package (pip install 'joulepath[ray]')")
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
    info["load_avg_1_5_15_min_after"] = _load_avg()
    backends = ["serial", "pool"] + (["ray"] if ray["ray_s"] is not None else [])
    result = {
        "runs": runs,
        "step_s": 900.0,
        "serial_s": round(serial_s, 2),
        "pool_s": round(pool_s, 2),
        "pool_workers": workers,
        **ray,
        "identical": serial.equals(pool) and ray.get("ray_identical", True),
        "identical_backends": backends,
        "facility_years_per_s_pool": round(runs / pool_s, 2),
        "mean_pue": round(float(pc.mean(serial.column("pue")).as_py()), 4),
        **_planner(args.data),
        "machine": info,
        "quick": args.quick,
        "provenance": "measured: wall time on this machine; rows estimated by the facility twin",
    }
    _print(result)
    print(f"planner regret: {result.get('planner_validation') or result.get('planner_note')}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT, result)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0
