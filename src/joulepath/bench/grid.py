"""Adaptive infrastructure II (issue 19): carbon- and cost-aware shifting with a battery, power caps and
oversubscription, each against its baselines from the same run.

- Shifting (`control.shift`): the five shared EIA 2022 carbon files (measured), the repo's assumed TOU
  tariff (`facility.grid.Tariff`, energy charge only: the EIA files carry no price), the synthetic hourly
  load of `bench.control.it_board_w` (assumed shape). 25 % of each hour's load is batch work with a
  deadline 12-24 h after arrival (assumed, seeded); a 4-hour battery rated at 25 % of the mean load.
  Run-now with the battery idle (baseline) vs the receding-horizon LP on forecasts, re-planned every hour
  (the benchmark's policy) and once a day (`fast_*`: the main job's policy, `replan_h = 24`), vs the
  perfect-foresight LP (oracle), all in the same run. Full: a year; --quick: the first 28 days.
- Power caps (`control.power`, estimated): Llama-3.1-8B on H100 SXM, a decode-heavy synthetic trace
  (prompts ~256, outputs ~1,024 tokens; Poisson arrivals sized to ~60 % of the fleet's capacity).
- Oversubscription (estimated): the per-minute load of `it_board_w` over a year as each device's share
  of its capacity; a feed sized for 1,000 devices at TDP.

    python benchmarks/grid.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from joulepath.bench.control import CARBON_REGIONS, SHARED_DATA, it_board_w, machine
from joulepath.control.power import (
    CapPoint,
    Oversubscription,
    Trace,
    cap_curve,
    choose_cap,
    load_table,
    oversubscribe,
)
from joulepath.control.shift import (
    ShiftConfig,
    diurnal_ar1_forecast,
    oracle,
    receding_horizon,
    run_now,
    savings,
    shift_problem,
)
from joulepath.facility.core import Clock
from joulepath.facility.grid import Tariff, read_eia_csv
from joulepath.hw.catalog import get_accelerator
from joulepath.hw.perf import Deployment, get_model_preset
from joulepath.report.result_json import write_json_atomic

GOALS = {
    "co2_cut_pct_min": (">=", 12.0),
    "cost_cut_pct_min": (">=", 10.0),
    "oracle_fraction_min": (">=", 0.85),
    "missed_deadlines": ("<=", 0.0),
    "powercap_j_per_token_saving_pct": (">=", 25.0),
    "powercap_p99_tpot_slowdown_pct": ("<=", 5.0),
    "oversubscription_gain_pct": (">=", 30.0),
    "throttled_minutes_fraction": ("<", 0.001),
    "fast_missed_deadlines": ("<=", 0.0),
    "fast_seconds_per_region_year_max": ("<=", 3.0),  # the main job's budget for shifting (brief, not the issue)
}
FAST_REPLAN_H = 24  # the main job's planner: one plan a day over the same 48 h look-ahead
MODEL, ACCELERATOR = "llama-3.1-8b", "h100-sxm"
FEED_DEVICES = 1000  # the feed: this many devices at TDP (nameplate provisioning)
LATENCY_BOUND_PCT = 5.0


@dataclass(frozen=True)
class RegionResult:
    """One region's shifting study: the three policies' totals and the savings."""

    region: str
    hours: int
    baseline_co2_t: float
    baseline_cost_usd: float
    online_co2_t: float
    online_cost_usd: float
    oracle_co2_t: float
    oracle_cost_usd: float
    co2_cut_pct: float
    cost_cut_pct: float
    oracle_co2_cut_pct: float
    oracle_cost_cut_pct: float
    oracle_fraction: float
    carbon_only_oracle_co2_cut_pct: float  # the most CO2 the problem allows (objective: carbon only)
    cost_only_oracle_cost_cut_pct: float
    missed_deadlines: int
    lp_solves: int
    online_seconds: float
    fast_co2_t: float  # the daily planner (`replan_h = FAST_REPLAN_H`), same problem and forecasts
    fast_cost_usd: float
    fast_co2_cut_pct: float
    fast_cost_cut_pct: float
    fast_oracle_fraction: float
    fast_missed_deadlines: int
    fast_lp_solves: int
    fast_seconds: float
    forecast_mape_pct: float
    seasonal_naive_mape_pct: float


def forecast_errors(carbon: np.ndarray, hours: int, horizon_h: int = 24) -> tuple[float, float]:
    """MAPE (%) of `diurnal_ar1_forecast` and of seasonal naive, issued each midnight for the next day."""
    model, naive, truth = [], [], []
    for t in range(24, hours - horizon_h + 1, 24):
        model.append(diurnal_ar1_forecast(carbon[:t], horizon_h))
        naive.append(carbon[t - 24 : t - 24 + horizon_h])
        truth.append(carbon[t : t + horizon_h])
    y = np.concatenate(truth)

    def mape(p: list[np.ndarray]) -> float:
        return float(np.mean(np.abs(np.concatenate(p) - y) / y) * 100.0)

    return mape(model), mape(naive)


def shift_region(region: str, hours: int, cfg: ShiftConfig) -> RegionResult:
    """Baseline, online policy and oracles for one EIA region over the first `hours` hours."""
    grid = read_eia_csv(SHARED_DATA / "carbon" / f"{region}_2022_hourly.csv", tariff=Tariff())
    load_w = it_board_w(Clock.year(3600.0))[:hours]
    p = shift_problem(load_w, grid.carbon_g_per_kwh, grid.price_usd_per_kwh, cfg)
    base, best = run_now(p), oracle(p)
    t0 = time.perf_counter()
    online = receding_horizon(p)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = receding_horizon(replace(p, cfg=replace(cfg, replan_h=FAST_REPLAN_H)))
    fast_seconds = time.perf_counter() - t0
    s, s_best, s_fast = savings(base, online, best), savings(base, best, best), savings(base, fast, best)
    carbon_only = oracle(replace(p, cfg=replace(cfg, carbon_weight=1.0)))
    cost_only = oracle(replace(p, cfg=replace(cfg, carbon_weight=0.0)))
    mape, naive = forecast_errors(grid.carbon_g_per_kwh, hours)
    return RegionResult(
        region,
        hours,
        base.co2_kg / 1e3,
        base.cost_usd,
        online.co2_kg / 1e3,
        online.cost_usd,
        best.co2_kg / 1e3,
        best.cost_usd,
        s.co2_cut_pct,
        s.cost_cut_pct,
        s_best.co2_cut_pct,
        s_best.cost_cut_pct,
        s.oracle_fraction,
        savings(base, carbon_only, best).co2_cut_pct,
        savings(base, cost_only, best).cost_cut_pct,
        online.missed_jobs,
        online.solves,
        seconds,
        fast.co2_kg / 1e3,
        fast.cost_usd,
        s_fast.co2_cut_pct,
        s_fast.cost_cut_pct,
        s_fast.oracle_fraction,
        fast.missed_jobs,
        fast.solves,
        fast_seconds,
        mape,
        naive,
    )


def decode_heavy_trace(n_devices: int, capacity_tokens_s_per_device: float, seconds: float, seed: int = 0) -> Trace:
    """Poisson arrivals at ~60 % of the fleet's capacity; lognormal prompts ~256 and outputs ~1,024
    tokens (assumed decode-heavy mix)."""
    rng = np.random.default_rng(seed)
    mean_out = 1024.0 * np.exp(0.5**2 / 2)
    rate_s = 0.6 * n_devices * capacity_tokens_s_per_device / mean_out
    n = rng.poisson(rate_s * seconds)
    return Trace(
        np.sort(rng.uniform(0.0, seconds, n)),
        rng.lognormal(np.log(256.0), 0.5, n),
        rng.lognormal(np.log(1024.0), 0.5, n),
    )


def power_study(quick: bool) -> dict[str, Any]:
    """The cap curve and choice (model's DVFS and the conservative reading), and oversubscription."""
    spec, dep = get_model_preset(MODEL), Deployment(get_accelerator(ACCELERATOR))
    fracs = np.round(np.arange(0.3, 1.0001, 0.05 if quick else 0.025), 4)
    table = load_table(spec, dep, 256.0, 1024.0, np.linspace(0.0, 1.0, 11 if quick else 21), fracs)
    capacity = _unit_capacity(spec, dep)
    n_devices = 8
    trace = decode_heavy_trace(n_devices, capacity, 900.0 if quick else 3600.0)
    curves = {
        "model": cap_curve(trace, spec, dep, n_devices, fracs),
        "conservative": cap_curve(trace, spec, dep, n_devices, fracs, static_scales=False),
    }
    chosen = {k: choose_cap(v, LATENCY_BOUND_PCT) for k, v in curves.items()}
    util = it_board_w(Clock.year(60.0), peak_w=1.0)  # share of capacity per minute (assumed shape)
    feed_w = FEED_DEVICES * dep.tdp_w
    over = {
        "rare_caps": oversubscribe(table, util, feed_w, LATENCY_BOUND_PCT, 0.001, max_capped_frac=0.01),
        "any_caps": oversubscribe(table, util, feed_w, LATENCY_BOUND_PCT, 0.001),
    }
    return {"trace_requests": len(trace.arrival_s), "curves": curves, "chosen": chosen, "oversubscription": over}


DEVICE_POWER_CHECK = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "device_power_check.json"


def nvml_reference(path: Path = DEVICE_POWER_CHECK) -> dict[str, Any] | None:
    """NVML-measured power at the default power limit for the kernels the cap curve models (decode's
    weight-streaming GEMMs of Llama-3.1-8B's size, batch 1 to 4096), from `benchmarks/device_power_check.py`
    run on a lent GPU, beside the power model's figure for the same measured bytes/s and FLOP/s with the
    current calibration. None where that run's JSON is absent. The GPU's limit was never changed, so
    this checks the uncapped point of the cap curve only, not the model's behaviour under a cap."""
    import json

    from joulepath.hw.perf import calibrated_efficiency, device_power_w

    if not path.is_file():
        return None
    check = json.loads(path.read_text())
    dep, eff = Deployment(get_accelerator(check["catalog_entry"])), calibrated_efficiency()
    rows = [
        {
            "batch": r["batch"],
            "measured_power_w": r["measured_power_w"],  # measured:nvml
            "model_power_w": device_power_w(dep, 1.0, r["bytes_per_s"], r["flops_per_s"], eff),  # estimated
        }
        for r in check["rows"]
        if r.get("measured_power_w") is not None  # a non-finite reading is written as null
    ]
    errors = [abs(r["model_power_w"] / r["measured_power_w"] - 1.0) for r in rows]
    return {
        "device": check["device"],
        "catalog_entry": check["catalog_entry"],
        "idle_power_w_measured": check["idle_power_w"],
        "idle_power_w_model": eff.idle_fraction_of_tdp * dep.tdp_w,
        "rows": rows,
        "mean_abs_error_pct": 100.0 * float(np.mean(errors)),
        "source": "benchmarks/results/device_power_check.json (measured:nvml at the default limit)",
    }


def print_nvml(ref: dict[str, Any] | None) -> None:
    """The measured default-limit power beside the model's, or why there is none."""
    if ref is None:
        print("\nNVML reference: none (run benchmarks/device_power_check.py on a CUDA GPU)")
        return
    print(
        f"\nNVML at the default limit, {ref['device']} (measured), vs the power model (estimated): idle "
        f"{ref['idle_power_w_measured']:.0f} W measured vs {ref['idle_power_w_model']:.0f} W modelled"
    )
    for r in ref["rows"]:
        print(f"  batch {r['batch']:>5}: {r['measured_power_w']:>5.0f} W measured, {r['model_power_w']:>5.0f} W model")
    print(f"  mean absolute error {ref['mean_abs_error_pct']:.1f} %")


def _unit_capacity(spec: Any, dep: Deployment) -> float:
    """Output tokens/s of one uncapped device at its maximum batch (decode-heavy mix)."""
    from joulepath.hw.fleet import project_trace

    one = Trace(np.array([0.0]), np.array([256.0]), np.array([1024.0]))
    return project_trace(one.arrival_s, one.prompt_tokens, one.output_tokens, spec, dep, 1).capacity_tokens_per_s


def summary(regions: list[RegionResult], power: dict[str, Any]) -> dict[str, Any]:
    """The headline figures (`_min`: the worst region)."""
    chosen: CapPoint = power["chosen"]["model"]
    over: Oversubscription = power["oversubscription"]["rare_caps"]
    return {
        "co2_cut_pct_min": min(r.co2_cut_pct for r in regions),
        "cost_cut_pct_min": min(r.cost_cut_pct for r in regions),
        "oracle_fraction_min": min(r.oracle_fraction for r in regions),
        "missed_deadlines": sum(r.missed_deadlines for r in regions),
        "oracle_co2_cut_pct_min": min(r.oracle_co2_cut_pct for r in regions),
        "oracle_cost_cut_pct_min": min(r.oracle_cost_cut_pct for r in regions),
        "carbon_only_oracle_co2_cut_pct_max": max(r.carbon_only_oracle_co2_cut_pct for r in regions),
        "fast_co2_cut_pct_min": min(r.fast_co2_cut_pct for r in regions),
        "fast_cost_cut_pct_min": min(r.fast_cost_cut_pct for r in regions),
        "fast_oracle_fraction_min": min(r.fast_oracle_fraction for r in regions),
        "fast_missed_deadlines": sum(r.fast_missed_deadlines for r in regions),
        # per region-year (--quick: per 28 days), and the hourly policy's beside it
        "fast_seconds_per_region_year_max": max(r.fast_seconds for r in regions),
        "online_seconds_per_region_year_max": max(r.online_seconds for r in regions),
        "powercap_j_per_token_saving_pct": chosen.j_saving_pct,
        "powercap_p99_tpot_slowdown_pct": chosen.p99_slowdown_pct,
        "powercap_conservative_j_per_token_saving_pct": power["chosen"]["conservative"].j_saving_pct,
        "oversubscription_gain_pct": over.gain_pct,
        "throttled_minutes_fraction": over.throttled_minutes_frac,
        "capped_minutes_fraction": over.capped_minutes_frac,
        "oversubscription_gain_any_caps_pct": power["oversubscription"]["any_caps"].gain_pct,
    }


def goal_met(name: str, value: float) -> bool | None:
    """Whether `value` meets the issue's goal for `name` (None: no goal)."""
    if name not in GOALS:
        return None
    op, bound = GOALS[name]
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]


