"""The facility twin command."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from joulepath.cli.common import JsonFlag, app, console, guarded, print_json
from joulepath.cli.tables import Col, fit_table, num
from joulepath.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from joulepath.facility import TwinMetrics, TwinResult


def _twin_inputs(scenario: Scenario, it_csv: Path | None) -> tuple[Any, Any, float]:
    """(board power per step, clock, design board power): a CSV, or the scenario's fleet projection."""
    import numpy as np

    from joulepath.facility import Clock
    from joulepath.run import build_trace, facility_inputs, project

    if it_csv is None:
        return facility_inputs(scenario, project(scenario, build_trace(scenario.workload)))
    power_w, step_s = read_it_power_csv(it_csv)
    values = np.array(power_w)
    return values, Clock(step_s or scenario.facility.step_s, len(values)), float(values.max())


IT_CSV_FORMAT = "a CSV with the header it_power_w (W per step) and optionally t_s (s; sets the step)"


def read_it_power_csv(path: Path) -> tuple[list[float], float | None]:
    """(IT power per row in W, step in s from the t_s column or None). Every value must be a finite number,
    power non-negative and not all zero, t_s advancing by one uniform step; the error names file and line."""
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise ValueError(f"IT power CSV {path} {problem}; give {IT_CSV_FORMAT}")
    power_w: list[float] = []
    times_s: list[float] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if "it_power_w" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: no it_power_w column; give {IT_CSV_FORMAT}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:  # DictReader's key for values beyond the header
                raise ValueError(f"{where}: more columns than the header {','.join(reader.fieldnames or [])}")
            power_w.append(_finite(row.get("it_power_w"), where, "it_power_w", minimum=0.0))
            if "t_s" in row:
                times_s.append(_finite(row.get("t_s"), where, "t_s"))
    if not power_w:
        raise ValueError(f"{path}: no rows after the header; give {IT_CSV_FORMAT}")
    if not any(power_w):
        raise ValueError(f"{path}: it_power_w is 0 on every row; the twin needs some IT load to compute PUE")
    return power_w, _uniform_step_s(path, times_s)


def _finite(text: str | None, where: str, column: str, minimum: float | None = None) -> float:
    """`text` as a finite float (>= `minimum` when given); a ValueError naming `where` and `column` if not."""
    if text is None:
        raise ValueError(f"{where}: no {column} value; the row has fewer columns than the header")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {column} = {text!r} is not a number") from None
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        need = "a finite number" if minimum is None else f"a finite number >= {minimum:g}"
        raise ValueError(f"{where}: {column} = {text!r}; it must be {need}")
    return value


def _uniform_step_s(path: Path, times_s: list[float]) -> float | None:
    """The step between t_s values (None without them or with one row); it must be positive and uniform."""
    if len(times_s) < 2:
        return None
    steps = [b - a for a, b in itertools.pairwise(times_s)]
    step = steps[0]
    for line, gap in enumerate(steps, start=3):  # row k's gap to the previous row; data starts on line 2
        if gap <= 0 or abs(gap - step) > 1e-6 * step:
            raise ValueError(f"{path}:{line}: t_s must increase by the same step on every row ({step:g} s first)")
    return step


def _variant(scenario: Scenario, name: str) -> Any:
    from joulepath.facility.power_chain import TOPOLOGIES
    from joulepath.facility.presets import PRESETS

    base = scenario.facility.config()
    if name in TOPOLOGIES:
        return base.replace(name=f"{base.name} + {name}", topology=name)
    if name in PRESETS:
        p = PRESETS[name]
        return base.replace(name=name, cooling=p.cooling, topology=p.topology, aux_frac=p.aux_frac)
    raise ValueError(
        f"unknown variant {name!r}; give a facility preset ({', '.join(sorted(PRESETS))}) "
        f"or a power topology ({', '.join(TOPOLOGIES)})"
    )


