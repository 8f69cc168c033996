"""Serving commands: `joulepath serve` (the OpenAI-compatible HTTP server) and `joulepath bench serve`
(a load client that measures any OpenAI-compatible endpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from joulepath.cli.common import JsonFlag, app, bench_app, console, err_console, guarded, print_json, progress
from joulepath.scenario import load_scenario

if TYPE_CHECKING:
    from joulepath.results import RunResult
    from joulepath.serving.server import Server

API_KEY_ENV = "JOULEPATH_API_KEY"  # comma-separated keys, as an alternative to --api-key


@app.command("serve")
def serve_cmd(
    scenario_path: Annotated[
        Path | None, typer.Argument(metavar="[SCENARIO.toml]", help="Model, levers and guardrails (default: built-in).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Override the scenario's serve.model (zoo name or folder).")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="The id clients name (default: the model).")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[
        list[str] | None, typer.Option(help=f"Accepted API key (repeatable; or ${API_KEY_ENV}, comma-separated).")
    ] = None,
    levers: Annotated[
        bool, typer.Option(help="Serve the scenario's optimized configuration (gated weight levers, prefix cache).")
    ] = True,
    guard: Annotated[bool, typer.Option(help="Apply the scenario's guardrails to inputs and outputs.")] = True,
    max_pending: Annotated[int, typer.Option(min=1, help="Requests queued or running before 429.")] = 256,
    rate_limit: Annotated[float, typer.Option(min=0, help="Requests per minute per API key; 0 = no limit.")] = 0.0,
    max_body_kib: Annotated[int, typer.Option(min=1, help="Largest request body, KiB.")] = 1024,
) -> None:
    """Serve a model over the OpenAI HTTP API (/v1/completions, /v1/chat/completions, /v1/models), with
    /health and Prometheus /metrics (latencies, tokens, KV use, joules per token with their provenance)."""
    import uvicorn

    keys = tuple(api_key or ()) + tuple(k for k in os.environ.get(API_KEY_ENV, "").split(",") if k)
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        err_console.print(f"[yellow]warning:[/] binding {host} without an API key: anyone who can reach it can use it")
    server = guarded(lambda: build_server(scenario_path, model, served_model_name, keys, levers, guard,
                                          max_pending, rate_limit, max_body_kib))  # fmt: skip
    console.print(
        f"serving {server.config.model_name} on http://{host}:{port}/v1 "
        f"({'API key required' if keys else 'no API key'}; guardrails {'on' if server.frontend.guard else 'off'})",
        highlight=False,
    )
    uvicorn.run(server.app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def build_server(
    scenario_path: Path | None, model: str | None, served_name: str | None, keys: tuple[str, ...], levers: bool,
    guard: bool, max_pending: int, rate_limit: float, max_body_kib: int,
) -> Server:  # fmt: skip
    """The server for a scenario: its model (gated levers applied when `levers`), engine and guardrails."""
    import dataclasses

    from joulepath.engine import Engine
    from joulepath.execute import engine_config, guard_for, optimized_config, optimized_weights
    from joulepath.model import load_model
    from joulepath.serving.frontend import Frontend
    from joulepath.serving.server import Server, ServerConfig

    scenario = load_scenario(scenario_path)
    serve = scenario.serve if model is None else scenario.serve.model_copy(update={"model": model})
    loaded = load_model(serve.model)
    if levers:
        weights = optimized_weights(loaded, serve, lambda line: err_console.print(line, highlight=False))
        loaded, config = weights.loaded, optimized_config(serve, weights)
        chosen = ", ".join(x for x in (weights.lever, "int8 KV" if weights.kv_int8 else None) if x)
        err_console.print(f"levers: {chosen or 'none passed its quality gate'}; prefix cache "
                          f"{'on' if config.prefix_cache else 'off'}", highlight=False)  # fmt: skip
    else:
        config = engine_config(serve, optimized=False)
    config = dataclasses.replace(config, max_batch=serve.max_batch)
    guardrails = guard_for(scenario.guard) if guard else None
    if guardrails is not None and guardrails.policy.semantic:  # fit now, not on the first request
        err_console.print("guardrails: fitting the semantic classifier (once per process, ~30 s)", highlight=False)
        _ = guardrails.classifier
    frontend = Frontend(Engine(loaded, config), guardrails)
    server_config = ServerConfig(served_name or serve.model, keys, max_body_kib * 1024, max_pending, rate_limit)
    return Server(frontend, server_config)


@bench_app.command("serve")
def bench_serve_cmd(
    endpoint: Annotated[str, typer.Option(help="Base URL of any OpenAI-compatible server, e.g. http://127.0.0.1:8000")],
    scenario_path: Annotated[
        Path | None, typer.Argument(metavar="[SCENARIO.toml]", help="Workload, fleet and facility (default: built-in).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model id (default: the first /v1/models lists).")] = None,
    api_key: Annotated[str | None, typer.Option(help=f"API key (or ${API_KEY_ENV}).")] = None,
    requests: Annotated[int, typer.Option(min=1, help="First N requests of the trace.")] = 200,
    time_scale: Annotated[float, typer.Option(min=0, help="Multiplies arrival times (0: all at once).")] = 1.0,
    connections: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 64,
    prompts: Annotated[
        str,
        typer.Option(help="golden: golden tasks (accuracy checked); lengths: the trace's token counts."),
    ] = "golden",
    device_energy_j: Annotated[
        float | None, typer.Option(help="The endpoint's device energy over the run, J, measured elsewhere.")
    ] = None,
    energy_from_metrics: Annotated[
        bool, typer.Option(help="Read the run's joules from the endpoint's joulepath:energy_joules_total counter.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Base folder for run folders (default: scenario output.dir).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Measure an OpenAI-compatible endpoint with a trace (streaming; TTFT, TPOT, latency, tokens, errors),
    then project it like `joulepath run`: fleet, facility twin, ledger, result.json and report.html."""
    from joulepath.bench.endpoint import measure_endpoint
    from joulepath.run import build_trace, run_endpoint

    if prompts not in ("golden", "lengths"):
        guarded(lambda: _raise(ValueError(f"--prompts must be 'golden' or 'lengths', got {prompts!r}")))
    key = api_key or (os.environ.get(API_KEY_ENV, "").split(",")[0] or None)
    scenario = guarded(lambda: load_scenario(scenario_path))
    trace = guarded(lambda: build_trace(scenario.workload))
    with progress(quiet=json_out) as bar:
        task = bar.add_task(f"sending {min(requests, len(trace))} requests to {endpoint}", total=None)
        measured = guarded(lambda: measure_endpoint(
            endpoint, model, key, scenario, trace, requests, time_scale, connections, prompts, device_energy_j,
            energy_from_metrics,
        ))  # fmt: skip
        bar.update(task, description="projection onto the fleet and facility twin")
        result = guarded(lambda: run_endpoint(scenario, trace, measured))
    run_dir, paths = guarded(lambda: _write_run(result, out or scenario.output.dir, f"{scenario.name}-endpoint"))
    if json_out:
        from joulepath.report import result_to_dict

        print_json({**paths, "endpoint": result_to_dict(result)["endpoint"], **result_to_dict(result)["summary"]})
        return
    _print_endpoint(result, run_dir)