def print_regions(regions: list[RegionResult]) -> None:
    """Baseline, online policy and oracle side by side, per region."""
    print(
        f"{'region':7}{'base tCO2':>11}{'online':>10}{'oracle':>10}{'base $':>12}{'online':>12}{'oracle':>12}"
        f"{'CO2 cut %':>10}{'cost cut %':>11}{'oracle CO2/cost %':>18}{'of oracle':>10}{'CO2-only %':>11}"
        f"{'missed':>7}{'s':>6}{'fc MAPE':>8}{'naive':>7}"
    )
    for r in regions:
        print(
            f"{r.region:7}{r.baseline_co2_t:>11.0f}{r.online_co2_t:>10.0f}{r.oracle_co2_t:>10.0f}"
            f"{r.baseline_cost_usd:>12.0f}{r.online_cost_usd:>12.0f}{r.oracle_cost_usd:>12.0f}"
            f"{r.co2_cut_pct:>10.2f}{r.cost_cut_pct:>11.2f}{r.oracle_co2_cut_pct:>9.2f}/{r.oracle_cost_cut_pct:<8.2f}"
            f"{r.oracle_fraction:>10.3f}{r.carbon_only_oracle_co2_cut_pct:>11.2f}{r.missed_deadlines:>7}"
            f"{r.online_seconds:>6.1f}{r.forecast_mape_pct:>8.2f}{r.seasonal_naive_mape_pct:>7.2f}"
        )
    print(f"\ndaily planner (re-planned every {FAST_REPLAN_H} h) beside the hourly one, same problems")
    print(
        f"{'region':7}{'CO2 cut % h/d':>16}{'cost cut % h/d':>17}{'of oracle h/d':>16}{'missed h/d':>12}"
        f"{'solves h/d':>13}{'s h/d':>13}"
    )
    for r in regions:
        print(
            f"{r.region:7}{r.co2_cut_pct:>8.2f}/{r.fast_co2_cut_pct:<7.2f}{r.cost_cut_pct:>9.2f}/{r.fast_cost_cut_pct:<7.2f}"
            f"{r.oracle_fraction:>8.3f}/{r.fast_oracle_fraction:<7.3f}{r.missed_deadlines:>6}/{r.fast_missed_deadlines:<5}"
            f"{r.lp_solves:>7}/{r.fast_lp_solves:<5}{r.online_seconds:>7.1f}/{r.fast_seconds:<5.2f}"
        )


