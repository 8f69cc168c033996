"""The CDU flow as a cooling-MPC action on a direct-to-chip liquid plant (issue 18), against its baselines
in the same run.

A year of each of the five shared EPW climates (the same files, reader and synthetic IT load as
`joulepath.bench.control`), the `hyperscale-liquid` preset (70 % of heat to cold plates on W32 facility
water), four controllers: the fixed 18 C baseline, G36 trim-and-respond (both at the design CDU flow: the
CDU pumps hold the design loop delta T), the MPC choosing the CDU flow with its other actions under the
chips' case limit, and the same MPC with the CDU flow held at design (what the lever alone is worth).
Per climate: cooling energy, the CDU / facility-water pumps' part of it, the MPC's mean CDU flow, the
hottest accelerator case and the minutes above its limit, and the MPC's saving against each baseline.
Quick: 1-hour steps and decisions, the two hottest climates (Phoenix, Dallas: where the chips run
warmest); full: every climate, 1-minute steps, 15-minute decisions.

Provenance: energies, temperatures and savings are estimated (the facility twin's models; the cold-plate
constants are sourced or assumed in `joulepath.facility.cooling`); the weather is measured (EPW TMYx), the
IT load synthetic (an assumption, `bench.control.it_board_w`); wall seconds are measured here.

    python benchmarks/control_liquid.py [--quick]   # writes benchmarks/results/control_liquid.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from joulepath.bench.control import CLIMATES, SHARED_DATA, it_board_w, machine
from joulepath.control.cooling import CoolingMpc, DiurnalPersistence, FixedSetpoint, MpcConfig, TrimAndRespond
from joulepath.facility.core import Clock
from joulepath.facility.feedback import Controller, run_controlled
from joulepath.facility.presets import HYPERSCALE_LIQUID
from joulepath.facility.weather import Weather, read_epw
from joulepath.report.result_json import write_json_atomic

SITE = HYPERSCALE_LIQUID
QUICK_CLIMATES = ("phoenix", "dallas")
MPC_DESIGN_CDU = "mpc-cdu-design"  # the MPC with the CDU flow held at design
PROVENANCE = (
    "estimated: facility twin (hyperscale-liquid) with each controller in the loop; weather measured (EPW TMYx); "
    "IT load synthetic (assumption); cold-plate constants sourced or assumed (facility.cooling); seconds measured"
)


@dataclass(frozen=True)
class LiquidOutcome:
    """One controller over one climate's year (energies in MWh, temperatures in C)."""

    climate: str
    controller: str
    cooling_mwh: float
    cdu_pump_mwh: float  # CDU + facility-water pumps, part of cooling
    pump_mwh: float  # every pump, part of cooling
    facility_mwh: float
    mean_cdu_flow_frac: float  # CDU flow over the design-delta-T flow (baselines 1.0)
    chip_max_c: float  # hottest accelerator case of the year
    chip_over_limit_minutes: float  # above `chip_case_max_c`
    inlet_max_c: float
    seconds: float  # wall, measured


def controllers() -> list[Controller]:
    """The two baselines, the MPC, and the MPC with the CDU flow held at design (fresh: G36 keeps state)."""
    held = CoolingMpc(SITE, MpcConfig(cdu_flow_frac=(1.0,)))
    held.name = MPC_DESIGN_CDU
    return [FixedSetpoint(SITE.cooling), TrimAndRespond(SITE.cooling), CoolingMpc(SITE), held]


def run_liquid(
    climate: str, weather: Weather, clock: Clock, controller: Controller, interval_steps: int
) -> LiquidOutcome:
    """A controlled year of the liquid site, timed (the loop and the twin, not loading the weather)."""
    t0 = time.perf_counter()
    run = run_controlled(
        SITE, it_board_w(clock), clock, controller, DiurnalPersistence(), interval_steps, weather=weather
    )
    seconds = time.perf_counter() - t0
    s, mwh = run.twin.series, clock.dt_s / 3.6e9
    chip_c = s["chip_case_c"]
    return LiquidOutcome(
        climate,
        controller.name,
        float(s["cooling_power_w"].sum() * mwh),
        float(s["cdu_pump_w"].sum() * mwh),
        float(s["cooling_pump_w"].sum() * mwh),
        float(s["facility_power_w"].sum() * mwh),
        float(s["sp_cdu_flow_frac"].mean()),
        float(chip_c.max()),
        float((chip_c > SITE.cooling.chip_case_max_c).sum() * clock.dt_s / 60.0),
        float(s["inlet_c"].max()),
        seconds,
    )


