"""Validate the facility twin against published facility figures.

1. NVIDIA / Vertiv: an air-cooled site moved to 75 % direct-to-chip liquid: facility power -18.1 %,
   total power -10.2 %, PUE -3.3 % (goal: each within +-1 percentage point).
2. A hyperscale-style liquid-cooled site in a mild climate near Google's fleet PUE 1.10; an air-cooled
   enterprise site near the Uptime Institute 2024 industry average 1.56.
3. AC (415 V, double-conversion UPS) -> 800 V DC: end-to-end gain within the published "up to 5 %".
Baseline in the same run: a constant-PUE assumption (the ledger's fallback) cannot show any of these
deltas (0 %). `python benchmarks/twin_validation.py [--quick]` (quick: 4-hour steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from joulepath.facility import Clock, FacilityConfig, run_twin
from joulepath.facility.presets import ENTERPRISE_AIR, HYPERSCALE_LIQUID, MODERN_AIR, VALIDATION_AIR, VALIDATION_D2C_75
from joulepath.report.result_json import write_json_atomic

OUT = Path(__file__).resolve().parent / "results" / "twin_validation.json"
SITE_IT_W = 1.5e6  # a 1-2 MW site, as in the study; flat load (GPU fleets run near flat)


def _run(cfg: FacilityConfig, clock: Clock) -> tuple[float, float, float, float]:
    m = run_twin(cfg, np.full(clock.n_steps, SITE_IT_W), clock).metrics
    return m.pue, m.it_energy_j, m.facility_energy_j, m.facility_energy_j - m.it_energy_j


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    clock = Clock.year(4 * 3600 if args.quick else 3600)
    pue_a, _, tot_a, fac_a = _run(VALIDATION_AIR, clock)
    pue_b, _, tot_b, fac_b = _run(VALIDATION_D2C_75, clock)
    d2c = {"facility": 100 * (fac_b / fac_a - 1), "total": 100 * (tot_b / tot_a - 1), "pue": 100 * (pue_b / pue_a - 1)}
    hyper, ent = _run(HYPERSCALE_LIQUID, clock)[0], _run(ENTERPRISE_AIR, clock)[0]
    ac = run_twin(MODERN_AIR, np.full(clock.n_steps, SITE_IT_W), clock)
    dc = run_twin(MODERN_AIR.replace(topology="hvdc-800v"), np.full(clock.n_steps, SITE_IT_W), clock)
    chain_ac = float((ac.series["it_power_w"] + ac.series["chain_loss_w"]).sum())
    chain_dc = float((dc.series["it_power_w"] + dc.series["chain_loss_w"]).sum())
    hvdc_chain = 100 * (1 - chain_dc / chain_ac)
    hvdc_total = 100 * (1 - dc.metrics.facility_energy_j / ac.metrics.facility_energy_j)
    rows = [
        ("D2C 75 %: facility power change", d2c["facility"], -18.1, "%"),
        ("D2C 75 %: total power change", d2c["total"], -10.2, "%"),
        ("D2C 75 %: PUE change", d2c["pue"], -3.3, "%"),
        ("hyperscale liquid, mild climate: PUE", hyper, 1.10, ""),
        ("enterprise air: PUE", ent, 1.56, ""),
        ("AC -> 800 VDC: power-chain gain", hvdc_chain, 5.0, "% (up to)"),
        ("AC -> 800 VDC: total facility gain", hvdc_total, 5.0, "% (up to)"),
    ]
    print(f"{'check':40}{'twin':>9}{'published':>11}{'constant-PUE baseline':>23}")
    for name, ours, ref, unit in rows:
        baseline = "0.0" if unit.startswith("%") else "(input)"
        print(f"{name:40}{ours:>9.2f}{ref:>11.2f}{baseline:>23} {unit}")
    result = {
        "d2c_facility_delta_pct": round(d2c["facility"], 2),
        "d2c_total_delta_pct": round(d2c["total"], 2),
        "d2c_pue_delta_pct": round(d2c["pue"], 2),
        "d2c_baseline_pue": round(pue_a, 3),
        "hyperscale_pue": round(hyper, 3),
        "enterprise_pue": round(ent, 3),
        "hvdc_gain_pct": round(hvdc_chain, 2),
        "hvdc_total_gain_pct": round(hvdc_total, 2),
        "step_s": clock.dt_s,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT, result)  # strict JSON: a non-finite number is null
    print(f"wrote {OUT.name} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
