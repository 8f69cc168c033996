"""Adaptive infrastructure (issue 18): cooling MPC, forecasts, and the controlled twin's speed, each
against its baselines from the same run.

- Cooling: a year of each of the five shared EPW climates (Phoenix, Dallas, Leesburg, Chicago, Seattle),
  the modern-air preset, the same IT load; the MPC vs a fixed 18 C supply and a G36 trim-and-respond.
  Annual cooling energy (with its chiller, tower-fan and pump parts), facility energy (which also counts
  the server fans a warm inlet speeds up) and minutes above a 27 C rack inlet. Full: 1-minute steps,
  15-minute decisions; --quick: 1-hour steps and decisions (the 1-minute year is still run once, for
  Leesburg, with the MPC: the timing and the series the forecasts use).
- Speed: wall seconds of that 1-minute year with the MPC in the loop (35,040 decisions).
- Forecasts: day-ahead (hourly, issued at midnight) grid carbon intensity of the five EIA files, and IT
  power, facility power and PUE of the controlled Leesburg year; next-15-minute IT and facility power and
  PUE; LightGBM via mlforecast vs seasonal naive (and persistence), 90 % conformal intervals.

The IT load is synthetic (`it_board_w`): a daily and weekly shape plus AR(1) noise. Its noise level is an
assumption and sets much of the facility-power forecast error; the carbon series are measured.

    python benchmarks/control.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from joulepath.control.cooling import CoolingMpc, DiurnalPersistence, FixedSetpoint, TrimAndRespond
from joulepath.facility.cooling import ASHRAE_INLET_MAX_C
from joulepath.facility.core import Clock
from joulepath.facility.feedback import ControlledRun, Controller, run_controlled
from joulepath.facility.grid import read_eia_csv
from joulepath.facility.presets import MODERN_AIR
from joulepath.facility.weather import Weather, read_epw
from joulepath.hw.catalog import local_cpu
from joulepath.report.result_json import write_json_atomic

SHARED_DATA = Path(os.environ.get("JOULEPATH_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared" / "data"))
CLIMATES = {
    "phoenix": "USA_AZ_Phoenix-Sky.Harbor.epw",
    "dallas": "USA_TX_Dallas-Fort.Worth.epw",
    "leesburg": "USA_VA_Leesburg.Exec.epw",
    "chicago": "USA_IL_Chicago.OHare.epw",
    "seattle": "USA_WA_Seattle-Tacoma.epw",
}
CARBON_REGIONS = ("AZPS", "BPAT", "ERCO", "MISO", "PJM")
SITE = MODERN_AIR
PEAK_BOARD_W = 1e6
GOALS = {
    "cooling_saving_vs_fixed_pct_min": (">=", 25.0),
    "cooling_saving_vs_g36_pct_min": (">=", 10.0),
    "inlet_violation_minutes": ("<=", 0.0),
    "seconds_per_year_1min_controlled": ("<=", 10.0),
    "facility_power_mape_day_ahead": ("<=", 3.0),
    "carbon_mape_day_ahead": ("<=", 9.0),
    "pue_mae": ("<=", 0.003),
}


def it_board_w(clock: Clock, peak_w: float = PEAK_BOARD_W, seed: int = 0) -> np.ndarray:
    """Synthetic IT board power (assumption): 72 % of peak on average, +-12 % daily swing peaking at
    15:00, 6 % lower at weekends, hourly AR(1) noise (phi 0.9, ~2.3 % sd) and 1 % per-step noise."""
    rng = np.random.default_rng(seed)
    hours = clock.start_hour_of_year + clock.t_s / 3600.0
    n_hours = int(np.ceil(hours[-1])) + 2
    ar = np.zeros(n_hours)
    shocks = rng.normal(0.0, 0.01, n_hours)
    for i in range(1, n_hours):  # sequential by nature
        ar[i] = 0.9 * ar[i - 1] + shocks[i]
    noise = np.interp(hours, np.arange(n_hours), ar) + rng.normal(0.0, 0.01, clock.n_steps)
    weekend = ((hours // 24) % 7 >= 5) * -0.06
    frac = 0.72 + 0.12 * np.cos(2 * np.pi * ((hours % 24) - 15.0) / 24.0) + weekend + noise
    result: np.ndarray = peak_w * np.clip(frac, 0.3, 1.0)
    return result


WEATHER_FORECAST_SD_K = 1.5  # assumed day-ahead temperature forecast error, K (see weather_forecast_c)


def weather_forecast_c(
    truth_c: np.ndarray, sd_k: float = WEATHER_FORECAST_SD_K, ar1: float = 0.8, seed: int = 1
) -> np.ndarray:
    """A day-ahead forecast of an hourly temperature: the truth plus AR(1) errors of `sd_k` (assumption:
    the order of a global model's day-1 2-m temperature error, e.g. ECMWF's ~1.5 K RMSE)."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, sd_k * np.sqrt(1 - ar1**2), len(truth_c))
    err = np.zeros(len(truth_c))
    for i in range(1, len(err)):  # sequential by nature
        err[i] = ar1 * err[i - 1] + shocks[i]
    return truth_c + err


