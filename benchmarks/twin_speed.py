"""Facility twin speed: one year at 1-minute steps (525,600 steps) for a 100 MW site with every
component on (weather, grid carbon and tariff, power chain, liquid cooling, solar, wind, SMR, battery,
demand response). Baseline in the same run: the same year at 15-minute steps, the resolution
ExaDigiT/RAPS and SustainDC run at. Goal: <= 5 s on one core here.

    python benchmarks/twin_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from joulepath.facility import Clock, run_twin
from joulepath.facility.grid import DemandResponse
from joulepath.facility.presets import HYPERSCALE_LIQUID
from joulepath.facility.supply import SmrConfig, SolarConfig, StorageConfig, WindConfig
from joulepath.facility.weather import get_climate, synthetic_weather
from joulepath.report.result_json import write_json_atomic

OUT = Path(__file__).resolve().parent / "results" / "twin_speed.json"
SITE = HYPERSCALE_LIQUID.replace(
    name="100MW-all-on",
    solar=SolarConfig(capacity_w=30e6),
    wind=WindConfig(capacity_w=20e6),
    smr=SmrConfig(capacity_w=50e6),
    storage=StorageConfig(energy_wh=100e6, power_w=25e6, peak_shave_w=90e6),
    demand_response=DemandResponse(events=((24 * 180 + 14, 4.0), (24 * 200 + 15, 3.0)), max_import_w=40e6),
    rack_kw=120.0,
)


def time_year(dt_s: float, repeats: int) -> tuple[float, int]:
    clock = Clock.year(dt_s)
    rng = np.random.default_rng(0)
    it_w = 100e6 * (0.75 + 0.2 * rng.random(clock.n_steps))  # a busy, noisy 100 MW IT load
    weather = synthetic_weather(get_climate(SITE.climate), 0)  # built once; the twin timing starts here
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_twin(SITE, it_w, clock, design_board_w=100e6, weather=weather)
        best = min(best, time.perf_counter() - t0)
    return best, clock.n_steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one timing instead of best of three")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    t15, n15 = time_year(900.0, repeats)
    t1, n1 = time_year(60.0, repeats)
    print(f"{'resolution':24}{'steps':>10}{'seconds':>10}{'steps/s':>14}")
    print(f"{'15-minute (baseline)':24}{n15:>10,}{t15:>10.2f}{n15 / t15:>14,.0f}")
    print(f"{'1-minute (joulepath)':24}{n1:>10,}{t1:>10.2f}{n1 / t1:>14,.0f}")
    print(f"15x the resolution for {t1 / t15:.1f}x the time; goal <= 5 s per 1-minute year: {t1:.2f} s")
    result = {
        "seconds_per_year_1min": round(t1, 3),
        "seconds_per_year_15min": round(t15, 3),
        "steps_1min": n1,
        "site": SITE.name,
        "quick": args.quick,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT, result)  # strict JSON: a non-finite number is null
    return 0


if __name__ == "__main__":
    sys.exit(main())
