"""A load client for any OpenAI-compatible endpoint (joulepath serve, vLLM, SGLang, ...): `joulepath bench
serve`, and the server load benchmark (`benchmarks/server_load.py`).

Every request is a streamed chat completion (`stream_options.include_usage`), so each one gives its time
to first token (the first chunk with text), its time per output token after that, its end-to-end
latency and its tokens (from `usage`, the server's count), or the error it got. Two drivers:

- `replay`: a trace's requests at their arrival times (open loop), at most `connections` at once;
- `closed_loop`: `clients` clients, each sending its next request when the last one ends, for a time.

Energy is the meter's window on this host over the run (`meter.auto_meter`: NVML when the endpoint's
GPUs are here, RAPL or the CPU estimate otherwise, labelled), an explicit figure the user gives, or the
difference of the endpoint's own `joulepath:energy_joules_total` counter before and after; it is shared
among the requests by the ledger's rule (tokens processed), as the engine shares a step's joules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import numpy as np

from joulepath.meter import attribute, auto_meter
from joulepath.quality import golden
from joulepath.quality.tasks import Example, check
from joulepath.results import EndpointRun, LocalRun, RequestRecord, ServedRequest
from joulepath.scenario import Scenario
from joulepath.workload import Trace

ERROR_BODY_CHARS = 200  # of an error response kept in the result


@dataclass(frozen=True)
class LoadRequest:
    """One request to send: when (seconds from the start; open loop only), what, and how long at most."""

    at_s: float
    user_text: str
    max_tokens: int
    example: Example | None = None  # the golden task it carries (its answer is checked)
    ignore_eos: bool = False  # vLLM's extension: exactly max_tokens (length-shaped load)


@dataclass(frozen=True)
class Outcome:
    """What one request got. Times in seconds, measured at this client; `error` empty on success."""

    request: LoadRequest
    sent_s: float  # from the run's start
    status: int  # HTTP status (0: no response: connection error or timeout)
    error: str = ""
    text: str = ""
    ttft_s: float = float("nan")  # first chunk with text
    e2e_s: float = float("nan")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    server_energy_j: float | None = None  # what a joulepath server charged it (its usage extension)
    queued_s: float = 0.0  # open loop: waiting here for a free connection (inside ttft_s and e2e_s)

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def tpot_s(self) -> float:
        n = self.completion_tokens
        return (self.e2e_s - self.ttft_s) / (n - 1) if n > 1 and self.ok else 0.0


@dataclass(frozen=True)
class Endpoint:
    """Where to send, and as whom."""

    url: str  # base URL, e.g. http://127.0.0.1:8000 (with or without /v1)
    model: str
    api_key: str | None = None
    timeout_s: float = 300.0

    @property
    def v1(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/v1") else f"{base}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


async def send(
    client: httpx2.AsyncClient, endpoint: Endpoint, request: LoadRequest, t0: float, due: float | None = None
) -> Outcome:
    """One streamed chat completion, timed from `due` (perf_counter s: when the trace says it arrives, so
    waiting for a free connection counts, as a user would feel it) or else from just before it is sent."""
    body: dict[str, Any] = {
        "model": endpoint.model, "messages": [{"role": "user", "content": request.user_text}],
        "max_tokens": request.max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    if request.ignore_eos:
        body["ignore_eos"] = True
    sent = time.perf_counter()
    start = sent if due is None else min(due, sent)
    sent_s = sent - t0
    try:
        async with client.stream("POST", f"{endpoint.v1}/chat/completions", json=body, headers=endpoint.headers) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")[:ERROR_BODY_CHARS]
                return Outcome(request, sent_s, r.status_code, f"HTTP {r.status_code}: {text}")
            outcome = await _read_stream(r, request, sent_s, start)
            return dataclasses.replace(outcome, queued_s=sent - start)
    except (httpx2.HTTPError, OSError) as exc:
        return Outcome(request, sent_s, 0, f"{type(exc).__name__}: {exc}"[:ERROR_BODY_CHARS])


async def _read_stream(r: httpx2.Response, request: LoadRequest, sent_s: float, start: float) -> Outcome:
    """Server-sent events to an Outcome: text, first-text time, usage, finish reason, errors in-stream."""
    pieces: list[str] = []
    ttft = float("nan")
    usage: dict[str, Any] = {}
    finish, energy = "", None
    async for line in r.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            return Outcome(request, sent_s, r.status_code, f"in-stream error: {event['error'].get('message', '')}")
        for choice in event.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") or ""
            if text and not pieces:
                ttft = time.perf_counter() - start
            pieces.append(text)
            finish = choice.get("finish_reason") or finish
        if event.get("usage"):
            usage = event["usage"]
            energy = (event.get("joulepath") or {}).get("energy_j")
    e2e = time.perf_counter() - start
    if not usage:
        return Outcome(request, sent_s, r.status_code, "stream ended without a usage chunk")
    return Outcome(
        request, sent_s, 200, "", "".join(pieces), ttft if ttft == ttft else e2e, e2e,
        int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), finish, energy,
    )  # fmt: skip


def _client(connections: int, timeout_s: float) -> httpx2.AsyncClient:
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(timeout=httpx2.Timeout(timeout_s, connect=30.0), limits=limits)


async def replay(endpoint: Endpoint, requests: Sequence[LoadRequest], connections: int) -> list[Outcome]:
    """Open loop: each request is sent at its `at_s` (or as soon as one of `connections` is free)."""
    gate = asyncio.Semaphore(connections)
    async with _client(connections, endpoint.timeout_s) as client:
        t0 = time.perf_counter()

        async def one(request: LoadRequest) -> Outcome:
            await asyncio.sleep(max(0.0, request.at_s - (time.perf_counter() - t0)))
            async with gate:
                return await send(client, endpoint, request, t0, due=t0 + request.at_s)

        return list(await asyncio.gather(*(one(r) for r in requests)))


@dataclass
class ClosedLoop:
    """`clients` clients sending back to back for `seconds`; `make(i)` gives the i-th request."""

    clients: int
    seconds: float
    make: Callable[[int], LoadRequest]
    outcomes: list[Outcome] = field(default_factory=list)
    _next: int = 0

    async def run(self, endpoint: Endpoint, on_tick: Callable[[float], None] | None = None) -> list[Outcome]:
        async with _client(self.clients, endpoint.timeout_s) as client:
            t0 = time.perf_counter()
            end = t0 + self.seconds

            async def client_loop() -> None:
                while time.perf_counter() < end:
                    request = self.make(self._take())
                    self.outcomes.append(await send(client, endpoint, request, t0))

            ticker = asyncio.ensure_future(_tick(on_tick, t0, end)) if on_tick else None
            await asyncio.gather(*(client_loop() for _ in range(self.clients)))
            if ticker is not None:
                ticker.cancel()
        return self.outcomes

    def _take(self) -> int:
        self._next += 1
        return self._next - 1


async def _tick(on_tick: Callable[[float], None], t0: float, end: float, every_s: float = 1.0) -> None:
    while time.perf_counter() < end:
        await asyncio.sleep(every_s)
        on_tick(time.perf_counter() - t0)


def records(outcomes: Sequence[Outcome], energy_j: float, provenance: str) -> list[RequestRecord]:
    """The successful outcomes as the ledger's request records: `energy_j` (the run's, measured or
    estimated here) shared by tokens processed (prompt + output), as the engine shares a step's joules."""
    done = [(k, o) for k, o in enumerate(outcomes) if o.ok]
    shares = attribute(energy_j, {str(k): float(o.prompt_tokens + o.completion_tokens) for k, o in done})
    return [_record(k, o, shares[str(k)], provenance) for k, o in done]


