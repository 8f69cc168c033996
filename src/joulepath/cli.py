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
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from joulepath import __version__
from joulepath.hw import UnknownHardwareError, accelerators, get_accelerator, interconnects, memories
from joulepath.meter import MeterError, auto_meter
from joulepath.report.result_json import _plain
from joulepath.scenario import Scenario, ScenarioError, load_scenario
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
    sys.stdout.write(json.dumps(_plain(data), indent=2) + "\n")


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
    """Validate a scenario file; print what is wrong, field by field."""
    scenario = _guard(lambda: load_scenario(path))
    console.print(f"[green]ok[/]: {path} ({scenario.name}: {scenario.description})")


@app.command("meter")
def meter_cmd(
    seconds: Annotated[float, typer.Option(help="Length of the test window, s.")] = 1.0, json_out: JsonFlag = False
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


@app.command("generate")
def generate_cmd(
    prompt: str,
    model: Annotated[str, typer.Option(help="A Hugging Face model folder or dummy:PRESET.")] = "dummy:tiny-llama",
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option(help="0 = off.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    chat: Annotated[bool, typer.Option(help="Wrap the prompt in the model's chat template.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Stream a completion, then print tokens/s and J/token (measured or estimated, labelled)."""
    import torch

    from joulepath.engine import Engine, SamplingParams
    from joulepath.model import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def prepare() -> tuple[Engine, str, SamplingParams]:
        loaded = load_model(model, device=device, dtype=dtype)
        text = loaded.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
        params = SamplingParams(max_tokens, temperature, top_k, top_p, seed, tuple(stop or ()))
        return Engine(loaded), text, params

    engine, text, params = _guard(prepare)
    stream = engine.stream(text, params)
    pieces = _guard(lambda: list(stream) if json_out else _echo(stream))
    record = engine.records[-1]
    decode_s = record.e2e_s - record.ttft_s
    tok_s = (record.output_tokens - 1) / decode_s if record.output_tokens > 1 and decode_s > 0 else 0.0
    if json_out:
        _print_json({"text": "".join(pieces), "record": record, "decode_tokens_per_s": tok_s, "model": model})
        return
    console.print()
    console.print(
        f"[dim]{record.output_tokens} tokens, TTFT {1e3 * record.ttft_s:.0f} ms, {tok_s:.1f} tokens/s decode, "
        f"{record.energy_j / max(record.output_tokens, 1):.3g} J/token ({record.energy_provenance}), "
        f"finish: {record.finish_reason}[/]"
    )


def _echo(stream: Any) -> list[str]:
    out = []
    for piece in stream:
        console.print(piece, end="", highlight=False, markup=False)
        out.append(piece)
    return out


@bench_app.command("decode")
def bench_decode(
    quick: Annotated[bool, typer.Option(help="16 tokens instead of 64.")] = False,
    model: Annotated[str, typer.Option(help="Model to decode with.")] = "dummy:qwen2.5-0.5b",
) -> None:
    """Batch-1 decode: tokens/s and GB/s vs the measured memory roofline and vs transformers."""
    from joulepath.bench import decode

    decode.main([*(["--quick"] if quick else []), "--model", model])


@bench_app.command("batch")
def bench_batch(
    quick: Annotated[bool, typer.Option(help="8 requests instead of 32.")] = False,
    sweep: Annotated[bool, typer.Option(help="Try several batch sizes.")] = False,
    model: Annotated[str, typer.Option(help="Model to serve.")] = "dummy:qwen2.5-0.5b",
) -> None:
    """Continuous batching vs one request at a time on Azure-shaped requests."""
    from joulepath.bench import batch

    batch.main([*(["--quick"] if quick else []), *(["--sweep"] if sweep else []), "--model", model])


def _twin_inputs(scenario: Scenario, it_csv: Path | None) -> tuple[Any, Any, float | None]:
    """IT board power (W per step) and its clock: a CSV, or the scenario's fleet projection."""
    import numpy as np

    from joulepath.facility import Clock
    from joulepath.run import build_trace, deployment, run_facility

    if it_csv is not None:
        import csv

        if not it_csv.is_file():
            raise ValueError(f"IT power CSV {it_csv} does not exist; give a CSV with a column it_power_w")
        with it_csv.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "it_power_w" not in rows[0]:
            raise ValueError(f"{it_csv}: needs a header with it_power_w (W per step; optional t_s for the step)")
        values = np.array([float(r["it_power_w"]) for r in rows])
        step = float(rows[1]["t_s"]) - float(rows[0]["t_s"]) if "t_s" in rows[0] and len(rows) > 1 else None
        clock = Clock(step or scenario.facility.step_s, len(values))
        return values, clock, None
    from joulepath.hw.fleet import project_trace

    trace = build_trace(scenario.workload)
    proj = project_trace(
        trace.arrival_s,
        trace.prompt_tokens,
        trace.output_tokens,
        scenario.model.spec(),
        deployment(scenario),
        scenario.fleet.count,
        scenario.fleet.max_batch,
        max(1.0, scenario.workload.duration_s / 60),
    )
    twin = run_facility(scenario, proj)
    return None, twin, None


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


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it holds a checkpoint).")],
    preset: Annotated[str, typer.Option(help="Zoo shape: jp-small or jp-large.")] = "jp-small",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Data and init seed.")] = 0,
) -> None:
    """Train a zoo model on the task suite (AdamW, cosine, clipping, checkpoints, resume)."""
    from joulepath.quality.train import TrainConfig, train

    cfg = _guard(lambda: TrainConfig(preset=preset, steps=steps, batch_size=batch_size, lr=lr, seed=seed))
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("training", total=steps)

        def show(s: Any) -> None:
            bar.update(
                task,
                completed=s.step,
                description=f"step {s.step}/{steps} loss {s.loss:.3f} {s.tokens_per_s:,.0f} tok/s",
            )

        _guard(lambda: train(cfg, out, show))
    console.print(f"saved {preset} to {out}")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(help="A model folder or dummy:PRESET.")],
    golden: Annotated[str, typer.Option(help="Golden split: dev or test.")] = "dev",
    per_cell: Annotated[int | None, typer.Option(help="First N examples of each skill/level.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Exact-match accuracy per skill and difficulty with 95 % intervals, tokens, time, J/token."""
    from joulepath.model import load_model
    from joulepath.quality import golden as golden_sets
    from joulepath.quality.evals import evaluate

    loaded = _guard(lambda: load_model(model))
    examples = _guard(lambda: golden_sets.load(golden, per_cell=per_cell))
    report = evaluate(loaded, examples)
    if json_out:
        cells = [
            {"skill": c.skill, "level": c.level, "n": c.n, "correct": c.correct, "accuracy": c.accuracy, "ci95": c.ci95}
            for c in report.cells
        ]
        _print_json(
            {
                "model": model,
                "golden": golden,
                "accuracy": report.accuracy,
                "cells": cells,
                "output_tokens": report.output_tokens,
                "seconds": report.seconds,
                "j_per_token": report.j_per_token,
                "energy_provenance": report.energy_provenance,
            }
        )
        return
    table = Table(title=f"{model} on golden/{golden}: {100 * report.accuracy:.1f} % exact match")
    for col in ("skill", "level", "n", "accuracy", "95 % interval"):
        table.add_column(col, justify="right" if col not in ("skill", "level") else "left")
    for c in report.cells:
        lo, hi = c.ci95
        table.add_row(c.skill, c.level, str(c.n), f"{100 * c.accuracy:.1f} %", f"{100 * lo:.0f}-{100 * hi:.0f} %")
    console.print(table)
    console.print(
        f"{report.output_tokens} tokens in {report.seconds:.1f} s, {report.j_per_token:.3g} J/token "
        f"({report.energy_provenance})"
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

    scenario = _guard(lambda: load_scenario(scenario_path))

    def simulate() -> list[Any]:
        values, twin_or_clock, _ = _twin_inputs(scenario, it_csv)
        if values is None:
            base = twin_or_clock
            board = base.series["it_power_w"] - base.series["server_fan_w"] - base.series["it_conversion_loss_w"]
            clock = base.clock
        else:
            board, clock = values, twin_or_clock
            base = run_twin(scenario.facility.config(), board, clock)
        results = [base]
        if compare:
            results.append(run_twin(_variant(scenario, compare), board, clock, design_board_w=float(board.max())))
        return results

    results = _guard(simulate)
    if json_out:
        _print_json([facility_to_dict(r) for r in results])
        return
    _print_twin(results)


def _print_twin(results: list[Any]) -> None:
    table = Table(
        title="facility twin (estimated)",
        caption=f"weather: {results[0].weather_source}; grid: {results[0].grid_source}",
    )
    table.add_column("metric")
    for r in results:
        table.add_column(r.config.name, justify="right")
    if len(results) == 2:
        table.add_column("change", justify="right")
    rows: list[tuple[str, Callable[[Any], float], str]] = [
        ("PUE", lambda m: m.pue, "{:.3f}"),
        ("TUE", lambda m: m.tue, "{:.3f}"),
        ("WUE, L/kWh", lambda m: m.wue_l_per_kwh, "{:.2f}"),
        ("IT energy, MWh", lambda m: m.it_energy_j / 3.6e9, "{:,.1f}"),
        ("facility energy, MWh", lambda m: m.facility_energy_j / 3.6e9, "{:,.1f}"),
        (
            "cooling, MWh",
            lambda m: (
                sum(v for k, v in m.energy_by_subsystem_j.items() if k not in ("chain_loss", "aux_power")) / 3.6e9
            ),
            "{:,.1f}",
        ),
        ("power-chain losses, MWh", lambda m: m.energy_by_subsystem_j["chain_loss"] / 3.6e9, "{:,.1f}"),
        ("water, m3", lambda m: m.water_l / 1e3, "{:,.1f}"),
        ("carbon, t CO2", lambda m: m.carbon_g / 1e6, "{:,.1f}"),
        ("cost, kUSD", lambda m: m.cost_usd / 1e3, "{:,.1f}"),
        ("peak grid draw, MW", lambda m: m.peak_grid_w / 1e6, "{:,.2f}"),
        ("free cooling, % of heat", lambda m: 100 * m.free_cooling_frac, "{:.0f}"),
        ("inlet outside 18-27 C, steps", lambda m: m.inlet_violation_steps, "{:.0f}"),
    ]
    for name, get, fmt in rows:
        values = [get(r.metrics) for r in results]
        cells = [fmt.format(v) for v in values]
        if len(values) == 2:
            cells.append(f"{100 * (values[1] / values[0] - 1):+.1f} %" if values[0] else "-")
        table.add_row(name, *cells)
    console.print(table)
    for r in results:
        for w in r.warnings:
            console.print(f"[yellow]{r.config.name}:[/] {w}")


@app.command("run")
def run_cmd(
    scenario_path: Annotated[Path | None, typer.Argument(metavar="[SCENARIO.toml]", help="Default: built-in.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Base folder for run outputs (default: scenario output.dir).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """The main job: project a workload onto a fleet and roll its energy up to the wall."""
    from joulepath.report import result_to_dict, write_result
    from joulepath.run import new_run_dir, run

    scenario = _guard(lambda: load_scenario(scenario_path))
    quiet = json_out
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)
        result = _guard(lambda: run(scenario, lambda stage: bar.update(task, description=stage)))
    run_dir = _guard(
        lambda: new_run_dir(out or scenario.output.dir, scenario.name, datetime.now().strftime("%Y%m%d-%H%M%S"))
    )
    path = write_result(result, run_dir)
    if json_out:
        _print_json({"result_json": str(path), **result_to_dict(result)["summary"]})
        return
    _print_summary(result, path)


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
    est = "estimated (hw model)"
    rows = [
        ("requests", f"{result.trace.n_requests:,} over {s.horizon_s:,.0f} s", result.trace_source),
        ("fleet", f"{sc.fleet.count} x {sc.fleet.accelerator}, {result.projection.n_units} unit(s)", "scenario"),
        ("capacity", f"{s.capacity_tokens_per_s:,.0f} tokens/s", est),
        ("utilisation", f"{100 * s.utilisation:.1f} %", est),
        ("served / unserved", f"{s.served_output_tokens:,.0f} / {s.unserved_output_tokens:,.0f} tokens", est),
        ("device energy per token", f"{s.device_j_per_token:.3g} J/token", est),
        ("wall energy per token", f"{s.wall_j_per_token:.3g} J/token", "estimated + assumed host and PUE"),
        ("IT power avg / peak", f"{s.avg_it_power_w / 1e3:,.2f} / {s.peak_it_power_w / 1e3:,.2f} kW", est),
        ("PUE / WUE (facility twin)", f"{s.pue:.3f} / {s.wue_l_per_kwh:.2f} L/kWh", "estimated (facility twin)"),
        (
            "water / carbon / cost",
            f"{s.water_l:.3g} L / {s.carbon_g / 1e3:.3g} kg CO2 / ${s.cost_usd:.3g}",
            "estimated (twin; grid hourly intensity)",
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
    a = result.analysis_energy
    console.print(
        f"[dim]this analysis: {a.duration_s:.2f} s, {a.total_energy_j:.3g} J on this machine "
        f"({a.provenance_summary})[/]"
    )
    console.print(f"result: {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()