@dataclass(frozen=True)
class CoolingOutcome:
    """One controller over one climate's year."""

    climate: str
    controller: str
    cooling_mwh: float
    chiller_mwh: float  # part of cooling: compressors
    tower_fan_mwh: float  # part of cooling: heat-rejection fans (what a lower condenser water costs)
    pump_mwh: float  # part of cooling: chilled- and condenser-water pumps (a wider delta T, less flow save)
    facility_mwh: float
    it_mwh: float
    inlet_over_limit_minutes: float
    inlet_max_c: float
    mean_supply_air_c: float
    mean_airflow_ratio: float
    mean_chw_delta_t_k: float  # chilled-water loop delta T the pumps held (the MPC's pump action)
    mean_cw_flow_frac: float  # condenser-water flow over design (the MPC's condenser action; baselines 1.0)
    seconds: float  # wall
    cpu_seconds: float  # this process's CPU time (the shared VM's other load does not count)


def controllers() -> list[Controller]:
    """The two baselines and the MPC, fresh (trim-and-respond keeps state)."""
    return [FixedSetpoint(SITE.cooling), TrimAndRespond(SITE.cooling), CoolingMpc(SITE)]


def run_one(
    climate: str, weather: Weather, clock: Clock, controller: Controller, interval_steps: int
) -> tuple[CoolingOutcome, ControlledRun]:
    """A controlled year, timed (the timing covers the loop and the twin, not loading the weather)."""
    board = it_board_w(clock)
    t0, c0 = time.perf_counter(), time.process_time()
    run = run_controlled(SITE, board, clock, controller, DiurnalPersistence(), interval_steps, weather=weather)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    s, mwh = run.twin.series, clock.dt_s / 3.6e9
    outcome = CoolingOutcome(
        climate,
        controller.name,
        float(s["cooling_power_w"].sum() * mwh),
        float(s["chiller_w"].sum() * mwh),
        float(s["heat_rejection_fan_w"].sum() * mwh),
        float(s["cooling_pump_w"].sum() * mwh),
        float(s["facility_power_w"].sum() * mwh),
        float(s["it_power_w"].sum() * mwh),
        float((s["inlet_c"] > ASHRAE_INLET_MAX_C).sum() * clock.dt_s / 60.0),
        float(s["inlet_c"].max()),
        float(s["sp_supply_air_c"].mean()),
        float(s["sp_airflow_ratio_frac"].mean()),
        _mean_set(s["sp_chw_delta_t_k"]),  # NaN only while the loop has seen nothing yet
        _mean_set(s["sp_cw_flow_frac"]),
        seconds,
        cpu_seconds,
    )
    return outcome, run