def savings(outcomes: list[LiquidOutcome]) -> dict[str, dict[str, float]]:
    """Per climate: the MPC's cooling saving (%) vs each baseline and vs itself at the design CDU flow."""
    table: dict[str, dict[str, float]] = {}
    for climate in dict.fromkeys(o.climate for o in outcomes):
        by = {o.controller: o for o in outcomes if o.climate == climate}
        mpc = by["mpc"].cooling_mwh
        table[climate] = {
            f"cooling_vs_{key}_pct": 100.0 * (1.0 - mpc / by[name].cooling_mwh)
            for key, name in (("fixed", "fixed-18C"), ("g36", "g36-trim-respond"), ("cdu_design", MPC_DESIGN_CDU))
        }
    return table


def liquid_study(quick: bool, weathers: dict[str, Weather], clock: Clock | None = None) -> dict[str, Any]:
    """Every climate x controller on the liquid site; `clock` overrides the year (tests). Returns the
    outcomes, the savings per climate and the constants the chips were held to."""
    if clock is None:
        clock = Clock.year(3600.0) if quick else Clock.year(60.0)
    interval_steps = max(1, round(900.0 / clock.dt_s))  # 15-minute decisions, or one per step if longer
    outcomes = [
        run_liquid(name, weather, clock, ctl, interval_steps)
        for name, weather in weathers.items()
        for ctl in controllers()
    ]
    return {
        "site": SITE.name,
        "quick": quick,
        "step_s": clock.dt_s,
        "interval_s": interval_steps * clock.dt_s,
        "chip_case_max_c": SITE.cooling.chip_case_max_c,
        "chip_margin_k": MpcConfig().chip_margin_k,
        "cdu_flow_grid": MpcConfig().cdu_flow_frac,
        "outcomes": [asdict(o) for o in outcomes],
        "savings_by_climate": savings(outcomes),
        "provenance": PROVENANCE,
    }


def print_study(study: dict[str, Any]) -> None:
    """The outcomes per climate and controller, then the MPC's savings."""
    print(
        f"{SITE.name}: {study['step_s']:.0f} s steps, decisions every {study['interval_s']:.0f} s; chip case limit "
        f"{study['chip_case_max_c']:.0f} C (assumed), MPC margin {study['chip_margin_k']:.0f} K\n{study['provenance']}"
    )
    print(
        f"{'climate':10}{'controller':18}{'cooling MWh':>12}{'CDU pumps':>10}{'pumps':>8}{'facility MWh':>14}"
        f"{'CDU flow':>9}{'chip max C':>11}{'>limit min':>11}{'s':>7}"
    )
    for o in study["outcomes"]:
        print(
            f"{o['climate']:10}{o['controller']:18}{o['cooling_mwh']:>12.1f}{o['cdu_pump_mwh']:>10.1f}"
            f"{o['pump_mwh']:>8.1f}{o['facility_mwh']:>14.1f}{o['mean_cdu_flow_frac']:>9.3f}{o['chip_max_c']:>11.1f}"
            f"{o['chip_over_limit_minutes']:>11.0f}{o['seconds']:>7.1f}"
        )
    for climate, row in study["savings_by_climate"].items():
        print(
            f"{climate:10}MPC saves cooling {row['cooling_vs_fixed_pct']:5.1f} % vs fixed, "
            f"{row['cooling_vs_g36_pct']:5.1f} % vs G36, {row['cooling_vs_cdu_design_pct']:5.2f} % vs itself at "
            "the design CDU flow (estimated)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1-hour steps and decisions (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/control_liquid.json"))
    args = parser.parse_args(argv)
    if not (SHARED_DATA / "weather").is_dir():
        print(f"shared data not found at {SHARED_DATA}; set JOULEPATH_SHARED_DATA")
        return 1
    t0 = time.perf_counter()
    names = QUICK_CLIMATES if args.quick else tuple(CLIMATES)
    weathers = {name: read_epw(SHARED_DATA / "weather" / CLIMATES[name]) for name in names}
    study = liquid_study(args.quick, weathers)
    print_study(study)
    write_json_atomic(args.out, study | {"wall_s": time.perf_counter() - t0, "machine": machine()})
    print(f"took {time.perf_counter() - t0:.0f} s (measured)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
