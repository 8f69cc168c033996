"""Serving commands: `joulepath serve` (the OpenAI-compatible HTTP server) and `joulepath bench serve`
(a load client that measures any OpenAI-compatible endpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from joulepath.cli.common import app, console, err_console, guarded
from joulepath.scenario import load_scenario

if TYPE_CHECKING:
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
    else:
        config = engine_config(serve, optimized=False)
    config = dataclasses.replace(config, max_batch=serve.max_batch)
    frontend = Frontend(Engine(loaded, config), guard_for(scenario.guard) if guard else None)
    server_config = ServerConfig(served_name or serve.model, keys, max_body_kib * 1024, max_pending, rate_limit)
    return Server(frontend, server_config)