def savings(outcomes: list[CoolingOutcome]) -> dict[str, dict[str, float]]:
    """Per climate: the MPC's saving (%) of cooling and of facility energy vs each baseline."""
    table: dict[str, dict[str, float]] = {}
    for climate in dict.fromkeys(o.climate for o in outcomes):
        by = {o.controller: o for o in outcomes if o.climate == climate}
        mpc = by["mpc"]
        row = {}
        for base, key in (("fixed-18C", "fixed"), ("g36-trim-respond", "g36")):
            row[f"cooling_vs_{key}_pct"] = 100.0 * (1.0 - mpc.cooling_mwh / by[base].cooling_mwh)
            row[f"facility_vs_{key}_pct"] = 100.0 * (1.0 - mpc.facility_mwh / by[base].facility_mwh)
        table[climate] = row
    return table


def cooling_study(
    quick: bool, weathers: dict[str, Weather]
) -> tuple[list[CoolingOutcome], ControlledRun, CoolingOutcome]:
    """Every climate x controller, plus the timed 1-minute Leesburg year with the MPC."""
    minute = Clock.year(60.0)
    timed, minute_run = run_one("leesburg", weathers["leesburg"], minute, CoolingMpc(SITE), 15)
    clock, k = (Clock.year(3600.0), 1) if quick else (minute, 15)
    outcomes = []
    for name, weather in weathers.items():
        for ctl in controllers():
            if not quick and name == "leesburg" and ctl.name == "mpc":
                outcomes.append(timed)  # the same run: no need to repeat a minute
                continue
            outcomes.append(run_one(name, weather, clock, ctl, k)[0])
    return outcomes, minute_run, timed


def supply_study(weather: Weather, region: str = "PJM") -> dict[str, Any]:
    """The feedback loop's supply side over the Leesburg 1-minute year on `region`'s measured carbon:
    run-now (nothing deferred, the site's own battery rule) vs `CarbonAwareSupply` (the battery and 25 %
    of the load deferrable by up to 24 h, decided every 15 minutes), both with fixed cooling setpoints,
    a 4-hour battery rated at 25 % of the mean load (as benchmarks/grid.py). Estimated CO2 from the twin.
    The shifted run ends with some work still waiting (at most a day's deferrable share), so the cut is
    taken per MWh of IT work done (`co2_cut_pct`), beside the plain totals (`co2_cut_pct_total`)."""
    from joulepath.control.supply import CarbonAwareSupply
    from joulepath.facility.supply import StorageConfig

    clock = Clock.year(60.0)
    board = it_board_w(clock)
    storage = StorageConfig(energy_wh=4 * 0.25 * float(board.mean()), power_w=0.25 * float(board.mean()))
    site = dataclasses.replace(SITE, storage=storage)
    grid = read_eia_csv(SHARED_DATA / "carbon" / f"{region}_2022_hourly.csv")
    out: dict[str, Any] = {"region": region, "deferrable_frac": 0.25, "deadline_h": 24.0}
    for name, supply in (("run_now", None), ("carbon_aware", CarbonAwareSupply(storage))):
        t0 = time.perf_counter()
        run = run_controlled(
            site,
            board,
            clock,
            FixedSetpoint(site.cooling),
            weather=weather,
            grid=grid,
            supply=supply,
            deferrable_frac=0.25 if supply else 0.0,
        )
        m, sup = run.twin.metrics, run.supply
        out[name] = {
            "co2_t": m.carbon_g / 1e6,
            "it_board_mwh": float(run.twin.series["it_board_w"].sum() * clock.dt_s / 3.6e9),
            "facility_mwh": float(run.twin.series["facility_power_w"].sum() * clock.dt_s / 3.6e9),
            "backlog_at_end_mwh": float(sup.backlog_j[-1] / 3.6e9) if sup else 0.0,
            "overdue_at_end_mwh": sup.overdue_at_end_j / 3.6e9 if sup else 0.0,
            "late_mwh": sup.late_j / 3.6e9 if sup else 0.0,
            "max_wait_h": sup.max_wait_s / 3600.0 if sup else 0.0,
            "seconds": time.perf_counter() - t0,
        }
    now, aware = out["run_now"], out["carbon_aware"]
    out["co2_cut_pct_total"] = 100.0 * (1.0 - aware["co2_t"] / now["co2_t"])
    out["co2_cut_pct"] = 100.0 * (1.0 - (aware["co2_t"] / aware["it_board_mwh"]) / (now["co2_t"] / now["it_board_mwh"]))
    return out