@app.command("twin")
def twin_cmd(
    scenario_path: Annotated[Path | None, typer.Argument(metavar="[SCENARIO.toml]", help="Default: built-in.")] = None,
    it_csv: Annotated[Path | None, typer.Option(help="CSV of IT board power (it_power_w, optional t_s).")] = None,
    compare: Annotated[str | None, typer.Option(help="A second design: facility preset or power topology.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Run the facility twin alone: PUE, WUE, water, carbon, cost; --compare two designs side by side."""
    from joulepath.facility import run_twin
    from joulepath.report.result_json import facility_to_dict

    scenario = guarded(lambda: load_scenario(scenario_path))

    def simulate() -> list[TwinResult]:
        board, clock, design = _twin_inputs(scenario, it_csv)
        configs = [scenario.facility.config(), *([_variant(scenario, compare)] if compare else [])]
        results = [run_twin(cfg, board, clock, design_board_w=design) for cfg in configs]
        if scenario.control.enabled and not compare:  # [control]: the same design with the controller
            results.append(_controlled(scenario, board, clock, design))
        return results

    results = guarded(simulate)
    if json_out:
        print_json([facility_to_dict(r) for r in results])
        return
    _print_twin(results)


def _controlled(scenario: Scenario, board: Any, clock: Any, design: float) -> TwinResult:
    """The facility with the scenario's `[control]` controller setting its cooling, named after it."""
    import dataclasses

    from joulepath.control import run_controlled_twin
    from joulepath.run import control_config

    cfg = scenario.facility.config()
    twin = run_controlled_twin(cfg, board, clock, control_config(scenario.control), design_board_w=design).twin
    return dataclasses.replace(
        twin, config=dataclasses.replace(cfg, name=f"{cfg.name} + {scenario.control.controller}")
    )


def _print_twin(results: list[TwinResult]) -> None:
    cols = [Col("metric", left=True, wrap=True), *(Col(r.config.name, wrap=True) for r in results)]
    if len(results) == 2:
        cols.append(Col("change"))
    rows: list[tuple[str, Callable[[TwinMetrics], float], Callable[[float], str]]] = [
        ("PUE", lambda m: m.pue, "{:.3f}".format),
        ("TUE", lambda m: m.tue, "{:.3f}".format),
        ("WUE, L/kWh", lambda m: m.wue_l_per_kwh, "{:.2f}".format),
        ("IT energy, MWh", lambda m: m.it_energy_j / 3.6e9, num),
        ("facility energy, MWh", lambda m: m.facility_energy_j / 3.6e9, num),
        (
            "cooling, MWh",
            lambda m: (
                sum(v for k, v in m.energy_by_subsystem_j.items() if k not in ("chain_loss", "aux_power")) / 3.6e9
            ),
            num,
        ),
        ("power-chain losses, MWh", lambda m: m.energy_by_subsystem_j["chain_loss"] / 3.6e9, num),
        ("water, m3", lambda m: m.water_l / 1e3, num),
        ("carbon, t CO2", lambda m: m.carbon_g / 1e6, num),
        ("cost, kUSD", lambda m: m.cost_usd / 1e3, num),
        ("peak grid draw, MW", lambda m: m.peak_grid_w / 1e6, num),
        ("free cooling, % of heat", lambda m: 100 * m.free_cooling_frac, "{:.0f}".format),
        ("inlet outside 18-27 C, steps", lambda m: m.inlet_violation_steps, "{:.0f}".format),
    ]
    cells = []
    for name, get, show in rows:
        values = [get(r.metrics) for r in results]
        row = [name, *(show(v) for v in values)]
        if len(values) == 2:
            row.append(f"{100 * (values[1] / values[0] - 1):+.1f} %" if values[0] else "-")
        cells.append(row)
    console.print(fit_table(console, cols, cells, title="facility twin (estimated)"))
    console.print(f"weather: {results[0].weather_source}; grid: {results[0].grid_source}", highlight=False)
    for r in results:
        for w in r.warnings:
            console.print(f"[yellow]{r.config.name}:[/] {w}")