def _record(k: int, o: Outcome, energy_j: float, provenance: str) -> RequestRecord:
    return RequestRecord(
        f"http-{k}", o.prompt_tokens, o.completion_tokens, o.ttft_s, o.tpot_s, o.e2e_s, energy_j, provenance,
        o.finish_reason or "stop", 0,
    )  # fmt: skip


def percentile_ms(values: Sequence[float], q: float) -> float:
    """The q-th percentile of seconds, in ms (NaN values, failed requests, left out)."""
    finite = [v for v in values if v == v]
    return float(np.percentile(finite, q) * 1e3) if finite else float("nan")


async def scrape_energy_j(url: str) -> float | None:
    """The endpoint's `joulepath:energy_joules_total` (summed over labels), or None where it has none."""
    base = url.rstrip("/").removesuffix("/v1")
    try:
        async with httpx2.AsyncClient(timeout=10) as client:
            text = (await client.get(f"{base}/metrics")).text
    except httpx2.HTTPError:
        return None
    counter = "joulepath:energy_joules_total"
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(counter)]
    return sum(values) if values else None


# ---- `joulepath bench serve`: a trace against an endpoint, as a run ---------------------------------


def load_requests(
    trace: Trace, n: int, time_scale: float, prompts: str, max_tokens: int, seed: int
) -> list[LoadRequest]:
    """The trace's first `n` requests at their arrival times (x `time_scale`), as golden tasks (the answer
    is checked; `max_tokens` each) or as the trace's own lengths (a prompt of its token count in words,
    exactly its output tokens with ignore_eos; no accuracy)."""
    n = min(n, len(trace))
    at_s = (trace.arrival_s[:n] - trace.arrival_s[0]) * time_scale
    if prompts == "lengths":
        words = " ".join(["hello"] * 8192)  # "hello " is about one token in most tokenizers
        prompt_chars = [6 * max(1, int(t)) for t in trace.prompt_tokens[:n]]
        outputs = [max(1, int(t)) for t in trace.output_tokens[:n]]
        return [
            LoadRequest(float(at_s[k]), words[: prompt_chars[k]].strip(), outputs[k], ignore_eos=True) for k in range(n)
        ]
    examples = golden_examples(n, seed)
    return [LoadRequest(float(at_s[k]), e.user_text, max_tokens, e) for k, e in enumerate(examples)]


