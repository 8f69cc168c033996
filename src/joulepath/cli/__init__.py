"""The `joulepath` command line (typer + rich). Every command has `--json` for machines; errors
print one clear message and exit with status 2, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from joulepath import __version__
from joulepath.hw import UnknownHardwareError, accelerators, get_accelerator, interconnects, memories
from joulepath.meter import MeterError, auto_meter, provenance_kind, weakest_kind
from joulepath.report.result_json import _plain
from joulepath.scenario import Scenario, ScenarioError, check_scenario_files, load_scenario
from joulepath.workload import TraceError, read_azure_csv, trace_stats

app = typer.Typer(
    help="joulepath: find where the time and the joules of an AI workload go, from token to wall.",
    no_args_is_help=True,
    add_completion=False,
)
hw_app = typer.Typer(help="The hardware catalog: accelerators, memory tiers, interconnects.", no_args_is_help=True)
trace_app = typer.Typer(help="Request traces: statistics of a trace file.", no_args_is_help=True)
scenario_app = typer.Typer(help="Scenarios: print the default, check a file.", no_args_is_help=True)
app.add_typer(hw_app, name="hw")
app.add_typer(trace_app, name="trace")
app.add_typer(scenario_app, name="scenario")
bench_app = typer.Typer(help="Benchmarks: batch-1 decode, continuous batching.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
USER_ERRORS = (ScenarioError, TraceError, UnknownHardwareError, MeterError, ValueError, OSError)
T = TypeVar("T")


def _guard(fn: Callable[[], T]) -> T:
    """Run `fn`; a user error becomes one red line and exit status 2."""
    try:
        return fn()
    except USER_ERRORS as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _print_json(data: Any) -> None:
    """Strict JSON on stdout: a non-finite number is null (as in result.json), never `NaN`."""
    sys.stdout.write(json.dumps(_plain(data), indent=2, allow_nan=False) + "\n")


def _fmt(value: float | None, unit: str = "", digits: int = 3) -> str:
    return "n/p" if value is None else f"{value:,.{digits}g}{(' ' + unit) if unit else ''}"


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        console.print(f"joulepath {__version__}")
        raise typer.Exit()


@hw_app.command("list")
def hw_list(
    kind: Annotated[str | None, typer.Option(help="Only this kind: gpu, tpu, npu, dpu, cpu.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List catalog accelerators with their peak rates, memory and power (n/p = not published)."""
    rows = [a for a in accelerators().values() if kind is None or a.kind == kind]
    if json_out:
        _print_json(
            {
                "accelerators": rows,
                "memories": list(memories().values()),
                "interconnects": list(interconnects().values()),
                "local_cpu": get_accelerator("local-cpu"),
            }
        )
        return
    table = Table(title="Accelerators (dense peak; n/p = not published)")
    for col in ("name", "vendor", "kind", "BF16 TFLOP/s", "FP8 TFLOP/s", "INT8 TOP/s", "memory", "TB/s", "TDP W"):
        table.add_column(col, justify="left" if col in ("name", "vendor", "kind", "memory") else "right")
    for a in rows:
        mem = f"{_fmt(a.memory_capacity_gb, 'GB')} {a.memory_type or ''}".strip()
        table.add_row(
            a.name,
            a.vendor,
            a.kind,
            _fmt(a.bf16_dense_tflops),
            _fmt(a.fp8_dense_tflops),
            _fmt(a.int8_dense_tops),
            mem,
            _fmt(a.memory_bandwidth_tb_s),
            _fmt(a.tdp_w),
        )
    console.print(table)
    console.print(f"local CPU: {get_accelerator('local-cpu').source}")
    console.print(f"{len(memories())} memory tiers and {len(interconnects())} interconnects: `joulepath hw show NAME`")


