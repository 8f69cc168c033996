"""The AI-factory planner on the default workload (issue 20): the shared Azure 2023 conversation trace's
daily shape and request sizes, its rate scaled x100 (about 117k output tokens/s, a mid-size AI factory),
for Llama-3.1-8B (the scenario default) and Llama-3.1-70B, p99 TTFT 2 s and TPOT 100 ms, a 50 MW site
trying air and liquid cooling. Baseline from the same run: a common default deployment — H100 SXM
servers, the smallest tensor parallelism that holds the BF16 weights and meets the SLOs, batch cap
256, full TDP, co-located serving, air-cooled — evaluated by the same model. Reports the chosen
plan, the front's size, where phase-splitting pays, the knees, and the search time.

    python benchmarks/plan.py [--quick]     (quick: four weeks of the twin instead of a year)

Writes benchmarks/results/plan.json. Every plan number is an estimate (hardware model + twin).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from joulepath.hw import get_model_preset
from joulepath.plan import Candidate, Demand, Evaluation, PlanInputs, evaluate
from joulepath.plan.output import evaluation_dict
from joulepath.plan.search import plan
from joulepath.report.result_json import write_json_atomic
from joulepath.workload import read_azure_csv

ROOT = Path(__file__).resolve().parents[3]
TRACE = ROOT.parent / "shared" / "data" / "azure_llm_inference_2023_conv.csv"
OUT = ROOT / "benchmarks" / "results" / "plan.json"
SCALE = 100.0
BASELINE = Candidate("h100-sxm", 1, 256, "bf16", 1.0, False, "modern-air")


def baseline(inputs: PlanInputs) -> Evaluation:
    """The default deployment at the smallest tensor parallelism that fits and meets the SLOs."""
    for tp in (1, 2, 4, 8):
        ev = evaluate(dataclasses.replace(BASELINE, tensor_parallel=tp), inputs)
        if not ev.reason.startswith(("memory", "SLO")):
            return ev
    return ev


def default_demand(path: Path = TRACE) -> Demand:
    t = read_azure_csv(path)
    d = Demand.from_requests(t.arrival_s, t.prompt_tokens.astype(float), t.output_tokens.astype(float))
    return d.scaled(SCALE)


def _one(model: str, demand: Demand, days: float) -> dict[str, Any]:
    inputs = PlanInputs(get_model_preset(model), demand, facility_days=days)
    t0 = time.perf_counter()
    p = plan(inputs)
    seconds = time.perf_counter() - t0
    base = baseline(inputs)
    chosen = p.chosen
    out: dict[str, Any] = {
        "model": model,
        "search_s": round(seconds, 2),
        "evaluated": len(p.evaluations),
        "feasible": sum(e.feasible for e in p.evaluations),
        "front": len(p.front),
        "chosen": evaluation_dict(chosen) if chosen else None,
        "reasons": p.reasons,
        "baseline": evaluation_dict(base),
        "phase_split": dataclasses.asdict(p.split),
        "knees": {c.x_label: c.knee_x for c in p.curves},
    }
    if chosen and base.feasible:
        out["cost_vs_baseline"] = round(chosen.cost_usd_per_mtok / base.cost_usd_per_mtok, 3)
        out["wall_energy_vs_baseline"] = round(chosen.wall_j_per_token / base.wall_j_per_token, 3)
    return out


def _print(r: dict[str, Any]) -> None:
    c, b = r["chosen"], r["baseline"]
    print(f"{r['model']}: {r['evaluated']} candidates, {r['feasible']} feasible, front {r['front']}, {r['search_s']} s")
    if b["feasible"]:
        cost, energy = b["cost_usd_per_mtok"], b["wall_j_per_token"]
        print(f"  baseline tp{b['tensor_parallel']}: {cost:.3f} USD/Mtok, {energy:.3f} J/tok")
    else:
        print(f"  baseline tp{b['tensor_parallel']}: infeasible ({b['reason']})")
    if c:
        print(
            f"  chosen {c['accelerator']} tp{c['tensor_parallel']} b{c['batch_cap']} {c['precision']} "
            f"cap{c['power_cap_frac']:.0%} {c['cooling']}{' split' if c['phase_split'] else ''}: "
            f"{c['cost_usd_per_mtok']:.3f} USD/Mtok, {c['wall_j_per_token']:.3f} J/tok"
        )
    for reason in r["reasons"]:
        print(f"   - {reason}")
    print(f"  phase split: {r['phase_split']}; knees: {r['knees']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="28 days of the twin per candidate instead of 365")
    parser.add_argument("--trace", type=Path, default=TRACE)
    args = parser.parse_args(argv)
    if not args.trace.is_file():
        print(f"skipped: {args.trace} not found (public data folder absent)")
        return 0
    demand = default_demand(args.trace)
    days = 28.0 if args.quick else 365.0
    results = [_one(m, demand, days) for m in ("llama-3.1-8b", "llama-3.1-70b")]
    for r in results:
        _print(r)
    doc = {
        "demand": demand.source,
        "demand_mean_tokens_per_s": demand.mean_tokens_per_s,
        "facility_days": days,
        "results": results,
        "quick": args.quick,
        "provenance": "estimated: hardware model + facility twin; search_s measured on this machine",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT, doc)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0