def golden_examples(n: int, seed: int) -> list[Example]:
    """`n` golden dev-split tasks, drawn as the main job draws them."""
    pool = golden.load("dev")
    rng = random.Random(seed)
    return rng.sample(pool, n) if n <= len(pool) else rng.choices(pool, k=n)


def first_model(endpoint: str, api_key: str | None) -> str:
    """The first model id the endpoint lists (GET /v1/models)."""
    probe = Endpoint(endpoint, "", api_key)
    try:
        listed = httpx2.get(f"{probe.v1}/models", headers=probe.headers, timeout=30)
    except httpx2.HTTPError as exc:
        raise ValueError(f"cannot reach {endpoint}: {exc}; is the server running?") from None
    if listed.status_code != 200 or not listed.json().get("data"):
        raise ValueError(f"{endpoint}/v1/models answered {listed.status_code}: {listed.text[:200]}; pass --model")
    return str(listed.json()["data"][0]["id"])


def measure_endpoint(
    url: str, model: str | None, api_key: str | None, scenario: Scenario, trace: Trace, n: int, time_scale: float,
    connections: int, prompts: str, device_energy_j: float | None, energy_from_metrics: bool,
) -> EndpointRun:  # fmt: skip
    """Replay the trace against the endpoint with a meter window around it; the answers as a LocalRun."""
    endpoint = Endpoint(url, model or first_model(url, api_key), api_key)
    requests = load_requests(trace, n, time_scale, prompts, scenario.serve.max_tokens, scenario.workload.seed)
    meter = auto_meter()
    before = asyncio.run(scrape_energy_j(url)) if energy_from_metrics else None
    meter.begin("endpoint")
    t0 = time.perf_counter()
    outcomes = asyncio.run(replay(endpoint, requests, connections))
    wall_s = time.perf_counter() - t0
    window = meter.end("endpoint")
    energy_j, provenance, source = window.total_energy_j, window.provenance_summary, "meter on this host"
    if device_energy_j is not None:
        energy_j, provenance, source = device_energy_j, "given: --device-energy-j", "given by the user"
    elif energy_from_metrics:
        after = asyncio.run(scrape_energy_j(url))
        if before is None or after is None:
            raise ValueError(f"{url}/metrics has no joulepath:energy_joules_total; drop --energy-from-metrics")
        energy_j, provenance, source = after - before, "endpoint metrics: joulepath:energy_joules_total", "endpoint"
    run = local_run(outcomes, energy_j, provenance, wall_s, connections, prompts)
    errors = tuple(o.error for o in outcomes if not o.ok)
    return EndpointRun(url, endpoint.model, run, len(outcomes), errors, connections, time_scale, source)


def local_run(
    outcomes: Sequence[Outcome], energy_j: float, provenance: str, wall_s: float, connections: int, prompts: str
) -> LocalRun:
    """The answered requests as a LocalRun: records with the run's joules shared by tokens, golden verdicts."""
    answered = [o for o in outcomes if o.ok]
    served = []
    for o, record in zip(answered, records(outcomes, energy_j, provenance), strict=True):
        e = o.request.example
        verdict = (e.skill, e.level, check(e, o.text)) if e is not None else ("length-shaped", "-", False)
        served.append(ServedRequest(record, o.request.at_s, *verdict))
    accuracy = sum(s.correct for s in served) / len(served) if served and prompts == "golden" else float("nan")
    name = f"endpoint ({connections} connections)"
    return LocalRun(name, connections, tuple(served), wall_s, energy_j, provenance, accuracy)