@hw_app.command("show")
def hw_show(name: str, json_out: JsonFlag = False) -> None:
    """Every field of one accelerator, memory tier or interconnect, with its source."""

    def find() -> Any:
        key = name.lower()
        for table in (accelerators(), memories(), interconnects()):
            if key in table:
                return table[key]
        if key == "local-cpu":
            return get_accelerator(key)
        known = sorted([*accelerators(), *memories(), *interconnects(), "local-cpu"])
        raise UnknownHardwareError(f"unknown hardware {name!r}; known: {', '.join(known)}")

    item = _guard(find)
    if json_out:
        _print_json(item)
        return
    table = Table(title=f"{name} ({type(item).__name__})", show_header=False)
    for f in dataclasses.fields(item):
        value = getattr(item, f.name)
        shown = "not published" if value is None and f.name in item.not_published else value
        if value is None and f.name not in item.not_published:
            continue
        table.add_row(f.name, str(shown) if not isinstance(shown, tuple) else ", ".join(shown) or "-")
    console.print(table)


@trace_app.command("stats")
def trace_stats_cmd(path: Path, json_out: JsonFlag = False) -> None:
    """Arrival rate, burstiness and token percentiles of an Azure-format trace CSV."""
    trace = _guard(lambda: read_azure_csv(path))
    stats = trace_stats(trace)
    if json_out:
        _print_json(stats)
        return
    console.print(f"[bold]{path}[/]: {stats.n_requests:,} requests over {stats.duration_s:,.0f} s")
    console.print(f"arrival rate {stats.arrival_rate_per_s:.3g} req/s, inter-arrival CV {stats.interarrival_cv:.3g}")
    table = Table(title="tokens per request")
    table.add_column("")
    for q in stats.prompt_tokens_pct:
        table.add_column(q, justify="right")
    table.add_column("mean", justify="right")
    table.add_row(
        "prompt", *[f"{v:,.0f}" for v in stats.prompt_tokens_pct.values()], f"{stats.prompt_tokens_mean:,.0f}"
    )
    table.add_row(
        "output", *[f"{v:,.0f}" for v in stats.output_tokens_pct.values()], f"{stats.output_tokens_mean:,.0f}"
    )
    console.print(table)


@scenario_app.command("show-default")
def scenario_show_default() -> None:
    """Print the built-in default scenario as TOML, to start a scenario file from."""
    sys.stdout.write(Scenario().to_toml())


@scenario_app.command("check")
def scenario_check(path: Path) -> None:
    """Validate a scenario file and read every file it names; print what is wrong, field by field."""
    scenario = _guard(lambda: load_scenario(path))
    _guard(lambda: check_scenario_files(scenario))
    console.print(f"[green]ok[/]: {path} ({scenario.name}: {scenario.description})")


@app.command("meter")
def meter_cmd(
    seconds: Annotated[float, typer.Option(min=0.0, help="Length of the test window, s.")] = 1.0,
    json_out: JsonFlag = False,
) -> None:
    """Show which energy backends this machine offers and measure an idle window."""
    import time

    meter = auto_meter()
    meter.begin("idle")
    time.sleep(seconds)
    m = meter.end("idle")
    if json_out:
        _print_json({"notes": meter.notes, "measurement": m})
        return
    for note in meter.notes:
        console.print(note)
    for comp, joules in m.energy_j.items():
        console.print(f"{comp}: {joules:.3g} J over {m.duration_s:.2f} s ({m.provenance[comp]})")