def print_power(power: dict[str, Any]) -> None:
    """The cap curve (estimated) and the oversubscription results."""
    print(f"\n{MODEL} on {ACCELERATOR}, decode-heavy ({power['trace_requests']} requests); estimated")
    print(
        f"{'cap W':>7}{'J/token':>9}{'p99 ITL ms':>11}{'saving %':>9}{'slowdown %':>11}"
        f"{'consistent':>11}{'conservative':>13}"
    )
    for p, c in zip(power["curves"]["model"], power["curves"]["conservative"], strict=True):
        print(
            f"{p.cap_w:>7.0f}{p.j_per_token:>9.4f}{p.p99_itl_s * 1e3:>11.2f}{p.j_saving_pct:>9.1f}"
            f"{p.p99_slowdown_pct:>11.2f}{p.consistent!s:>11}{c.consistent!s:>13}"
        )
    for k, c in power["chosen"].items():
        print(
            f"chosen ({k}): {c.cap_w:.0f} W, {c.j_saving_pct:.1f} % less J/token, p99 ITL +{c.p99_slowdown_pct:.2f} %"
        )
    for k, o in power["oversubscription"].items():
        print(
            f"oversubscription ({k}): {o.devices} devices vs {o.baseline_devices} at nameplate (+{o.gain_pct:.1f} %), "
            f"capped {100 * o.capped_minutes_frac:.3f} % of minutes, throttled beyond {o.max_slowdown_pct:g} %: "
            f"{100 * o.throttled_minutes_frac:.4f} %"
        )