def facility_series(run: ControlledRun, step_s: float) -> dict[str, np.ndarray]:
    """IT power, facility power (W means) and PUE of a controlled run, per `step_s` bucket."""
    s, k = run.twin.series, round(step_s / run.twin.clock.dt_s)

    def bucket(x: np.ndarray) -> np.ndarray:
        result: np.ndarray = x[: len(x) // k * k].reshape(-1, k).mean(axis=1)
        return result

    it_w, fac_w = bucket(s["it_power_w"]), bucket(s["facility_power_w"])
    return {"it_power_w": it_w, "facility_power_w": fac_w, "pue": fac_w / it_w}


def forecast_study(minute_run: ControlledRun, weather: Weather, quick: bool = False) -> dict[str, Any]:
    """Day-ahead and next-15-minute forecasts, model vs baselines, with interval coverage. The day-ahead
    facility power and PUE models also get day-ahead forecasts of the site's wet- and dry-bulb
    temperatures (noisy, `weather_forecast_c`: an assumed 1.5 K error). A diagnostic, outside the goals
    and the pooled coverage: PUE with the true weather in place of the forecast, the floor the weather
    forecast's error leaves. `quick`: 100 trees instead of 300, December as the test span instead of
    October to December."""
    from joulepath.control.forecast import DAY_AHEAD, DAY_AHEAD_LEVEL, NEXT_15_MIN, evaluate

    lighter: dict[str, Any] = {"n_estimators": 100, "test_days": 31} if quick else {}
    day, level, next_15 = (dataclasses.replace(c, **lighter) for c in (DAY_AHEAD, DAY_AHEAD_LEVEL, NEXT_15_MIN))

    carbon = {r: read_eia_csv(SHARED_DATA / "carbon" / f"{r}_2022_hourly.csv").carbon_g_per_kwh for r in CARBON_REGIONS}
    hourly, quarter = facility_series(minute_run, 3600.0), facility_series(minute_run, 900.0)
    weather_forecast = {
        "t_wetbulb_forecast_c": weather_forecast_c(weather.t_wetbulb_c, seed=1),
        "t_drybulb_forecast_c": weather_forecast_c(weather.t_drybulb_c, seed=2),
    }
    t0 = time.perf_counter()
    runs = {
        "carbon_day_ahead": evaluate(carbon, day),
        "it_day_ahead": evaluate({"it_power_w": hourly["it_power_w"]}, level),
        "facility_day_ahead": evaluate({"facility_power_w": hourly["facility_power_w"]}, level, weather_forecast),
        "pue_day_ahead": evaluate({"pue": hourly["pue"]}, level, weather_forecast),
        "facility_next_15min": evaluate(quarter, next_15),
    }
    seconds = time.perf_counter() - t0
    perfect_weather = {"t_wetbulb_forecast_c": weather.t_wetbulb_c, "t_drybulb_forecast_c": weather.t_drybulb_c}
    floor = evaluate({"pue": hourly["pue"]}, level, perfect_weather)
    inside = np.concatenate([(r.y >= r.lo) & (r.y <= r.hi) for r in runs.values()])
    return {
        "scores": {k: [asdict(s) for s in r.scores] for k, r in runs.items()},
        "interval_coverage": float(inside.mean()),
        "seconds": seconds,
        "pue_day_ahead_with_true_weather": asdict(floor.scores[0]),  # diagnostic: not a forecast
        "weather_forecast_error_sd_k": WEATHER_FORECAST_SD_K,  # assumed
    }


def _score(forecasts: dict[str, Any], study: str, series: str | None = None) -> list[dict[str, Any]]:
    return [s for s in forecasts["scores"][study] if series is None or s["series"] == series]


def summary(outcomes: list[CoolingOutcome], timed: CoolingOutcome, forecasts: dict[str, Any] | None) -> dict[str, Any]:
    """The headline figures (the `_min` ones are the worst climate)."""
    table = savings(outcomes)
    out: dict[str, Any] = {
        "cooling_saving_vs_fixed_pct_min": min(r["cooling_vs_fixed_pct"] for r in table.values()),
        "cooling_saving_vs_g36_pct_min": min(r["cooling_vs_g36_pct"] for r in table.values()),
        "facility_saving_vs_fixed_pct_min": min(r["facility_vs_fixed_pct"] for r in table.values()),
        "facility_saving_vs_g36_pct_min": min(r["facility_vs_g36_pct"] for r in table.values()),
        "inlet_violation_minutes": sum(o.inlet_over_limit_minutes for o in outcomes if o.controller == "mpc"),
        "seconds_per_year_1min_controlled": timed.seconds,
        "cpu_seconds_per_year_1min_controlled": timed.cpu_seconds,
    }
    if forecasts is not None:
        carbon = _score(forecasts, "carbon_day_ahead")
        out |= {
            "facility_power_mape_day_ahead": _score(forecasts, "facility_day_ahead", "facility_power_w")[0][
                "model_mape_pct"
            ],
            "carbon_mape_day_ahead": float(np.mean([s["model_mape_pct"] for s in carbon])),
            "it_power_mape_day_ahead": _score(forecasts, "it_day_ahead")[0]["model_mape_pct"],
            "pue_mae": _score(forecasts, "pue_day_ahead", "pue")[0]["model_mae"],
            "pue_mae_day_ahead_true_weather": forecasts["pue_day_ahead_with_true_weather"]["model_mae"],
            "pue_mae_next_15min": _score(forecasts, "facility_next_15min", "pue")[0]["model_mae"],
            "interval_coverage": forecasts["interval_coverage"],
        }
    return out


def goal_met(name: str, value: float) -> bool | None:
    """Whether `value` meets the issue's goal for `name` (None: no goal)."""
    if name == "interval_coverage":
        return 0.88 <= value <= 0.92
    if name not in GOALS:
        return None
    op, bound = GOALS[name]
    return value >= bound if op == ">=" else value <= bound


def machine() -> dict[str, Any]:
    """What ran the benchmark (no torch needed: the control layer never loads it)."""
    return {
        "cpu": local_cpu().source,
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # other work on the shared VM while this ran
        "python": platform.python_version(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
    }


def print_cooling(outcomes: list[CoolingOutcome]) -> None:
    """Baselines and MPC side by side, per climate."""
    print(
        f"{'climate':10}{'controller':18}{'cooling MWh':>12}{'chiller':>9}{'tower':>7}{'pumps':>7}{'facility MWh':>14}"
        f"{'>27C min':>10}{'inlet max':>10}{'mean SA':>9}{'airflow':>9}{'CHW dT':>8}{'CW flow':>8}{'s':>7}{'cpu s':>7}"
    )
    for o in outcomes:
        print(
            f"{o.climate:10}{o.controller:18}{o.cooling_mwh:>12.1f}{o.chiller_mwh:>9.1f}{o.tower_fan_mwh:>7.1f}"
            f"{o.pump_mwh:>7.1f}{o.facility_mwh:>14.1f}"
            f"{o.inlet_over_limit_minutes:>10.0f}{o.inlet_max_c:>10.2f}{o.mean_supply_air_c:>9.2f}"
            f"{o.mean_airflow_ratio:>9.3f}{o.mean_chw_delta_t_k:>8.2f}{o.mean_cw_flow_frac:>8.3f}{o.seconds:>7.1f}"
            f"{o.cpu_seconds:>7.1f}"
        )
    for climate, row in savings(outcomes).items():
        print(
            f"{climate:10}MPC saves cooling {row['cooling_vs_fixed_pct']:5.1f} % vs fixed, "
            f"{row['cooling_vs_g36_pct']:5.1f} % vs G36; facility {row['facility_vs_fixed_pct']:4.2f} % / "
            f"{row['facility_vs_g36_pct']:4.2f} %"
        )


def print_forecasts(forecasts: dict[str, Any]) -> None:
    """Model vs seasonal naive (and persistence) per series."""
    print(
        f"\n{'study':22}{'series':18}{'model MAPE %':>13}{'naive MAPE %':>13}{'persist. %':>11}"
        f"{'model MAE':>11}{'naive MAE':>11}{'coverage':>9}"
    )
    for study, scores in forecasts["scores"].items():
        for s in scores:
            persist = f"{s['persistence_mape_pct']:>11.2f}" if s["persistence_mape_pct"] is not None else f"{'-':>11}"
            print(
                f"{study:22}{s['series']:18}{s['model_mape_pct']:>13.2f}{s['seasonal_naive_mape_pct']:>13.2f}"
                f"{persist}{s['model_mae']:>11.4g}{s['seasonal_naive_mae']:>11.4g}{s['coverage_frac']:>9.3f}"
            )
    floor = forecasts["pue_day_ahead_with_true_weather"]
    print(
        f"pooled 90 % interval coverage {forecasts['interval_coverage']:.3f}; forecasting took "
        f"{forecasts['seconds']:.1f} s\ndiagnostic: PUE day ahead with the true weather in place of the forecast "
        f"(assumed {forecasts['weather_forecast_error_sd_k']} K error): MAE {floor['model_mae']:.4g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1-hour steps for the five-climate comparison (< 60 s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/control.json"))
    args = parser.parse_args(argv)
    if not (SHARED_DATA / "weather").is_dir():
        print(f"shared data not found at {SHARED_DATA}; set JOULEPATH_SHARED_DATA")
        return 1
    t0 = time.perf_counter()
    weathers = {name: read_epw(SHARED_DATA / "weather" / f) for name, f in CLIMATES.items()}
    outcomes, minute_run, timed = cooling_study(args.quick, weathers)
    print_cooling(outcomes)
    supply = supply_study(weathers["leesburg"])
    print(
        f"\nsupply side in the loop (Leesburg year, {supply['region']} carbon, estimated): CO2 run-now "
        f"{supply['run_now']['co2_t']:.0f} t vs carbon-aware {supply['carbon_aware']['co2_t']:.0f} t "
        f"({supply['co2_cut_pct']:.2f} % less per MWh of IT work), late work "
        f"{supply['carbon_aware']['late_mwh']:.3f} MWh, still waiting at the end "
        f"{supply['carbon_aware']['backlog_at_end_mwh']:.2f} MWh, longest wait "
        f"{supply['carbon_aware']['max_wait_h']:.1f} h, {supply['carbon_aware']['seconds']:.1f} s for the year"
    )
    from joulepath.control.forecast import available

    forecasts = forecast_study(minute_run, weathers["leesburg"], args.quick) if available() else None
    if forecasts is None:
        print("\nforecasts skipped: install the control extra (pip install 'joulepath[control]')")
    else:
        print_forecasts(forecasts)
    headline = summary(outcomes, timed, forecasts)
    print(f"\n{'figure':36}{'value':>10}  goal")
    for name, value in headline.items():
        met = goal_met(name, value)
        verdict = "" if met is None else ("met" if met else "NOT met")
        print(f"{name:36}{value:>10.4g}  {verdict}")
    result = headline | {
        "quick": args.quick,
        "machine": machine(),
        "site": SITE.name,
        "goals_met": {k: goal_met(k, v) for k, v in headline.items() if goal_met(k, v) is not None},
        "cooling": [asdict(o) for o in outcomes],
        "savings_by_climate": savings(outcomes),
        "forecasts": forecasts,
        "supply_in_the_loop": supply,
        "wall_s": time.perf_counter() - t0,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return 0


def _mean_set(series: np.ndarray) -> float:
    """Mean of a setpoint series over the steps that set it (NaN: the design rule); NaN if none did."""
    values = series[np.isfinite(series)]
    return float(values.mean()) if len(values) else float("nan")