@app.command("run")
def run_cmd(
    scenario_path: Annotated[Path | None, typer.Argument(metavar="[SCENARIO.toml]", help="Default: built-in.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Base folder for run outputs (default: scenario output.dir).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """The main job: project a workload onto a fleet and roll its energy up to the wall.

    The scenario, the files it names and the output folder are checked before any work starts; the run is
    written into a hidden `.incomplete` folder that is renamed when every file is in it (removed if the run
    fails or is interrupted), so a folder named `<time>-<name>` is always complete."""
    from joulepath.report import result_to_dict
    from joulepath.run import discard_run_dir, staging_run_dir

    scenario = _guard(lambda: load_scenario(scenario_path))
    _guard(lambda: check_scenario_files(scenario))
    base, stamp = out or scenario.output.dir, datetime.now().strftime("%Y%m%d-%H%M%S")
    staging = _guard(lambda: staging_run_dir(base, scenario.name, stamp))
    try:
        written = _guard(lambda: _run_and_write(scenario, staging, base, stamp, json_out))
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] no run folder was written (the unfinished one was removed)")
        raise typer.Exit(130) from None
    finally:
        discard_run_dir(staging)  # a no-op once the finished run has been renamed
    result, run_dir, (path, telemetry, report) = written
    if json_out:
        paths = {"result_json": str(path), "report_html": str(report), "telemetry": str(telemetry)}
        _print_json({**paths, **result_to_dict(result)["summary"]})
        return
    _print_summary(result, path)
    console.print(f'report: {report}\ntelemetry: {telemetry} (joulepath query {run_dir} "SELECT ...")')


def _run_and_write(
    scenario: Scenario, staging: Path, base: Path, stamp: str, quiet: bool
) -> tuple[Any, Path, list[Path]]:
    """Run the scenario with a progress bar (on stderr), write its outputs into `staging`, then publish it:
    (result, the run folder, [result.json, telemetry folder, report.html] inside it)."""
    from joulepath.report import write_result
    from joulepath.report.html import write_report
    from joulepath.report.telemetry import write_telemetry
    from joulepath.run import publish_run_dir, run

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=err_console, disable=quiet,
    ) as bar:  # fmt: skip
        stages: list[Any] = []

        def stage(name: str) -> None:  # one bar per stage: the previous one completes when the next starts
            if stages:
                bar.update(stages[-1], total=1, completed=1)
            stages.append(bar.add_task(name, total=None))

        result = run(scenario, stage)
        stage("writing result.json, telemetry and report.html")
        written = [write_result(result, staging), write_telemetry(result, staging), write_report(result, staging)]
        run_dir = publish_run_dir(staging, base, scenario.name, stamp)
        bar.update(stages[-1], total=1, completed=1)
    return result, run_dir, [run_dir / p.relative_to(staging) for p in written]


def _print_summary(result: Any, path: Path) -> None:
    s, sc = result.summary, result.scenario
    for note in result.meter_notes:
        err_console.print(f"[dim]meter: {note}[/]")
    table = Table(
        title=f"{sc.name}: {sc.description}", caption="estimated: roofline hardware model + scenario assumptions"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("provenance")
    est = f"{provenance_kind(s.provenance)} (hw model)"  # the label comes from the numbers' own provenance
    twin_label = result.facility.metrics.provenance
    twin = provenance_kind(twin_label)
    rows = [
        ("requests", f"{result.trace.n_requests:,} over {s.horizon_s:,.0f} s", result.trace_source),
        ("fleet", f"{sc.fleet.count} x {sc.fleet.accelerator}, {result.projection.n_units} unit(s)", "scenario"),
        ("capacity", f"{s.capacity_tokens_per_s:,.0f} tokens/s", est),
        ("utilisation", f"{100 * s.utilisation:.1f} %", est),
        ("served / unserved", f"{s.served_output_tokens:,.0f} / {s.unserved_output_tokens:,.0f} tokens", est),
        ("device energy per token", f"{s.device_j_per_token:.3g} J/token", est),
        (
            "wall energy per token",
            f"{s.wall_j_per_token:.3g} J/token",
            f"{weakest_kind(s.provenance, twin_label)} (hw model + facility twin; host assumed)",
        ),
        ("IT power avg / peak", f"{s.avg_it_power_w / 1e3:,.2f} / {s.peak_it_power_w / 1e3:,.2f} kW", est),
        ("PUE / WUE (facility twin)", f"{s.pue:.3f} / {s.wue_l_per_kwh:.2f} L/kWh", f"{twin} (facility twin)"),
        (
            "water / carbon / cost",
            f"{s.water_l:.3g} L / {s.carbon_g / 1e3:.3g} kg CO2 / ${s.cost_usd:.3g}",
            f"{weakest_kind(twin_label, result.facility.grid_source)} (twin; grid hourly intensity)",
        ),
        (
            "energy: device / IT / wall",
            f"{s.device_energy_j / 3.6e6:.3g} / {s.it_energy_j / 3.6e6:.3g} / {s.wall_energy_j / 3.6e6:.3g} kWh",
            "see waterfall",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for stage in result.waterfall.stages:
        console.print(f"  {stage.name:>12}: {stage.energy_j / 3.6e6:8.4f} kWh  [dim]{stage.provenance}[/]")
    for warning in result.facility.warnings:
        console.print(f"[yellow]facility warning:[/] {warning}")
    dm = result.data_movement
    moves = ", ".join(
        f"{level} {'n/p (pJ/bit not published)' if j is None else f'{1e3 * j:.3g} mJ'}"
        for level, j in dm.energy_j_per_token.items()
    )
    console.print(
        f"data movement per token at batch {dm.batch:.0f}: {dm.hbm_bytes_per_token / 1e6:.3g} MB from memory, "
        f"{dm.link_bytes_per_token / 1e3:.3g} kB over links; energy: {moves} [dim](estimated)[/]"
    )
    _print_local(result)
    a = result.analysis_energy
    console.print(
        f"[dim]this analysis: {a.duration_s:.2f} s, {a.total_energy_j:.3g} J on this machine "
        f"({a.provenance_summary})[/]"
    )
    console.print(f"result: {path}")


def _print_local(result: Any) -> None:
    """Baseline vs optimized as served on this machine, and the hottest paths."""
    local = result.local
    if local is None:
        return
    from joulepath.report.wording import RATIO_WORDS, ratio_verdict

    b, o = local.baseline, local.optimized
    energy_kind = weakest_kind(b.energy_provenance, o.energy_provenance)
    table = Table(
        title=f"served here: {len(o.requests)} requests on {local.model}, each configuration {local.repeats}x "
        f"interleaved (median repetition shown); time measured, energy {energy_kind}"
    )
    for col in ("", "baseline (1 at a time)", f"optimized (batch {o.max_batch})", "optimized / baseline"):
        table.add_column(col, justify="right")
    ratios = {spread.metric: spread for spread in local.ratios()}
    table.add_row(f"J per output token ({energy_kind})", f"{b.j_per_token:.3g}", f"{o.j_per_token:.3g}",
                  _ratio_cell(ratios["j_per_token"]))  # fmt: skip
    table.add_row("tokens/s", f"{b.tokens_per_s:.1f}", f"{o.tokens_per_s:.1f}", _ratio_cell(ratios["tokens_per_s"]))
    table.add_row("p99 TTFT", f"{1e3 * b.percentile('ttft_s', 99):.0f} ms",
                  f"{1e3 * o.percentile('ttft_s', 99):.0f} ms", _ratio_cell(ratios["ttft_p99_s"]))  # fmt: skip
    table.add_row("golden accuracy", f"{b.accuracy:.1%}", f"{o.accuracy:.1%}", "")
    console.print(table)
    for spread in ratios.values():
        console.print(f"  {RATIO_WORDS[spread.metric][0]}: {ratio_verdict(spread)}", highlight=False)
    console.print(f"[dim]energy: {o.energy_provenance}[/]")
    if o.guard_s:
        console.print(
            f"[dim]guardrails: {len(o.blocked)} request(s) blocked, "
            f"{sum(r.output_guard != 'allow' for r in o.requests)} output(s) changed, {1e3 * o.guard_s:.0f} ms[/]"
        )
    if local.profile:
        for c in local.profile.classes[:5]:
            console.print(f"  hot path {c.name:22s} {100 * c.share:5.1f} % of time  {c.bound}")
        for a in local.profile.advice[:3]:
            console.print(f"  - {a.line()}")


def _ratio_cell(spread: Any) -> str:
    """median (min-max) of a local ratio; `no significant difference` when the spread includes 1.0."""
    if not spread.values:
        return "n/a"
    cell = f"{spread.median:.2f}x ({spread.low:.2f}-{spread.high:.2f})"
    return f"{cell}: no significant difference" if spread.spread_known and spread.includes_one else cell


def main() -> None:  # pragma: no cover - console entry point
    app()


# Command groups in their own modules register on `app` when imported.
from joulepath.cli import compute, facility  # noqa: E402, F401


@app.command("query")
def query_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `joulepath run`.")],
    sql: Annotated[str, typer.Argument(help="SQL over the tables requests, facility, profile.")],
    json_out: JsonFlag = False,
) -> None:
    """Query a run's telemetry (Parquet) with DuckDB, read-only: SELECT over its tables; writes, files, URLs
    and extensions are refused."""
    from joulepath.report.telemetry import query

    columns, rows = _guard(lambda: query(run_dir, sql))
    if json_out:
        _print_json([dict(zip(columns, r, strict=True)) for r in rows])
        return
    table = Table()
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r))
    console.print(table)
