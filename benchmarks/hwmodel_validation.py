"""Validate the hardware performance/energy model on measured vLLM serving data (ML.ENERGY v3).

Protocol: calibrate on H100 rows only; report MAPE of J/output-token, median inter-token latency and
average GPU power on the held-out B200 rows, split dense / MoE (Mamba hybrids excluded, counted).
Baseline, from the same run: the common back-of-envelope estimate — pure roofline time (100%
efficiency, no overheads) and power = TDP.

    python benchmarks/hwmodel_validation.py [--quick] [--write-calibration] [--data PATH]

Writes benchmarks/results/hwmodel_validation.json. Skips (exit 0) when the data file is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import tomli_w

from joulepath.hw.calibration import Calibration, MeasuredConfig, calibrate, load_mlenergy, mape, predict
from joulepath.hw.perf import Efficiency
from joulepath.report.result_json import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mlenergy_v3_llm_configs.csv"
OUT = ROOT / "benchmarks" / "results" / "hwmodel_validation.json"
CALIBRATION = ROOT / "src" / "joulepath" / "hw" / "data" / "calibration.toml"

# Back-of-envelope baseline: the roofline at 100% efficiency, no overheads, every GPU at TDP.
BASELINE = Efficiency(
    linear_time_factor=1.0,
    attention_time_factor=1.0,
    step_overhead_s=0.0,
    layer_overhead_s=0.0,
    seq_overhead_s=0.0,
    collective_latency_s=0.0,
    link_time_factor=1.0,
    power_static_fraction=1.0,
    power_busy_fraction=0.0,
    hbm_pj_per_byte=0.0,
    pj_per_flop=0.0,
    idle_fraction_of_tdp=0.0,
    source="baseline: roofline at 100% efficiency, power = TDP",
)


def errors(rows: list[MeasuredConfig], cal: Calibration, eff: Efficiency) -> dict[str, float]:
    preds = predict(rows, cal, eff)
    return {m: round(mape(preds, m), 2) for m in ("energy", "itl", "power")}


def table(rows: list[MeasuredConfig], cal: Calibration) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for gpu in ("H100", "B200"):
        for group in ("dense", "moe"):
            sel = [r for r in rows if r.gpu == gpu and r.group == group]
            ours, base = errors(sel, cal, cal.efficiency), errors(sel, cal, BASELINE)
            out[f"{gpu.lower()}_{group}"] = {"n": len(sel), "ours": ours, "baseline": base}
        for task in sorted({r.task for r in rows}):
            sel = [r for r in rows if r.gpu == gpu and r.group == "dense" and r.task == task]
            if sel:
                out[f"{gpu.lower()}_dense_{task}"] = {"n": len(sel), "ours": errors(sel, cal, cal.efficiency)}
    return out


def print_table(results: dict[str, dict[str, object]]) -> None:
    print(f"{'rows':<28}{'n':>4}  {'MAPE % ours (J/tok, ITL, W)':>30}  {'baseline':>22}  {'ratio J/tok':>11}")
    for key, r in results.items():
        ours, base = r["ours"], r.get("baseline")
        assert isinstance(ours, dict)
        o = f"{ours['energy']:6.1f} {ours['itl']:6.1f} {ours['power']:6.1f}"
        b = f"{base['energy']:6.1f} {base['itl']:6.1f} {base['power']:6.1f}" if isinstance(base, dict) else ""
        ratio = f"{base['energy'] / ours['energy']:.1f}x" if isinstance(base, dict) and ours["energy"] else ""
        print(f"{key:<28}{r['n']:>4}  {o:>30}  {b:>22}  {ratio:>11}")


def write_calibration(cal: Calibration) -> None:
    eff = {k: (round(v, 9) if isinstance(v, float) else v) for k, v in cal.efficiency.__dict__.items()}
    doc = {"efficiency": eff, "prompt_tokens_by_task": cal.prompt_tokens_by_task}
    header = "# Written by benchmarks/hwmodel_validation.py --write-calibration; do not edit by hand.\n"
    CALIBRATION.write_text(header + tomli_w.dumps(doc), encoding="utf-8")
    print(f"wrote {CALIBRATION.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one coordinate-descent sweep instead of three")
    parser.add_argument("--write-calibration", action="store_true", help="update the shipped calibration file")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (public data folder absent)")
        return 0
    t0 = time.perf_counter()
    rows = load_mlenergy(args.data)
    transformer = [r for r in rows if r.spec is not None]
    cal = calibrate([r for r in transformer if r.gpu == "H100"], sweeps=1 if args.quick else 3)
    results = table(transformer, cal)
    print(f"calibrated on H100 ({cal.efficiency.source}); fitted prompt tokens by task: {cal.prompt_tokens_by_task}")
    print_table(results)
    summary = {
        "b200_dense_mape_energy_per_token": results["b200_dense"]["ours"]["energy"],  # type: ignore[index]
        "b200_dense_mape_median_itl": results["b200_dense"]["ours"]["itl"],  # type: ignore[index]
        "b200_dense_mape_avg_power": results["b200_dense"]["ours"]["power"],  # type: ignore[index]
        "h100_dense_mape_energy_per_token": results["h100_dense"]["ours"]["energy"],  # type: ignore[index]
        "b200_moe_mape_energy_per_token": results["b200_moe"]["ours"]["energy"],  # type: ignore[index]
        "baseline_b200_dense_mape_energy_per_token": results["b200_dense"]["baseline"]["energy"],  # type: ignore[index]
        "n_rows": len(rows),
        "n_rows_used": len(transformer),
        "n_rows_excluded_hybrid": len(rows) - len(transformer),
        "efficiency": cal.efficiency.__dict__,
        "prompt_tokens_by_task": cal.prompt_tokens_by_task,
        "groups": results,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT, summary)  # strict JSON: a non-finite number is null
    print(f"wrote {OUT.relative_to(ROOT)} in {summary['seconds']} s")
    if args.write_calibration:
        write_calibration(cal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