def _raise(exc: Exception) -> None:
    raise exc


def _write_run(result: RunResult, base: Path, name: str) -> tuple[Path, dict[str, str]]:
    """result.json, telemetry and report.html into a new run folder (complete or absent, as `run` does)."""
    from datetime import datetime

    from joulepath.report import write_result
    from joulepath.report.html import write_report
    from joulepath.report.telemetry import write_telemetry
    from joulepath.run import discard_run_dir, publish_run_dir, staging_run_dir

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    staging = staging_run_dir(base, name, stamp)
    try:
        written = [write_result(result, staging), write_telemetry(result, staging), write_report(result, staging)]
        run_dir = publish_run_dir(staging, base, name, stamp)
    finally:
        discard_run_dir(staging)
    keys = ("result_json", "telemetry", "report_html")
    return run_dir, {k: str(run_dir / p.relative_to(staging)) for k, p in zip(keys, written, strict=True)}


def _print_endpoint(result: RunResult, run_dir: Path) -> None:
    from joulepath.cli.tables import num

    ep = result.endpoint
    assert ep is not None
    r, s = ep.run, result.summary
    console.print(
        f"{ep.url} ({ep.model}): {len(r.requests)} of {ep.sent} requests answered, {len(ep.errors)} errors; "
        f"TTFT p50 {num(r.percentile('ttft_s', 50) * 1e3, 'ms')}, p99 {num(r.percentile('ttft_s', 99) * 1e3, 'ms')}; "
        f"TPOT p50 {num(r.percentile('tpot_s', 50) * 1e3, 'ms')}; {num(r.tokens_per_s, 'tokens/s')} (measured)\n"
        f"energy {num(r.j_per_token, 'J/token')} ({ep.energy_source}: {r.energy_provenance}); "
        f"golden accuracy {num(100 * r.accuracy, '%')}\n"
        f"projected at the wall: {num(s.wall_j_per_token, 'J/token')} ({s.provenance})",
        highlight=False,
    )
    for line in ep.errors[:5]:
        console.print(f"  error: {line}", highlight=False, markup=False)
    console.print(f"run folder: {run_dir}", highlight=False)
