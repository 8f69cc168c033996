"""Server benchmark: `joulepath serve` under load, its added latency, and a property-based API run.

1. **Added latency** (first, on a quiet machine): the same golden chat requests, one at a time, through
   HTTP (streamed, the client's time to first text) and through the Python API in this process (a
   streamed `Frontend` request: submit to first text), interleaved A B A B; p50 of each and the
   difference. Both sides run the same model, engine and guard; the HTTP side pays JSON, SSE, the event
   loop and the hop to the engine thread.
2. **Load**: `clients` streaming clients back to back for `seconds` (after a warm-up of the same load):
   success rate, unintended errors (anything but a deliberate 429), TTFT / TPOT / end-to-end
   percentiles, the server's RSS after the warm-up and at the end.
3. **schemathesis** against the server's own OpenAPI document: generated requests and server errors.

`python benchmarks/server_load.py [--quick]` writes `benchmarks/results/server.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

from joulepath.bench.common import machine, write_result
from joulepath.bench.endpoint import ClosedLoop, Endpoint, LoadRequest, Outcome, golden_examples, percentile_ms, send

MODEL = "jp-small"
KEY = "bench-key"
MAX_TOKENS = 40  # the main job's serve.max_tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(
    *args: str, model: str = MODEL, start_timeout_s: float = 120, threads: int | None = None
) -> Iterator[tuple[str, int]]:
    """`joulepath serve --model MODEL --no-levers ARGS` in a subprocess on a free loopback port: yields (base
    URL, pid) once /health answers 200, and stops it after. `threads`: its torch threads (OMP_NUM_THREADS)."""
    port = free_port()
    cmd = [sys.executable, "-c", "from joulepath.cli import app; app()", "serve", "--model", model, "--no-levers",
           "--port", str(port), *args]  # fmt: skip
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, start_timeout_s)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_healthy(proc: subprocess.Popen[str], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer /health in {timeout_s:g} s")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---- 1. added latency ---------------------------------------------------------------------------------


def http_overhead(url: str, n: int) -> dict[str, Any]:
    """p50 time to first text through HTTP and through the Python API, same requests, interleaved."""
    from joulepath.engine import Engine, EngineConfig, SamplingParams
    from joulepath.execute import guard_for
    from joulepath.model import load_model
    from joulepath.scenario import GuardSection
    from joulepath.serving.frontend import Frontend, Request

    loaded = load_model(MODEL)
    frontend = Frontend(Engine(loaded, EngineConfig(max_batch=16)), guard_for(GuardSection()))
    endpoint = Endpoint(url, MODEL, KEY)
    examples = golden_examples(n + 2, seed=1)
    http_s, api_s = [], []
    for k, example in enumerate(examples):
        request = LoadRequest(0.0, example.user_text, MAX_TOKENS)
        outcome = asyncio.run(_one(endpoint, request))
        prompt = loaded.apply_chat_template([{"role": "user", "content": example.user_text}])
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0)
        api = _api_first_text_s(frontend, Request(prompt, params, user_text=example.user_text, stream=True))
        if k >= 2 and outcome.ok:  # the first two warm both paths up
            http_s.append(outcome.ttft_s)
            api_s.append(api)
    http_p50, api_p50 = statistics.median(http_s), statistics.median(api_s)
    paired = sorted(1e3 * (h - a) for h, a in zip(http_s, api_s, strict=True))
    return {"overhead_requests": len(http_s), "http_p50_ttft_ms": 1e3 * http_p50, "api_p50_ttft_ms": 1e3 * api_p50,
            "http_overhead_p50_ttft_ms": 1e3 * (http_p50 - api_p50),
            "paired_overhead_median_ms": statistics.median(paired), "paired_overhead_ms": paired}  # fmt: skip


async def _one(endpoint: Endpoint, request: LoadRequest) -> Outcome:
    async with httpx2.AsyncClient(timeout=120) as client:
        return await send(client, endpoint, request, time.perf_counter())


def _api_first_text_s(frontend: Any, request: Any) -> float:
    """Submit to the first non-empty text chunk through the Python API, then run the request out."""
    t0 = time.perf_counter()
    rid = frontend.submit(request)
    first = None
    while frontend.has_work():
        for chunk in frontend.step_stream():
            if chunk.request_id == rid and chunk.text and first is None:
                first = time.perf_counter() - t0
    return first if first is not None else time.perf_counter() - t0


# ---- 2. load ------------------------------------------------------------------------------------------


def load(url: str, pid: int, clients: int, seconds: float, warm_s: float) -> dict[str, Any]:
    """`clients` streaming clients for `warm_s` (warm-up, RSS read after it), then for `seconds` (measured)."""
    examples = golden_examples(500, seed=2)
    endpoint = Endpoint(url, MODEL, KEY, timeout_s=120)

    def make(i: int) -> LoadRequest:
        return LoadRequest(0.0, examples[i % len(examples)].user_text, MAX_TOKENS)

    asyncio.run(ClosedLoop(clients, warm_s, make).run(endpoint))
    rss_start = rss_mb(pid)
    samples: list[float] = []
    outcomes = asyncio.run(ClosedLoop(clients, seconds, make).run(endpoint, lambda _: samples.append(rss_mb(pid))))
    rss_end = rss_mb(pid)
    ok = [o for o in outcomes if o.ok]
    refused = [o for o in outcomes if o.status == 429]
    unintended = [o for o in outcomes if not o.ok and o.status != 429]
    return {
        "load_clients": clients, "load_seconds": seconds, "requests": len(outcomes), "succeeded": len(ok),
        "success_rate": len(ok) / max(len(outcomes), 1), "deliberate_429": len(refused),
        "unintended_errors": len(unintended), "error_examples": sorted({o.error for o in unintended})[:5],
        "ttft_p50_ms": percentile_ms([o.ttft_s for o in ok], 50),
        "ttft_p99_ms": percentile_ms([o.ttft_s for o in ok], 99),
        "tpot_p50_ms": percentile_ms([o.tpot_s for o in ok if o.completion_tokens > 1], 50),
        "tpot_p99_ms": percentile_ms([o.tpot_s for o in ok if o.completion_tokens > 1], 99),
        "e2e_p50_ms": percentile_ms([o.e2e_s for o in ok], 50), "e2e_p99_ms": percentile_ms([o.e2e_s for o in ok], 99),
        "output_tokens_per_s": sum(o.completion_tokens for o in ok) / seconds,
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_max_mb": max(samples, default=rss_end),
        "rss_growth_mb": rss_end - rss_start, "rss_growth_pct": 100 * (rss_end - rss_start) / rss_start,
    }  # fmt: skip


# ---- 3. schemathesis ------------------------------------------------------------------------------------


def schemathesis_run(url: str, max_examples: int) -> dict[str, Any]:
    """schemathesis against /openapi.json with the not-a-server-error check; counts parsed from its summary."""
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        return {"schemathesis_requests": 0, "server_5xx": None, "note": "schemathesis not installed"}
    cmd = [str(exe), "run", f"{url}/openapi.json", "-c", "not_a_server_error", "-H", f"Authorization: Bearer {KEY}",
           "-n", str(max_examples), "--seed", "11", "--request-timeout", "120", "--no-color"]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:  # schemathesis keeps its example database in the cwd
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=scratch)
    generated = re.search(r"(\d+) generated", done.stdout)
    server_errors = re.search(r"Server error: (\d+)", done.stdout)
    return {
        "schemathesis_requests": int(generated.group(1)) if generated else 0,
        "server_5xx": int(server_errors.group(1)) if server_errors else 0,
        "schemathesis_exit_code": done.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 clients x 8 s, 4 latency pairs, 30 examples")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, server and in-process alike")
    args = parser.parse_args(argv)
    clients, seconds, warm_s = (20, 8.0, 3.0) if args.quick else (args.clients, args.seconds, 15.0)
    pairs, examples = (4, 30) if args.quick else (30, 400)
    import torch

    torch.set_num_threads(args.threads)
    server_args = ("--api-key", KEY, "--max-pending", str(max(256, 2 * clients)))
    with running_server(*server_args, threads=args.threads) as (url, pid):
        print(f"server {url} (pid {pid}), {MODEL}, guardrails on (rules), levers off, {args.threads} torch "
              "thread(s) in the server and in-process", flush=True)  # fmt: skip
        overhead = http_overhead(url, pairs)
        print(
            f"added latency: p50 TTFT {overhead['http_p50_ttft_ms']:.1f} ms over HTTP vs "
            f"{overhead['api_p50_ttft_ms']:.1f} ms in-process -> {overhead['http_overhead_p50_ttft_ms']:+.1f} ms "
            f"(paired differences: median {overhead['paired_overhead_median_ms']:+.1f} ms, "
            f"{overhead['paired_overhead_ms'][0]:+.1f} .. "
            f"{overhead['paired_overhead_ms'][-1]:+.1f} ms over {overhead['overhead_requests']} requests)",
            flush=True,
        )
        loaded = load(url, pid, clients, seconds, warm_s)
        print(f"load: {clients} streaming clients x {seconds:g} s: {loaded['requests']} requests, success "
              f"{100 * loaded['success_rate']:.2f} %, unintended errors {loaded['unintended_errors']}, 429s "
              f"{loaded['deliberate_429']}; TTFT p50/p99 {loaded['ttft_p50_ms']:.0f}/{loaded['ttft_p99_ms']:.0f} ms, "
              f"TPOT p50 {loaded['tpot_p50_ms']:.1f} ms; RSS {loaded['rss_start_mb']:.0f} -> "
              f"{loaded['rss_end_mb']:.0f} MB ({loaded['rss_growth_pct']:+.1f} %)", flush=True)  # fmt: skip
        fuzz = schemathesis_run(url, examples)
        print(f"schemathesis: {fuzz['schemathesis_requests']} generated requests, {fuzz['server_5xx']} server errors")
    goals = {
        "unintended_errors_0": loaded["unintended_errors"] == 0,
        "rss_growth_le_5pct": loaded["rss_growth_pct"] <= 5.0,
        "schemathesis_ge_1000_no_5xx": fuzz["schemathesis_requests"] >= 1000 and fuzz["server_5xx"] == 0,
        "http_overhead_le_5ms": overhead["http_overhead_p50_ttft_ms"] <= 5.0,
    }
    print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()))
    result = {
        "machine": machine(),
        "quick": args.quick,
        "torch_threads": args.threads,
        **loaded,
        **overhead,
        **fuzz,
        "goals": goals,
        "provenance": "measured: client-side times on loopback; RSS from /proc; counts from schemathesis",
    }
    print(f"wrote {write_result('server', result)}")
    return 0