def _jsonable(power: dict[str, Any]) -> dict[str, Any]:
    return {
        "trace_requests": power["trace_requests"],
        "curves": {k: [asdict(p) for p in v] for k, v in power["curves"].items()},
        "chosen": {k: asdict(v) for k, v in power["chosen"].items()},
        "oversubscription": {k: asdict(v) for k, v in power["oversubscription"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="28 days per region, coarser cap grid (< 60 s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grid.json"))
    args = parser.parse_args(argv)
    if not (SHARED_DATA / "carbon").is_dir():
        print(f"shared data not found at {SHARED_DATA}; set JOULEPATH_SHARED_DATA")
        return 1
    t0 = time.perf_counter()
    cfg = ShiftConfig()
    hours = 24 * 28 if args.quick else 8760
    regions = [shift_region(r, hours, cfg) for r in CARBON_REGIONS]
    print_regions(regions)
    power = power_study(args.quick)
    print_power(power)
    nvml = nvml_reference()
    print_nvml(nvml)
    headline = summary(regions, power)
    print(f"\n{'figure':44}{'value':>10}  goal")
    for name, value in headline.items():
        met = goal_met(name, value)
        print(f"{name:44}{value:>10.4g}  {'' if met is None else ('met' if met else 'NOT met')}")
    result = headline | {
        "quick": args.quick,
        "machine": machine(),
        "shift_config": asdict(cfg),
        "tariff": asdict(Tariff()),
        "goals_met": {k: goal_met(k, v) for k, v in headline.items() if goal_met(k, v) is not None},
        "regions": [asdict(r) for r in regions],
        "power": _jsonable(power),
        "nvml_default_limit": nvml,
        "wall_s": time.perf_counter() - t0,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return 0
