"""The catalog, trace, scenario, meter, run and query commands."""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TaskID

from joulepath.cli.common import (
    JsonFlag,
    app,
    console,
    err_console,
    guarded,
    hw_app,
    print_json,
    progress,
    scenario_app,
    trace_app,
)
from joulepath.cli.tables import Col, fit_table, num
from joulepath.hw import UnknownHardwareError, accelerators, get_accelerator, interconnects, memories
from joulepath.meter import auto_meter, provenance_kind, weakest_kind
from joulepath.report.wording import RATIO_WORDS, gain_text, ratio_verdict, served_in_words
from joulepath.results import LocalComparison, RatioSpread, RunResult
from joulepath.scenario import Scenario, check_scenario_files, load_scenario
from joulepath.workload import read_azure_csv, trace_stats

HW_COLUMNS = (
    Col("name", left=True),
    Col("vendor", left=True, drop=2),
    Col("kind", left=True),
    Col("BF16\nTFLOP/s"),
    Col("FP8\nTFLOP/s"),
    Col("INT8\nTOP/s", drop=1),
    Col("memory", left=True, wrap=True),
    Col("memory\nTB/s"),
    Col("TDP W"),
)


@hw_app.command("list")
def hw_list(
    kind: Annotated[str | None, typer.Option(help="Only this kind: gpu, tpu, npu, dpu, cpu.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """List catalog accelerators with their peak rates, memory and power (n/p = not published)."""
    accs = [a for a in accelerators().values() if kind is None or a.kind == kind]
    if json_out:
        print_json(
            {
                "accelerators": accs,
                "memories": list(memories().values()),
                "interconnects": list(interconnects().values()),
                "local_cpu": get_accelerator("local-cpu"),
            }
        )
        return
    rows = [
        (
            a.name,
            a.vendor,
            a.kind,
            num(a.bf16_dense_tflops),
            num(a.fp8_dense_tflops),
            num(a.int8_dense_tops),
            f"{num(a.memory_capacity_gib, 'GiB')} {a.memory_type or ''}".strip(),
            num(a.memory_bandwidth_tb_s),
            num(a.tdp_w),
        )
        for a in accs
    ]
    console.print(fit_table(console, HW_COLUMNS, rows, title="Accelerators (dense peak; n/p = not published)"))
    console.print(f"local CPU: {get_accelerator('local-cpu').source}", highlight=False)
    console.print(f"{len(memories())} memory tiers and {len(interconnects())} interconnects: `joulepath hw show NAME`")


def _field_text(value: Any) -> str:
    """A catalog field as written in the catalog: numbers in full (thousands separated), lists joined."""
    if isinstance(value, tuple):
        return ", ".join(value) or "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


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

    item = guarded(find)
    if json_out:
        print_json(item)
        return
    rows = []
    for f in dataclasses.fields(item):
        value = getattr(item, f.name)
        if value is None and f.name not in item.not_published:
            continue
        rows.append((f.name, "not published" if value is None else _field_text(value)))
    cols = (Col("field", left=True), Col("value", left=True, wrap=True))
    console.print(fit_table(console, cols, rows, title=f"{name} ({type(item).__name__})", show_header=False))


@trace_app.command("stats")
def trace_stats_cmd(path: Path, json_out: JsonFlag = False) -> None:
    """Arrival rate, burstiness and token percentiles of an Azure-format trace CSV."""
    trace = guarded(lambda: read_azure_csv(path))
    stats = trace_stats(trace)
    if json_out:
        print_json(stats)
        return
    console.print(f"[bold]{path}[/]: {stats.n_requests:,} requests over {num(stats.duration_s, 's')}")
    console.print(
        f"arrival rate {num(stats.arrival_rate_per_s, 'req/s')}, inter-arrival CV {num(stats.interarrival_cv)}"
    )
    cols = [Col("tokens", left=True), *(Col(q) for q in stats.prompt_tokens_pct), Col("mean")]
    rows = [
        (name, *(f"{v:,.0f}" for v in pct.values()), f"{mean:,.0f}")
        for name, pct, mean in (
            ("prompt", stats.prompt_tokens_pct, stats.prompt_tokens_mean),
            ("output", stats.output_tokens_pct, stats.output_tokens_mean),
        )
    ]
    console.print(fit_table(console, cols, rows, title="tokens per request"))


@scenario_app.command("show-default")
def scenario_show_default() -> None:
    """Print the built-in default scenario as TOML, to start a scenario file from."""
    sys.stdout.write(Scenario().to_toml())


@scenario_app.command("check")
def scenario_check(path: Path) -> None:
    """Validate a scenario file and read every file it names; print what is wrong, field by field."""
    scenario = guarded(lambda: load_scenario(path))
    guarded(lambda: check_scenario_files(scenario))
    console.print(f"[green]ok[/]: {path} ({scenario.name}: {scenario.description})")


@app.command("meter")
def meter_cmd(
    seconds: Annotated[float, typer.Option(min=0.0, help="Length of the test window, s.")] = 1.0,
    json_out: JsonFlag = False,
) -> None:
    """Show which energy backends this machine offers and measure an idle window."""
    meter = auto_meter()
    meter.begin("idle")
    time.sleep(seconds)
    m = meter.end("idle")
    if json_out:
        print_json({"notes": meter.notes, "measurement": m})
        return
    for note in meter.notes:
        console.print(note, highlight=False)
    rows = [(comp, num(joules, "J"), num(m.duration_s, "s"), m.provenance[comp]) for comp, joules in m.energy_j.items()]
    cols = (Col("component", left=True), Col("energy"), Col("window"), Col("provenance", left=True, wrap=True))
    console.print(fit_table(console, cols, rows, title="an idle window on this machine"))


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

    scenario = guarded(lambda: load_scenario(scenario_path))
    guarded(lambda: check_scenario_files(scenario))
    base, stamp = out or scenario.output.dir, datetime.now().strftime("%Y%m%d-%H%M%S")
    staging = guarded(lambda: staging_run_dir(base, scenario.name, stamp))
    try:
        written = guarded(lambda: _run_and_write(scenario, staging, base, stamp, json_out))
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] no run folder was written (the unfinished one was removed)")
        raise typer.Exit(130) from None
    finally:
        discard_run_dir(staging)  # a no-op once the finished run has been renamed
    result, run_dir, (path, telemetry, report) = written
    if json_out:
        paths = {"result_json": str(path), "report_html": str(report), "telemetry": str(telemetry)}
        print_json({**paths, **result_to_dict(result)["summary"]})
        return
    _print_summary(result, path)
    console.print(f'report: {report}\ntelemetry: {telemetry} (joulepath query {run_dir} "SELECT ...")')


def _run_and_write(
    scenario: Scenario, staging: Path, base: Path, stamp: str, quiet: bool
) -> tuple[RunResult, Path, list[Path]]:
    """Run the scenario with a progress bar (on stderr), write its outputs into `staging`, then publish it:
    (result, the run folder, [result.json, telemetry folder, report.html] inside it)."""
    from joulepath.report import write_result
    from joulepath.report.html import write_report
    from joulepath.report.telemetry import write_telemetry
    from joulepath.run import publish_run_dir, run

    with progress(with_bar=True, quiet=quiet) as bar:
        stages: list[TaskID] = []

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


def _print_summary(result: RunResult, path: Path) -> None:
    s, sc = result.summary, result.scenario
    for note in result.meter_notes:
        err_console.print(f"[dim]meter: {note}[/]")
    est = f"{provenance_kind(s.provenance)} (hw model)"  # the label comes from the numbers' own provenance
    twin_label = result.facility.metrics.provenance
    twin = provenance_kind(twin_label)
    kwh = [num(j / 3.6e6) for j in (s.device_energy_j, s.it_energy_j, s.wall_energy_j)]
    rows = [
        ("requests", f"{result.trace.n_requests:,} over {num(s.horizon_s, 's')}", result.trace_source),
        ("fleet", f"{sc.fleet.count} x {sc.fleet.accelerator}, {result.projection.n_units} unit(s)", "scenario"),
        ("capacity", num(s.capacity_tokens_per_s, "tokens/s"), est),
        ("utilisation", f"{100 * s.utilisation:.1f} %", est),
        ("served / unserved", f"{s.served_output_tokens:,.0f} / {s.unserved_output_tokens:,.0f} tokens", est),
        ("device energy per token", num(s.device_j_per_token, "J/token"), est),
        (
            "wall energy per token",
            num(s.wall_j_per_token, "J/token"),
            f"{weakest_kind(s.provenance, twin_label)} (hw model + facility twin; host assumed)",
        ),
        ("IT power avg / peak", f"{num(s.avg_it_power_w / 1e3)} / {num(s.peak_it_power_w / 1e3)} kW", est),
        ("PUE / WUE (facility twin)", f"{s.pue:.3f} / {s.wue_l_per_kwh:.2f} L/kWh", f"{twin} (facility twin)"),
        (
            "water / carbon / cost",
            f"{num(s.water_l, 'L')} / {num(s.carbon_g / 1e3, 'kg CO2')} / ${num(s.cost_usd)}",
            f"{weakest_kind(twin_label, result.facility.grid_source)} (twin; grid hourly intensity)",
        ),
        ("energy: device / IT / wall", f"{' / '.join(kwh)} kWh", "see waterfall"),
    ]
    cols = (Col("metric", left=True, wrap=True), Col("value", wrap=True), Col("provenance", left=True, wrap=True))
    caption = "estimated: roofline hardware model + scenario assumptions"
    console.print(fit_table(console, cols, rows, title=f"{sc.name}: {sc.description}", caption=caption))
    stages = [(st.name, f"{st.energy_j / 3.6e6:.4f} kWh", st.provenance) for st in result.waterfall.stages]
    cols = (Col("stage", left=True), Col("energy"), Col("provenance", left=True, wrap=True))
    console.print(fit_table(console, cols, stages, title="energy waterfall, device to wall"))
    for warning in result.facility.warnings:
        console.print(f"[yellow]facility warning:[/] {warning}")
    dm = result.data_movement
    moves = ", ".join(
        f"{level} {'n/p (pJ/bit not published)' if j is None else num(1e3 * j, 'mJ')}"
        for level, j in dm.energy_j_per_token.items()
    )
    console.print(
        f"data movement per token at batch {dm.batch:.0f}: {num(dm.hbm_bytes_per_token / 1e6, 'MB')} from memory, "
        f"{num(dm.link_bytes_per_token / 1e3, 'kB')} over links; energy: {moves} [dim](estimated)[/]"
    )
    _print_local(result)
    _print_ablation(result)
    a = result.analysis_energy
    console.print(
        f"[dim]this analysis: {a.duration_s:.2f} s, {num(a.total_energy_j, 'J')} on this machine "
        f"({a.provenance_summary})[/]"
    )
    console.print(f"result: {path}")


def _print_ablation(result: RunResult) -> None:
    """The headline waterfall: each lever's step here (served rungs) and at the wall (projected)."""
    if not result.ablation:
        return
    first = result.ablation[0]
    rows = []
    for st in result.ablation:
        here = step = "-"
        if st.local is not None:
            run = st.local.median
            here = f"{1 / run.j_per_token:.3g}" if run.j_per_token else "-"
            step = gain_text(st.local_ratio, "-") or "-"
        wall = f"{1 / st.wall_j_per_token:.3g} ({first.wall_j_per_token / st.wall_j_per_token:.2f}x)"
        rows.append((st.lever, here, step, wall))
    cols = (
        Col("lever added", left=True),
        Col("tokens/J here"),
        Col("vs previous rung", wrap=True),
        Col("tokens/wall-J"),
    )
    served = [st.local.median.energy_provenance for st in result.ablation if st.local]
    caption = "wall: estimated (hw model + twin)"
    if served:
        caption = f"here: {weakest_kind(*served)} (meter), median of paired repetitions; {caption}"
    console.print(fit_table(console, cols, rows, title="brute force to optimized, lever by lever", caption=caption))
    if result.shift is not None:
        sh = result.shift
        console.print(
            f"shifting {100 * sh.deferrable_share:.0f} % of the work (deadline {sh.deadline_h} h, "
            f"{sh.battery_hours:g} h battery): CO2 {-100 * sh.co2_cut_frac:+.1f} %, "
            f"cost {-100 * sh.cost_cut_frac:+.1f} %, {sh.oracle_fraction:.0%} of the oracle's saving, "
            f"{sh.missed_deadlines} missed deadlines [dim](estimated)[/]",
            highlight=False,
        )


def _print_local(result: RunResult) -> None:
    """Baseline vs optimized as served on this machine, and the hottest paths."""
    local = result.local
    if local is None:
        return
    b, o = local.baseline, local.optimized
    energy_kind = weakest_kind(b.energy_provenance, o.energy_provenance)
    ratios = {spread.metric: spread for spread in local.ratios()}
    rows = [
        (f"J per output token ({energy_kind})", num(b.j_per_token), num(o.j_per_token),
         _ratio_cell(ratios["j_per_token"])),
        ("tokens/s", f"{b.tokens_per_s:.1f}", f"{o.tokens_per_s:.1f}", _ratio_cell(ratios["tokens_per_s"])),
        ("p99 TTFT", num(1e3 * b.percentile("ttft_s", 99), "ms"), num(1e3 * o.percentile("ttft_s", 99), "ms"),
         _ratio_cell(ratios["ttft_p99_s"])),
        ("golden accuracy", f"{local.accuracy_baseline:.1%}", f"{local.accuracy_optimized:.1%}", _delta_cell(local)),
    ]  # fmt: skip
    cols = (
        Col("", left=True, wrap=True),
        Col("baseline\n(1 at a time)"),
        Col(f"optimized\n(batch {o.max_batch})"),
        Col("optimized / baseline", left=True, wrap=True),
    )
    title = (  # the labels lead, so a narrow terminal never wraps them apart from what they label
        f"time measured, energy {energy_kind}: served here on {local.model}, {served_in_words(local)}; "
        f"median repetition shown, accuracy over all"
    )
    console.print(fit_table(console, cols, rows, title=title))
    for spread in ratios.values():
        console.print(f"  {RATIO_WORDS[spread.metric][0]}: {ratio_verdict(spread)}", highlight=False)
    console.print(f"[dim]energy: {o.energy_provenance}[/]")
    if o.guard_s:
        console.print(
            f"[dim]guardrails: {len(o.blocked)} request(s) blocked, "
            f"{sum(r.output_guard != 'allow' for r in o.requests)} output(s) changed, {1e3 * o.guard_s:.0f} ms[/]"
        )
    if local.profile_brute:
        hot = local.profile_brute.classes[0] if local.profile_brute.classes else None
        if hot is not None:
            console.print(f"  brute force's hottest path: {hot.name} ({100 * hot.share:.1f} % of time)")
    if local.profile:
        console.print("  optimized configuration's hot paths (what is left):")
        for c in local.profile.classes[:5]:
            console.print(f"  hot path {c.name:22s} {100 * c.share:5.1f} % of time  {c.bound}")
        for a in local.profile.advice[:3]:
            console.print(f"  - {a.line()}")


def _delta_cell(local: LocalComparison) -> str:
    """The accuracy difference in points with its paired 95 % interval (the same requests answered twice)."""
    interval = local.accuracy_delta_interval()
    delta = 100 * (local.accuracy_optimized - local.accuracy_baseline)
    if interval is None:
        return f"{delta:+.1f} pts"
    return f"{delta:+.1f} pts ({100 * interval[0]:+.1f} to {100 * interval[1]:+.1f}, paired 95 %)"


def _ratio_cell(spread: RatioSpread) -> str:
    """median (min-max) of a local ratio; `no significant difference` when the spread includes 1.0."""
    if not spread.values:
        return "n/a"
    cell = f"{spread.median:.2f}x ({spread.low:.2f}-{spread.high:.2f})"
    return f"{cell}: no significant difference" if spread.spread_known and spread.includes_one else cell


@app.command("query")
def query_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `joulepath run`.")],
    sql: Annotated[str, typer.Argument(help="SQL over the tables requests, facility, profile.")],
    json_out: JsonFlag = False,
) -> None:
    """Query a run's telemetry (Parquet) with DuckDB, read-only: SELECT over its tables; writes, files, URLs
    and extensions are refused."""
    from joulepath.report.telemetry import query

    columns, rows = guarded(lambda: query(run_dir, sql))
    if json_out:
        print_json([dict(zip(columns, r, strict=True)) for r in rows])
        return
    cells = [tuple(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r) for r in rows]
    console.print(fit_table(console, [Col(c, left=True, wrap=True) for c in columns], cells))
